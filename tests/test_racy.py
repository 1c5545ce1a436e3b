"""Documents edited in the same second as a run read them, on file systems that keep whole seconds (FAT, ext3, HFS+):
a stat taken that soon after a change cannot stand for the bytes, so what it recorded is checked by them (git's
"racy clean" rule), while an old file's stat still skips reading."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

from runcli import TINY, run

from tmixcli import docindex

SECOND = 10**9
V1 = "The code for the harbour vault is 4711. " * 20
V2 = "The code for the harbour vault is 9999. " * 20  # the same size: only the bytes tell it from V1
_SEQUENCE = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size")  # os.stat_result's named items


def _coarse(monkeypatch, path: Path, stamp: int) -> None:
    """`path` reads mtime = ctime = `stamp` (a whole second) whatever is written to it in place, as on a file system
    that keeps whole seconds while every write falls within that second."""
    real = os.stat

    def stat(p, *args, **kwargs):
        st = real(p, *args, **kwargs)
        if os.fspath(p) != str(path):
            return st
        seq = list(st)
        seq[8] = seq[9] = stamp // SECOND
        extra = {n: getattr(st, n) for n in dir(st) if n.startswith("st_") and n not in _SEQUENCE}
        extra.update(st_mtime=stamp / SECOND, st_ctime=stamp / SECOND, st_mtime_ns=stamp, st_ctime_ns=stamp)
        return os.stat_result(seq, extra)

    monkeypatch.setattr(os, "stat", stat)


def _clock(monkeypatch, ns: int) -> None:
    """docindex's clock reads `ns`: the moment its stats are taken."""
    monkeypatch.setattr(docindex, "time", SimpleNamespace(time_ns=lambda: ns), raising=False)


def _refuse(monkeypatch, *names: str) -> None:
    """Make reading the document ("load_documents") or hashing its bytes ("_content_digest") fail the test."""
    def refuse(*_a, **_k):
        raise AssertionError("read or hashed")

    for name in names:
        target = "tmixcli.documents.load_documents" if name == "load_documents" else f"tmixcli.docindex.{name}"
        monkeypatch.setattr(target, refuse)


def _ask(capsys, *args: str) -> tuple[str, str]:
    """The KV file an ask loaded or wrote (its key), and its status lines."""
    code, _, err = run(capsys, "ask", *args)
    keys = re.findall(r"([0-9a-f]{24})\.safetensors", err)
    assert code == 0 and len(keys) == 1, err
    return keys[0], err


def test_a_same_second_same_size_edit_is_seen_by_ask(capsys, monkeypatch, tiny_dir, tmp_path):
    """v1 read, then v2 written in place in the same second: path, size, mtime, ctime and inode all stayed, and the
    next ask said "documents unchanged since: not read again" and answered from v1 for good."""
    doc = tmp_path / "memo.txt"
    doc.write_text(V1)
    stamp = time.time_ns() // SECOND * SECOND
    _coarse(monkeypatch, doc, stamp)
    _clock(monkeypatch, stamp + SECOND // 2)
    args = (str(doc), "What is the code for the harbour vault?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first, _ = _ask(capsys, *args)
    before = os.stat(doc)
    doc.write_text(V2)
    assert os.stat(doc) == before  # the stat cannot tell this edit
    second, err = _ask(capsys, *args)
    assert "not read again" not in err and second != first, err
    again, err = _ask(capsys, *args)  # no edit since: its bytes tell it, the document is not read
    assert "not read again" in err and again == second, err
    _clock(monkeypatch, stamp + 10 * SECOND)  # the stat is old now: checked by the bytes once more, then trusted
    with monkeypatch.context() as m:
        _refuse(m, "load_documents")
        _, err = _ask(capsys, *args)
    assert "not read again" in err, err
    _refuse(monkeypatch, "load_documents", "_content_digest")
    later, err = _ask(capsys, *args)
    assert "not read again" in err and later == second, err


def test_an_old_files_stat_alone_skips_reading(capsys, monkeypatch, tiny_dir, tmp_path):
    """The common case stays fast: a document last changed well before its stat is neither read nor hashed."""
    doc = tmp_path / "memo.txt"
    doc.write_text(V1)
    stamp = time.time_ns() // SECOND * SECOND
    _coarse(monkeypatch, doc, stamp)
    _clock(monkeypatch, stamp + 60 * SECOND)
    args = (str(doc), "What is the code for the harbour vault?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first, _ = _ask(capsys, *args)
    _refuse(monkeypatch, "load_documents", "_content_digest")
    warm, err = _ask(capsys, *args)
    assert "not read again" in err and warm == first, err


def test_chat_sees_a_same_second_same_size_edit(monkeypatch, tmp_path):
    """`chat` watched v1 and saw no change when v2 was written within the same second: it answered from v1."""
    doc = tmp_path / "memo.txt"
    doc.write_text(V1)
    stamp = time.time_ns() // SECOND * SECOND
    _coarse(monkeypatch, doc, stamp)
    _clock(monkeypatch, stamp + SECOND // 2)
    watch = docindex.SourceWatch([str(doc)])
    assert watch.poll() == []
    doc.write_text(V2)
    assert watch.poll() == [("memo.txt", None)]
    watch.accept()
    assert watch.poll() == []
    _clock(monkeypatch, stamp + 10 * SECOND)  # old now: its bytes confirm it once, then its stat alone
    assert watch.poll() == []
    _refuse(monkeypatch, "_content_digest")
    assert watch.poll() == [] and docindex.SourceWatch([str(doc)]).poll() == []


def test_a_change_stands_until_it_is_accepted(tmp_path):
    """A poll that found a change tells it again until the new version is read (accept): a re-read cut short by
    Ctrl-C must not leave the old version standing as read."""
    doc = tmp_path / "memo.txt"
    doc.write_text(V1)
    watch = docindex.SourceWatch([str(doc)])
    doc.write_text(V1 + "More.")
    assert watch.poll() == [("memo.txt", None)]
    assert watch.poll() == [("memo.txt", None)]
    watch.accept()
    assert watch.poll() == []
    doc.unlink()
    assert watch.poll() == [("memo.txt", "No such file or directory")]
    assert watch.poll() == []  # a file that is gone is said once
