"""Run the command line as the CLI tests do: in-process or as a process, on the sample documents, tiny-model flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tmixcli.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "sample_docs"
TINY = ("--n-local", "16", "--last-n", "8", "--start-layer", "1")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `tmix argv` in-process; returns (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def short_doc(tmp_path) -> str:
    """~650 tokens for the tiny tokenizer: fits the tiny model's 1024-token context."""
    path = tmp_path / "short.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:1000])
    return str(path)


def ask_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "ask", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def one_error(capsys, *argv: str, code: int = 2) -> str:
    """Run `tmix argv`, expecting exit code `code` (2: bad input) and one error line; returns that line."""
    got, out, err = run(capsys, *argv)
    assert got == code and out == "" and err.startswith("tmix: error: ") and len(err.strip().splitlines()) == 1, err
    return err.strip()


def tmix_subprocess(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmixcli", *argv], capture_output=True, text=True, input=stdin,
                          env=os.environ.copy(), timeout=600)


def _count_calls(monkeypatch, module, name: str) -> list:
    """Record each call of module.name (still made) in the list returned."""
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)
    monkeypatch.setattr(module, name, counted)
    return calls
