"""A fresh prefill's KV file as the status lines and --json tell it: being saved, saved, or not saved (known before
the prefill where the folder refuses it), and the full-disk hint weighed against what `tmix cache clear` frees."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from test_cli import DOCS, TINY, ask_json, run
from tmixcli import generate, kvfolder, kvwrite
from tmixcli.cli import main

QUESTION = "Who is the project manager?"


@pytest.fixture()
def doc(tmp_path) -> str:
    path = tmp_path / "doc.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:1000])
    return str(path)


def _read_only_cache(monkeypatch) -> None:
    """The KV folder on a read-only disk: it exists, nothing can be made in it (chmod does not stop root)."""
    folder = kvfolder.kv_dir()
    real = os.open

    def refused(path, flags, *args, **kw):
        if flags & os.O_CREAT and Path(path).parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args, **kw)
    monkeypatch.setattr(os, "open", refused)


def test_a_fresh_kv_file_is_said_to_be_saving_until_it_is_saved(capsys, tiny_dir, doc):
    """The miss line of `ask` says the file is being saved (it is completed after the answer), a last line says it
    was; `prefill`, which waits for it, names the file; --json says so in kv_saved."""
    args = ("--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, _, err = run(capsys, "ask", doc, QUESTION, *args)
    lines = [x for x in err.splitlines() if not x.startswith("tmix: prefilling ")]  # said when a prefill is slow
    path = kvfolder.kv_dir() / next(p.name for p in kvfolder.kv_dir().iterdir())
    assert code == 0 and re.fullmatch(rf"tmix: cache miss: prefilled in [\d.]+ s, saving the KV file to "
                                      rf"{re.escape(str(path))}", lines[1]), err
    assert lines[2].startswith("tmix: TTFT") and re.fullmatch(r"tmix: KV file saved \([\d.]+ KiB\)", lines[3]), err
    res = ask_json(capsys, doc, QUESTION, *args)  # a hit: the file is there, nothing was saved by this run
    assert res["cache_hit"] and res["kv_saved"] and res["kv_path"] == str(path) and res["kv_notes"] == []
    res = ask_json(capsys, doc, "What is the budget?", *args, "--system", "Be brief.")
    assert not res["cache_hit"] and res["kv_saved"] and Path(res["kv_path"]).is_file()
    assert len(res["kv_notes"]) == 1 and res["kv_notes"][0].startswith("KV file saved (")
    path.unlink()
    code, out, err = run(capsys, "prefill", doc, *args[:2], *TINY)
    assert code == 0 and out.strip() == str(path) and "prefilled in " in err and f", KV file {path}\n" in err, err
    assert "saving" not in err and "KV file saved" not in err
    res = ask_json(capsys, doc, QUESTION, *args, "--no-cache")
    assert not res["kv_saved"] and res["kv_path"] is None and res["kv_notes"] == []


def test_a_read_only_cache_folder_is_told_before_the_prefill(capsys, monkeypatch, tiny_dir, doc):
    """A cache folder that refuses the KV file: `prefill` fails in one line before prefilling; `ask` says it will
    not be saved before the answer, never names the file as being saved, and --json holds every KV note in
    kv_notes, with kv_saved false."""
    prefills: list = []
    real = generate.prefill
    monkeypatch.setattr(generate, "prefill", lambda *a, **k: prefills.append(1) or real(*a, **k))
    _read_only_cache(monkeypatch)
    args = ("--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, out, err = run(capsys, "prefill", doc, *args[:2], *TINY)
    assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()], err
    assert re.fullmatch(r"tmix: error: could not write KV file \S+\.safetensors: Read-only file system; write the "
                        r"KV file elsewhere with -o", err.strip()) and prefills == [], err
    code, out, err = run(capsys, "ask", doc, QUESTION, *args)
    lines = err.splitlines()
    assert code == 0 and out.strip() and len(prefills) == 1, err
    assert lines[1].startswith("tmix: KV file not saved: could not write KV file ") and "Read-only" in lines[1], err
    assert re.fullmatch(r"tmix: cache miss: prefilled in [\d.]+ s \(cache folder not writable\)", lines[2]), err
    assert lines[3].startswith("tmix: TTFT") and len(lines) == 4, err
    res = ask_json(capsys, doc, QUESTION, *args)
    assert res["kv_saved"] is False and res["kv_path"] is None and res["notes"] == [], res
    assert len(res["kv_notes"]) == 1 and res["kv_notes"][0] == lines[1].removeprefix("tmix: ")
    assert list(kvfolder.kv_dir().iterdir()) == []


def test_prefill_json_lists_the_files_removed_under_the_cache_cap(capsys, monkeypatch, tmp_path, tiny_dir, doc):
    """`prefill --json` keeps the status lines about the KV file (in kv_notes) that --json's quiet would drop."""
    other = tmp_path / "other.txt"
    other.write_text("Another document. " + Path(doc).read_text())
    first = ask_json(capsys, doc, QUESTION, "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    monkeypatch.setenv("TMIX_CACHE_MAX", str(int(Path(first["kv_path"]).stat().st_size * 1.5)))
    code, out, _ = run(capsys, "prefill", str(other), "--json", "--model", tiny_dir, *TINY)
    notes = json.loads(out)["kv_notes"] if code == 0 else out
    assert any(n.startswith("removed 1 least recently used KV file (") for n in notes), notes
    assert not Path(first["kv_path"]).exists()


def test_chat_says_the_kv_file_saved_on_a_line_of_its_own(monkeypatch, tiny_dir, doc):
    """stdout and stderr on one terminal: the line saying the KV file was saved starts after the answer's line."""
    both = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n"))
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    try:
        main(["chat", doc, "--model", tiny_dir, "--max-new-tokens", "4", *TINY])
    except SystemExit as done:
        assert not done.code, both.getvalue()
    said = both.getvalue()
    assert "\ntmix: KV file saved (" in said and "saving the KV file to" in said, said
    assert all(line.startswith("tmix: ") or "tmix: " not in line for line in said.splitlines()), said


def test_disk_full_hint_suggests_cache_clear_only_when_it_frees_enough(monkeypatch, tmp_path):
    """`tmix cache clear` is suggested only when the cache's KV files and leftovers free the missing bytes; else
    the hint says how much is missing, and how little clearing frees."""
    other = kvfolder.kv_dir() / "other.safetensors"
    other.write_bytes(os.urandom(64 << 10))
    freed = other.stat().st_blocks * 512
    inside = kvfolder.kv_path_for("new")
    assert kvfolder.room_hint(inside, freed) == "free space or run `tmix cache clear`"
    assert kvfolder.room_hint(inside) == "free space or run `tmix cache clear`"  # missing bytes unknown
    hint = kvfolder.room_hint(inside, freed + 1)
    assert hint == (f"free {kvfolder.human_size(freed + 1)} more in {inside.parent} (`tmix cache clear` would free "
                    f"only {kvfolder.human_size(freed)})"), hint
    hint = kvfolder.room_hint(tmp_path / "x.kv", 10 << 20)
    assert hint.startswith("free 10.0 MiB more in ") and hint.endswith(", or write the file to another disk with -o")
    assert "the KV cache is on the same disk" in kvfolder.room_hint(tmp_path / "x.kv", 1)
    other.unlink()
    assert kvfolder.room_hint(inside, 1) == f"free 1 B more in {inside.parent}"
    real = shutil.disk_usage  # a write that found the disk full: what is missing is weighed as it stands now
    monkeypatch.setattr(kvwrite.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    full = OSError(errno.ENOSPC, "No space left on device")
    assert str(kvwrite.write_error(inside, full, 1500)).endswith(f"; free 500 B more in {inside.parent}")
    other.write_bytes(os.urandom(64 << 10))
    assert str(kvwrite.write_error(inside, full, 1500)).endswith("; free space or run `tmix cache clear`")
