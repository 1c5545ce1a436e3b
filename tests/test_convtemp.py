"""A model conversion killed midway (kill -9, the OOM killer) leaves its temp folder: the next conversion, `tmix cache
prune` and `clear` remove it, `tmix cache ls` names it; a conversion still running is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runcli import run
from test_model_files import _gguf_with_tensor

from tmixcli import convtemp

_STUCK = """
import os, sys, time
from pathlib import Path
import transformers
from tmixcli import convert

def stuck(*args, **kw):  # the GGUF read: it writes part of the weights, then never ends (kill -9 comes)
    tmp = next(Path(sys.argv[2]).glob(f".convert-{os.getpid()}-*"))
    (tmp / "model.safetensors").write_bytes(b"x" * (1 << 20))
    print(tmp, flush=True)
    time.sleep(600)

transformers.AutoTokenizer.from_pretrained = lambda *args, **kw: object()
transformers.AutoModelForCausalLM.from_pretrained = stuck
convert.convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]) / "m", progress=False)
"""


def _converting(gguf: Path, models: Path) -> tuple[subprocess.Popen, Path]:
    """A conversion running in another process, once it has written 1 MiB into its temp folder; that folder."""
    proc = subprocess.Popen([sys.executable, "-c", _STUCK, str(gguf), str(models)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, "the conversion did not start"
    return proc, Path(line)


def _killed(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()


def _convert_here(monkeypatch, gguf: Path, models: Path) -> Path:
    """A whole conversion in this process (the GGUF read and the weights written are stood in for)."""
    import transformers

    from tmixcli import convert

    class Tokenizer:
        def save_pretrained(self, out):
            (Path(out) / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: object())
    monkeypatch.setattr(convert, "_save_plain", lambda model, out: (out / "config.json").write_text("{}"))
    return convert.convert_gguf(gguf, models / "m", progress=False)


@pytest.fixture
def setting(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A GGUF file and an empty models folder that TMIX_MODELS_DIR names."""
    gguf, models = tmp_path / "m.gguf", tmp_path / "models"
    gguf.write_bytes(_gguf_with_tensor())
    models.mkdir()
    monkeypatch.setenv("TMIX_MODELS_DIR", str(models))
    return gguf, models


def test_a_killed_conversion_is_named_then_removed_by_the_next_one(capsys, monkeypatch, setting):
    gguf, models = setting
    proc, tmp = _converting(gguf, models)
    try:
        assert convtemp.state(models) == ([], [(tmp, convtemp._disk_bytes(tmp))])  # live: held by its lock
        code, out, _ = run(capsys, "cache", "prune")
        assert code == 0 and "model conversion" not in out and tmp.is_dir()
        assert "model conversion" not in run(capsys, "cache", "ls")[1]
    finally:
        _killed(proc)
    assert (tmp / "model.safetensors").stat().st_size == 1 << 20  # what kill -9 left
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0 and out.splitlines()[-1] == (f"1 leftover folder of an interrupted model conversion, 1.0 MiB, in "
                                                   f"{models}: `tmix cache prune` removes it"), out
    listing = json.loads(run(capsys, "cache", "ls", "--json")[1])
    assert listing["leftover_conversions"] == {"count": 1, "bytes": convtemp._disk_bytes(tmp)}
    target = _convert_here(monkeypatch, gguf, models)
    assert sorted(p.name for p in models.iterdir()) == ["m"] and (target / "config.json").is_file()


def test_prune_and_clear_remove_leftovers_never_a_live_conversion(capsys, setting):
    gguf, models = setting
    proc, live = _converting(gguf, models)
    try:
        killed, left = _converting(gguf, models)  # its start left the live one alone
        _killed(killed)
        assert left.is_dir() and live.is_dir()
        code, out, _ = run(capsys, "cache", "prune")
        assert code == 0 and f"removed 1 leftover folder of an interrupted model conversion, 1.0 MiB, in {models}" \
            in out, out
        assert not left.exists() and live.is_dir()
        older = models / ".convert-k2j4h7q1"  # an older tmix's folder: no pid, no lock, judged by its age
        older.mkdir()
        code, out, _ = run(capsys, "cache", "clear", "--yes")
        assert code == 0 and "model conversion" not in out and older.is_dir() and live.is_dir()
        hours_ago = time.time() - 2 * convtemp.LEFTOVER_AFTER_S
        os.utime(older, (hours_ago, hours_ago))
        code, out, _ = run(capsys, "cache", "clear", "--yes")
        assert code == 0 and "removed 1 leftover folder of an interrupted model conversion, 0 B" in out, out
        assert not older.exists() and live.is_dir()
    finally:
        _killed(proc)


def test_a_conversion_folder_a_remover_took_first_is_given_up(tmp_path, monkeypatch):
    """The race between making a folder and locking it: one found unlocked and removed meanwhile is not used."""
    made = []
    real = convtemp.tempfile.mkdtemp

    def mkdtemp(**kw):
        path = real(**kw)
        made.append(path)
        if len(made) == 1:
            assert convtemp.remove_leftovers(tmp_path)[0] == [(Path(path), 0)]  # a remover, before the lock
        return path

    monkeypatch.setattr(convtemp.tempfile, "mkdtemp", mkdtemp)
    tmp, fd = convtemp.make(tmp_path)
    try:
        assert len(made) == 2 and tmp == Path(made[1]) and convtemp.state(tmp_path)[1][-1][0] == tmp
    finally:
        os.close(fd)
