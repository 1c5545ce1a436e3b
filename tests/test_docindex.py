"""The document index: a warm ask of unchanged documents loads their KV file without reading them again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runcli import DOCS, TINY, ask_json, run

from tmixcli import docindex

QUESTION = "Who is the project manager?"


def _no_reading(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("the document was read")

    monkeypatch.setattr("tmixcli.documents.load_documents", refuse)


def test_identity_follows_the_files(tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text("The budget is four million kroner.")
    first = docindex.identity([str(doc)], None, None)
    assert first is not None and docindex.identity([str(doc)], None, None).digest == first.digest
    assert docindex.identity([str(doc)], "1-2", None).digest != first.digest
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 1))
    touched = docindex.identity([str(doc)], None, None)
    assert touched.digest != first.digest
    st = doc.stat()
    doc.write_text("The budget is nine million kroner.")  # same size, mtime put back: ctime still moves
    os.utime(doc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert docindex.identity([str(doc)], None, None).digest != touched.digest
    assert docindex.identity([str(doc), "-"], None, None) is None  # stdin
    assert docindex.identity([str(doc)], None, "s3cret") is None  # a password is never keyed on
    assert docindex.identity([str(tmp_path / "missing.txt")], None, None) is None
    assert docindex.identity([""], None, None) is None  # an empty path is refused when the documents are read
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.txt").write_text("x")
    before = docindex.identity([str(folder)], None, None)
    (folder / "y.txt").write_text("y")
    assert before is not None and docindex.identity([str(folder)], None, None).digest != before.digest


def test_warm_ask_does_not_read_an_unchanged_document(capsys, monkeypatch, tiny_dir, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:1000])
    args = (str(doc), QUESTION, "--model", tiny_dir, "--max-new-tokens", "12", *TINY)
    cold = ask_json(capsys, *args)
    read_warm = ask_json(capsys, *args, "--start-layer", "2")  # other settings: read, prefilled, recorded too
    _no_reading(monkeypatch)
    code, out, err = run(capsys, "ask", *args)
    assert code == 0, err
    assert "cache hit" in err and "not read again" in err
    warm = ask_json(capsys, *args)
    assert warm["cache_hit"] and warm["kv_path"] == cold["kv_path"] and warm["answer"] == cold["answer"]
    assert warm["document_tokens"] == cold["document_tokens"]
    again = ask_json(capsys, *args, "--start-layer", "2")
    assert again["kv_path"] == read_warm["kv_path"] != cold["kv_path"]
    with pytest.raises(AssertionError, match="was read"):  # settings never seen: the document must be read
        ask_json(capsys, *args, "--system", "Answer in one word.")


def test_edited_or_uncached_document_is_read_again(capsys, monkeypatch, tiny_dir, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("The project manager is Tomas Brekke. " * 20)
    args = (str(doc), QUESTION, "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    cold = ask_json(capsys, *args)
    doc.write_text("The project manager is Maren Lie. " * 20)
    edited = ask_json(capsys, *args)
    assert not edited["cache_hit"] and edited["kv_path"] != cold["kv_path"]
    code, _, err = run(capsys, "cache", "rm", Path(edited["kv_path"]).stem)
    assert code == 0, err
    ident = docindex.identity([str(doc)], None, None)
    assert not docindex.known(ident)  # its only entry pointed at the removed file
    assert len(list(docindex.index_dir().glob("*.json"))) == 1  # the first version's entry: its file is still there
    again = ask_json(capsys, *args)
    assert not again["cache_hit"] and again["kv_path"] == edited["kv_path"]
    _no_reading(monkeypatch)
    assert ask_json(capsys, *args)["cache_hit"]
    for kv in Path(again["kv_path"]).parent.glob("*.safetensors"):  # KV files removed by hand
        kv.unlink()
    code, out, err = run(capsys, "cache", "clear", "--yes")
    assert code == 0 and "no KV files" in out, err
    assert not list(docindex.index_dir().glob("*.json"))  # nothing to remove, yet the index is cleaned


def test_truncated_document_keeps_its_notes(capsys, monkeypatch, tiny_dir, tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text((DOCS / "notes.txt").read_text())
    opts = ("--model", tiny_dir, "--truncate", *TINY)
    args = (str(doc), QUESTION, "--max-new-tokens", "4", *opts)
    code, _, err = run(capsys, "prefill", str(doc), *opts)
    assert code == 0, err
    code, _, err = run(capsys, "ask", *[a for a in args if a != "--truncate"])  # the cut KV file is not used
    assert code == 2 and "use --truncate" in err
    _no_reading(monkeypatch)
    code, _, err = run(capsys, "ask", *args)
    assert code == 0, err
    assert "truncated long.txt: kept its first" in err and "not read again" in err


def test_a_fifo_in_place_of_an_index_file_is_never_waited_on(tmp_path, monkeypatch):
    """`tmix cache prune` (forget_missing), a warm ask's lookup and remember open index files without waiting: a FIFO
    there is skipped or replaced, never read."""
    import threading

    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    folder = docindex.index_dir(create=True)
    fifo = folder / f"{'a' * 32}.json"
    os.mkfifo(fifo)
    done: list[object] = []

    ident = docindex.Identity("a" * 32)

    def work() -> None:
        done.append(docindex.lookup(ident, "k"))
        docindex.remember(ident, "k", tmp_path / "x.safetensors", "x.txt", "sha", [])
        done.append(fifo.is_file() and docindex.lookup(ident, "k")["doc_name"])
        os.remove(fifo)
        os.mkfifo(fifo)
        done.append(docindex.forget_missing(tmp_path))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # let the stuck open see a writer come and go, so the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert done == [None, "x.txt", 1] and not fifo.exists()


def test_files_whose_stat_tells_no_change_are_never_indexed(tmp_path):
    """/proc and /sys files keep size 0 (or 4096) and the mtime of boot while their contents change; a file of size 0
    cannot be told by its stat either: such documents are always read, as stdin is."""
    assert docindex.identity(["/proc/uptime"], None, None) is None
    assert docindex.identity(["/proc/self/status"], None, None) is None
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert docindex.identity([str(empty)], None, None) is None
    doc = tmp_path / "a.txt"
    doc.write_text("The budget is four million kroner.")
    assert docindex.identity([str(doc)], None, None) is not None
    assert docindex.identity([str(doc), "/proc/uptime"], None, None) is None
    assert not docindex.stat_tells_changes(os.stat("/proc/uptime"))
    sysfs = [p for p in Path("/sys/kernel").glob("*") if p.is_file()] if os.path.isdir("/sys/kernel") else []
    assert all(not docindex.stat_tells_changes(p.stat()) for p in sysfs)  # 4096 bytes, whatever a file holds


def _uptime_moves() -> None:
    """Wait until /proc/uptime reads otherwise than now (it counts hundredths of a second)."""
    import time

    first = Path("/proc/uptime").read_text()
    deadline = time.monotonic() + 30
    while Path("/proc/uptime").read_text() == first and time.monotonic() < deadline:
        time.sleep(0.02)


def test_chat_sees_a_proc_file_change_by_its_contents():
    """`chat`'s check before each question: stat alone missed a /proc file's new contents."""
    watch = docindex.SourceWatch(["/proc/uptime"])
    _uptime_moves()
    assert watch.poll() == [("uptime", None)]


def test_a_proc_document_is_read_again_by_the_next_question(capsys, monkeypatch, tiny_dir):
    """`tmix ask /proc/uptime Q` twice: the second run said "documents unchanged since: not read again" and answered
    from the first run's uptime."""
    from runcli import _count_calls

    from tmixcli import documents

    args = ("/proc/uptime", "What is the first number?", "--model", tiny_dir, "--max-new-tokens", "2", *TINY)
    code, _, err = run(capsys, "ask", *args)
    assert code == 0, err
    _uptime_moves()
    reads = _count_calls(monkeypatch, documents, "load_documents")
    code, _, err = run(capsys, "ask", *args)
    assert code == 0 and "not read again" not in err, err
    assert reads


def test_a_kv_file_copied_under_another_key_is_not_served(capsys, tiny_dir, tmp_path):
    """The index pointed at a KV file whose contents a user had replaced by another document's (a backup restored
    under the wrong name): a warm ask answered from the other document, "not read again". Its stored prefix is now
    checked against the key it is filed under, and the document is read."""
    import shutil

    from tmixcli import kvheader

    docs = [tmp_path / "sw1.txt", tmp_path / "sw2.txt"]
    docs[0].write_text("The vault code is 1357. " * 10)
    docs[1].write_text("The vault code is 8642. " * 10)
    opts = ("--model", tiny_dir, *TINY)
    paths = []
    for doc in docs:
        code, out, err = run(capsys, "prefill", str(doc), "--quiet", *opts)
        assert code == 0, err
        paths.append(Path(out.strip()))
    own = kvheader.read_prefix_ids(paths[0])
    shutil.copyfile(paths[1], paths[0])
    code, _, err = run(capsys, "ask", str(docs[0]), "What is the vault code?", "--max-new-tokens", "4", *opts)
    assert code == 0 and "not read again" not in err and "same text as sw2.txt" not in err, err
    assert kvheader.read_prefix_ids(paths[0]) == own  # the document was read and its KV file written again
