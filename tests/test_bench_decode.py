"""`python -m tmixcli.bench_decode`: bad input is one line before any load; --json is written whole or not at all."""

from __future__ import annotations

import errno
import json

import pytest

from tmixcli import bench_decode, plotfile


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        bench_decode.main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("argv", "said"), [
    (["--lengths", "1k,,2k"], "--lengths has an empty item in '1k,,2k'"),
    (["--lengths", "2q"], "bad length '2q' in --lengths"),
    (["--json", "missing/out.json"], "--json missing/out.json: folder missing does not exist"),
    (["--tokens", "0"], "need --tokens >= 1 and --repeats >= 1"),
])
def test_bad_input_is_one_line_before_the_model_loads(capsys, monkeypatch, tmp_path, argv, said):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench_decode, "resolve_model", lambda *a, **kw: pytest.fail("the model was loaded"))
    code, out, err = _main(capsys, *argv)
    assert code == 2 and out == "" and err.startswith(f"tmix: error: {said}") and err.count("\n") == 1, err


def test_json_is_written_whole_or_not_at_all(capsys, monkeypatch, tiny_dir, tmp_path):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "decode.json"
    argv = ("--model", tiny_dir, "--device", "cpu", "--lengths", "40", "--tokens", "2", "--repeats", "1",
            "--json", str(target))
    code, out, err = _main(capsys, *argv)
    assert code == 0, err
    written = json.loads(target.read_text())
    assert written == json.loads(out) and [r["length"] for r in written["rows"]] == [40]

    def disk_full(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plotfile.os, "replace", disk_full)
    code, out, err = _main(capsys, *argv)
    assert code == 2 and err.endswith(f"tmix: error: --json: could not write {target}: No space left on device\n")
    assert json.loads(target.read_text()) == written and [p.name for p in target.parent.iterdir()] == [target.name]
