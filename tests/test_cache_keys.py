"""Runs that share a KV file: the same text under another name or in other bytes; dense runs, any triangle flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runcli import TINY, ask_json, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)


def test_cache_hit_under_another_name_says_so(capsys, tiny_dir, short_doc, tmp_path):
    """A copy of a prefilled document hits the cache: the status names the copy and whose prefill it reuses."""
    copy = tmp_path / "copy.txt"
    copy.write_text(Path(short_doc).read_text())
    argv = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", *TINY)
    assert run(capsys, "ask", short_doc, *argv)[0] == 0
    for _ in range(2):  # the second run finds the copy unchanged (not read again): the note still comes once
        code, _, err = run(capsys, "ask", str(copy), *argv)
        assert code == 0 and "cache hit" in err, err
        assert err.startswith("tmix: copy.txt:") and err.count("same text as short.txt, prefilled earlier") == 1, err


def test_same_text_in_different_bytes_shares_one_kv_file(capsys, tiny_dir, short_doc, tmp_path):
    """Files that differ only in bytes the text drops (trailing blank lines; a re-saved PDF) hit one KV file in turn."""
    text = Path(short_doc).read_text()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(text)
    b.write_text(text + "\n\n\n")
    hits = []
    for doc in (a, b, a, b):
        code, out, err = run(capsys, "ask", str(doc), "q?", "--model", tiny_dir, "--max-new-tokens", "2", "--json",
                             *TINY)
        assert code == 0 and "not used" not in err, err
        hits.append(json.loads(out)["cache_hit"])
    assert hits == [False, True, True, True]
    assert len(list((Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors"))) == 1


def test_dense_runs_share_one_kv_file_whatever_the_triangle_flags(capsys, tiny_dir, short_doc):
    """--n-local, --n-init, --last-n and --start-layer shape only the triangle: with --attention dense they change
    neither the KV file nor its key."""
    base = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", "--attention", "dense")
    hits = [ask_json(capsys, short_doc, *base, *extra)["cache_hit"]
            for extra in ((), ("--n-local", "64"), ("--n-init", "0", "--last-n", "4", "--start-layer", "2"))]
    assert hits == [False, True, True]
    (kv,) = (Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors")
    res = ask_json(capsys, "--kv", str(kv), "q?", "--model", tiny_dir, "--max-new-tokens", "2", "--n-local", "64",
                   "--attention", "dense")
    assert res["cache_hit"] and res["attention"]["method"] == "dense"
