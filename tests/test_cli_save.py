"""A fresh prefill's KV file as the status lines and --json tell it: being saved, saved, or not saved (known before
the prefill where the folder refuses it), and the full-disk hint weighed against what `tmix cache clear` frees."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvfiles import _aged
from runcli import DOCS, TINY, _count_calls, ask_json, one_error, run, tmix_subprocess
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)
from tmixcli import generate, kvfolder, kvwrite
from tmixcli.cli import main
from tmixcli.sizes import human_size

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
    size = human_size(path.stat().st_size)  # as the saved line says it (was "0.1 MiB" here)
    assert re.search(rf"^tmix: \d+ tokens, {re.escape(size)}, prefilled in [\d.]+ s$", err, re.M), err
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
    assert hint == (f"free {human_size(freed + 1)} more in {inside.parent} (`tmix cache clear` would free "
                    f"only {human_size(freed)})"), hint
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


def test_disk_full_hint_for_prefill_output(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """prefill -o on a full disk suggests `tmix cache clear` only when the KV cache holds files on that disk."""
    import errno

    from tmixcli import kvwrite

    real = kvwrite._pwrite

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    args = (short_doc, "-o", str(tmp_path / "x.kv"), "--model", tiny_dir, *TINY)
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    code, out, err = run(capsys, "prefill", *args)
    assert code == 1 and out == "" and err.count("tmix: error:") == 1, err  # after the tokens line said before
    assert err.strip().splitlines()[-1].startswith("tmix: error: disk full while writing KV file "), err
    assert f"disk full while writing KV file {tmp_path / 'x.kv'}; free space in {tmp_path}, or write" in err
    assert "cache clear" not in err
    monkeypatch.setattr(kvwrite, "_pwrite", real)
    assert run(capsys, "prefill", *args[:1], *args[3:])[0] == 0  # a KV file in the cache, on the same disk
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    code, _, err = run(capsys, "prefill", *args)
    assert code == 1 and "or run `tmix cache clear` (the KV cache is on the same disk)" in err, err


def test_concurrent_prefill_leaves_one_valid_file(tmp_path, tiny_dir, short_doc):
    argv = [sys.executable, "-m", "tmixcli", "prefill", short_doc, "--quiet", "--model", tiny_dir, *TINY]
    procs = [subprocess.Popen(argv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    kv_dir = Path(paths.pop()).parent
    assert [p.name for p in kv_dir.iterdir()] == [Path(outs[0][0].strip()).name]
    res = tmix_subprocess("cache", "info", outs[0][0].strip(), "--json")
    assert res.returncode == 0, res.stderr


def test_too_little_disk_space_is_told_before_the_prefill(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """Free space short of the KV file's size (planned exactly): `prefill` fails at once naming both sizes, before
    any prefill and leaving no file; `ask`, whose product is the answer, answers without saving, with one note."""
    import re
    import shutil

    from tmixcli import generate, kvfolder, kvwrite

    prefills = _count_calls(monkeypatch, generate, "prefill")
    real_usage = shutil.disk_usage
    free = [0]
    monkeypatch.setattr(kvwrite.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=free[0]))
    args = ("--model", tiny_dir, *TINY)
    free[0] = 1 << 40
    made = tmp_path / "made.kv"
    assert run(capsys, "prefill", short_doc, "-o", str(made), *args)[0] == 0
    size = made.stat().st_size
    free[0] = size - 1
    target = tmp_path / "out" / "x.kv"
    target.parent.mkdir()
    err = one_error(capsys, "prefill", short_doc, "-o", str(target), *args, code=1)  # the disk, not the input
    want = (rf"tmix: error: not enough disk space for KV file {re.escape(str(target))} \(\d+\.\d KiB needed, "
            rf"\d+\.\d KiB free in {re.escape(str(target.parent))}\); free 1 B more in ")
    assert re.match(want, err), err
    assert len(prefills) == 1 and list(target.parent.iterdir()) == []
    err = one_error(capsys, "prefill", short_doc, *args, code=1)  # into the cache, which holds nothing to clear
    assert "not enough disk space for KV file " in err and "cache clear" not in err, err
    other = kvfolder.kv_path_for("other")
    other.write_bytes(b"0" * 100)
    err = one_error(capsys, "prefill", short_doc, *args, code=1)  # one that holds something
    assert "not enough disk space for KV file " in err and "or run `tmix cache clear`" in err, err
    other.unlink()
    assert len(prefills) == 1
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", "--max-new-tokens", "8", *args)
    assert code == 0 and out.strip() and "error" not in err, err
    assert err.count("tmix: KV file not saved: not enough disk space (") == 1 and "(not enough disk space)" in err
    assert len(prefills) == 2 and not list((tmp_path / "tmix-cache").glob("kv/*"))
    free[0] = size
    assert run(capsys, "prefill", short_doc, "-o", str(target), *args)[0] == 0
    assert target.stat().st_size == size


def test_a_kv_file_that_cannot_be_written_does_not_fail_the_answer(capsys, monkeypatch, tiny_dir, short_doc,
                                                                    tmp_path):
    """A full disk under the cache: the answer stands (exit 0, JSON printed), a status line says the KV file was not
    saved, no temp file stays, and chat goes on to the next question."""
    import errno
    import io

    from tmixcli import kvwrite

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", *args)
    assert code == 0, err
    assert out.endswith("\n") and "KV file not saved: disk full" in err and "tmix: error" not in err
    res = ask_json(capsys, short_doc, "Who is the project manager?", *args)
    assert res["kv_path"] is None and res["kv_notes"][0].startswith("KV file not saved: disk full")
    assert "".join(res["answer"].split()) in "".join(out.split())
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the project manager?\nWhat is the budget?\n"))
    code, out, err = run(capsys, "chat", short_doc, *args)
    assert code == 0 and err.count("TTFT") == 2 and err.count("KV file not saved") == 1, err
    assert not [p for p in (tmp_path / "tmix-cache").rglob("*") if p.is_file() and "kv" in p.parts]


def test_prefill_whose_file_another_process_removes_at_once(capsys, monkeypatch, tiny_dir, short_doc):
    from tmixcli import kvwrite

    real = kvwrite.KVWriter.wait

    def wait_then_removed(self):
        size = real(self)
        self.path.unlink()  # as `tmix cache clear` in another shell would
        return size
    monkeypatch.setattr(kvwrite.KVWriter, "wait", wait_then_removed)
    code, out, err = run(capsys, "prefill", short_doc, "--model", tiny_dir, *TINY)
    assert code == 2 and out == "" and err.count("tmix: error:") == 1, err  # after the tokens line, said before
    assert err.strip().splitlines()[-1].startswith("tmix: error: the KV file was removed"), err


def test_ask_interrupted_still_saves_the_prefill(capsys, monkeypatch, tiny_dir, tmp_path):
    """Ctrl-C while `ask` streams the answer to a fresh prefill: exit 130, and the KV file is written anyway."""
    from tmixcli import generate

    short_doc = tmp_path / "interrupted.txt"  # a text no other test has prefilled
    short_doc.write_text("Interrupted answers keep their prefill (test 2). " + (DOCS / "notes.txt").read_text()[:900])
    short_doc = str(short_doc)

    def interrupted(tokenizer, ids):
        yield "The"
        raise KeyboardInterrupt

    real = generate.stream_text
    monkeypatch.setattr(generate, "stream_text", interrupted)
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", *args)
    assert code == 130 and out.startswith("The") and "saving the KV file" in err
    assert err.rstrip().endswith("tmix: interrupted")
    monkeypatch.setattr(generate, "stream_text", real)  # (undo() would also drop conftest's TMIX_CACHE_DIR)
    assert ask_json(capsys, short_doc, "What is the budget?", *args)["cache_hit"]


def test_disk_full_hint_fits_where_the_file_goes(tmp_path: Path) -> None:
    """`tmix cache clear` is suggested only where the cache holds files to clear (other KV files, leftovers of
    interrupted saves) on the disk where the file goes."""
    full = OSError(errno.ENOSPC, "No space left on device")
    inside = kvfolder.kv_path_for("k")
    assert str(kvwrite.write_error(inside, full)).endswith(f"; free space in {kvfolder.kv_dir()}")
    inside.write_bytes(b"half")  # the file being written is nothing to clear
    assert "cache clear" not in str(kvwrite.write_error(inside, full))
    inside.unlink()
    elsewhere = str(kvwrite.write_error(tmp_path / "x.kv", full))
    assert "cache clear" not in elsewhere and f"free space in {tmp_path}, or write the file to another" in elsewhere
    leftover = kvfolder.kv_dir() / ".gone.safetensors.999999999.0123abcd.tmp"
    leftover.write_bytes(b"0" * 100)
    assert "free space or run `tmix cache clear`" in str(kvwrite.write_error(inside, full))
    leftover.unlink()
    _aged({"old": 400})
    assert "free space or run `tmix cache clear`" in str(kvwrite.write_error(inside, full))
    shared = str(kvwrite.write_error(tmp_path / "x.kv", full))
    assert "run `tmix cache clear` (the KV cache is on the same disk)" in shared
