"""`tmix cache` after weeks of edits: which document and which version of it each KV file holds (paths from the
document index), times in local time, and `rm --doc` removing a document's KV files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from runcli import TINY, one_error, run

from kvfiles import prefix_ids, saved, tiny_model
from kvfiles import tokenizer as tokenizer  # the fixture (the alias tells ruff it is used)
from tmixcli import docindex

V1 = "The code for the harbour vault is 4711. " * 20
V2 = "The code for the harbour vault is 5822. " * 20
V3 = "The lighthouse keeper is called Ingrid Solberg. " * 20


def _prefill(capsys, doc: str, tiny_dir: str) -> str:
    """Prefill `doc` with the tiny model; the key of its KV file."""
    code, out, err = run(capsys, "prefill", doc, "--quiet", "--model", tiny_dir, *TINY)
    assert code == 0, err
    return Path(out.strip()).stem


def _rows(capsys) -> dict[str, list[str]]:
    """`cache ls`'s rows by key: [DOCUMENT, VERSION]."""
    code, out, err = run(capsys, "cache", "ls")
    assert code == 0, err
    return {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:] if len(line.split()[0]) == 24}


def test_ls_tells_versions_and_folders_apart_and_rm_doc_removes_a_documents_files(capsys, monkeypatch, tiny_dir,
                                                                                  tmp_path):
    """Four rows all read "vault.txt": two versions of a/vault.txt and a same-named b/vault.txt could not be told
    apart, and `cache rm vault.txt` said "no KV file with key". Now the path and the version show, in --json too,
    and `rm --doc` removes one document's files (every version), never another's."""
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    doc, other = tmp_path / "a" / "vault.txt", tmp_path / "b" / "vault.txt"
    doc.write_text(V1)
    other.write_text(V3)
    old = _prefill(capsys, "a/vault.txt", tiny_dir)
    doc.write_text(V2)
    new = _prefill(capsys, "a/vault.txt", tiny_dir)
    same = _prefill(capsys, str(other), tiny_dir)  # given absolute: shown from the current folder all the same
    assert _rows(capsys) == {old: ["a/vault.txt", "old"], new: ["a/vault.txt", "current"],
                             same: ["b/vault.txt", "current"]}
    entries = {e["key"]: e for e in json.loads(run(capsys, "cache", "ls", "--json")[1])["entries"]}
    assert {k: (e["doc_paths"], e["version"]) for k, e in entries.items()} == {
        old: ([str(doc)], "old"), new: ([str(doc)], "current"), same: ([str(other)], "current")}

    os.utime(doc, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: the same bytes, still current
    doc.write_text(V2)
    assert _rows(capsys)[new] == ["a/vault.txt", "current"]
    monkeypatch.chdir(tmp_path / "b")  # elsewhere: the path from ~ or in full
    assert _rows(capsys)[new][0] in (str(doc), f"~/{os.path.relpath(doc, Path.home())}")
    monkeypatch.chdir(tmp_path)

    assert "no KV file with key 'a/vault.txt'" in one_error(capsys, "cache", "rm", "a/vault.txt")
    err = one_error(capsys, "cache", "rm", "--doc", "a/vault.txt", "c/vault.txt")  # nothing goes when one is unknown
    assert "no KV file of c/vault.txt in " in err and set(_rows(capsys)) == {old, new, same}
    code, out, err = run(capsys, "cache", "rm", "--doc", "a/vault.txt")
    assert code == 0 and f"removed {old} (vault.txt" in out and f"removed {new} (vault.txt" in out, err
    assert set(_rows(capsys)) == {same}
    assert "no KV file of a/vault.txt in " in one_error(capsys, "cache", "rm", "--doc", "a/vault.txt")
    assert "is empty" in one_error(capsys, "cache", "rm", "--doc", "")


def _recorded(doc: Path, kv: Path) -> None:
    """Record in the index that `doc` (one file) led to `kv`, as an ask does."""
    digest = hashlib.sha256(doc.read_bytes()).hexdigest()
    docindex.remember(docindex.identity([str(doc)], None, None), "settings", kv, doc.name, digest, [])


def test_moved_removed_and_unrecorded_documents(capsys, monkeypatch, tokenizer, tmp_path):
    """A document moved or removed leaves its KV file an old version, until a run records it at its new path; a
    folder that gains a file is another version; a KV file no run recorded (stdin, an older tmix) is told as not
    known ("-", null) and `rm --doc` cannot find it."""
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    kvs = [saved(model, tokenizer, prefix_ids(seed=i))[0] for i in range(4)]
    doc, gone, folder = tmp_path / "memo.txt", tmp_path / "gone.txt", tmp_path / "f"
    doc.write_text(V1)
    gone.write_text(V2)
    folder.mkdir()
    (folder / "x.txt").write_text(V3)
    _recorded(doc, kvs[0])
    _recorded(gone, kvs[1])
    files = sorted(folder.iterdir())
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    docindex.remember(docindex.identity([str(folder)], None, None), "settings", kvs[2], "x.txt", digest, [])
    older = {"settings": {"kv": kvs[3].name, "doc_name": "stdin", "doc_sha256": "0" * 64, "notes": []}}
    (docindex.index_dir(create=True) / f"{'a' * 32}.json").write_text(json.dumps(older))  # an older tmix: no paths
    keys = [kv.stem for kv in kvs]
    assert _rows(capsys) == {keys[0]: ["memo.txt", "current"], keys[1]: ["gone.txt", "current"],
                             keys[2]: ["f", "current"], keys[3]: ["doc.txt", "-"]}
    gone.unlink()
    (folder / "y.txt").write_text(V1)
    moved = tmp_path / "f" / "memo.txt"
    shutil.move(doc, moved)
    rows = _rows(capsys)
    assert rows[keys[0]] == ["memo.txt", "old"] and rows[keys[1]] == ["gone.txt", "old"], rows
    assert rows[keys[2]] == ["f", "old"], rows
    _recorded(moved, kvs[0])  # the same text asked about at its new path: the same KV file, current again
    assert _rows(capsys)[keys[0]] == ["f/memo.txt", "current"]
    listed = {e["key"]: e for e in json.loads(run(capsys, "cache", "ls", "--json")[1])["entries"]}
    assert listed[keys[3]]["doc_paths"] is None and listed[keys[3]]["version"] is None
    code, out, err = run(capsys, "cache", "rm", "--doc", "gone.txt", "f/x.txt")  # a file of a folder document too
    assert code == 0 and f"removed {keys[1]}" in out and f"removed {keys[2]}" in out, err
    assert set(_rows(capsys)) == {keys[0], keys[3]}


def test_last_used_is_local_time_and_says_so(capsys, tokenizer):
    """LAST USED was UTC, cut from an ISO string, without saying so: under TZ=America/New_York it read 08:45 while
    the clock said 03:49. It is now the local time, and its header says so; --json keeps UTC with its offset."""
    path = saved(tiny_model(), tokenizer)[0]
    when = datetime(2026, 1, 15, 12, 30, tzinfo=timezone.utc).timestamp()
    os.utime(path, (when, when))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "EST5")  # UTC-5, without a time zone database
        time.tzset()
        try:
            code, out, err = run(capsys, "cache", "ls")
            listing = json.loads(run(capsys, "cache", "ls", "--json")[1])
        finally:
            patch.undo()
            time.tzset()
    head, row = out.splitlines()[:2]
    assert code == 0 and head.endswith("LAST USED (local time)") and row.endswith("  2026-01-15 07:30"), out
    assert listing["entries"][0]["last_used"] == "2026-01-15T12:30:00+00:00"
