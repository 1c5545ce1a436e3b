"""Run the command line in-process, as the CLI tests do."""

from __future__ import annotations

from tmixcli.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `tmix argv` in-process; returns (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err
