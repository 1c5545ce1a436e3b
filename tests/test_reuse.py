"""Prefix reuse: a prefill that starts from another KV file's first rows equals a fresh one-shot prefill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runcli import DOCS, TINY, ask_json, run
from tiny import tiny_model

from tmixcli import generate, kvread, kvstore, kvwrite, reuse
from tmixcli.attention import attach
from tmixcli.config import AttentionConfig

SMALL = dict(n_init=2, n_local=8, last_n=5)


def _tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, 320, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _continued(model, old: list[int], new: list[int], rows: int, tmp_path, attn) -> object:
    """Prefill `old`, save it, load its first `rows` rows and prefill `new` from there."""
    cache, _ = generate.prefill(model, old)
    path = tmp_path / "old.safetensors"
    kvwrite.save_kv(path, cache, old, kvstore.build_meta(model_id="tiny", fingerprint="f", dtype=model.dtype,
                                                         attn=attn, doc_name="old", doc_sha256="0",
                                                         template_hash="t", n_tokens=len(old)))
    base, ids, _ = kvread.load_kv(path, rows=rows, headroom=len(new) - rows)
    assert ids == old[:rows] and base.get_seq_length() == rows
    return generate.prefill(model, new, cache=base, chunk_size=7)[0]


def _max_diff(a, b) -> float:
    return max(float((x.keys - y.keys).abs().max().max()) for x, y in zip(a.layers, b.layers))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("method", ["trimix", "dense"])
@pytest.mark.parametrize("shared", [40, 58, 60])  # inside the old band; among its last_n rows; all of it
def test_reused_rows_equal_a_fresh_prefill(tmp_path, family, method, shared):
    model = tiny_model(family)
    attn = AttentionConfig(method=method, start_layer=1 if method == "trimix" else 0, **SMALL)
    attach(model, attn)
    old = _tokens(60, seed=1)
    new = old[:shared] + _tokens(31, seed=2)
    rows = reuse.usable_rows(reuse.shared_len(old, new), len(old), len(new), attn)
    assert rows == (min(shared, 60 - 5) if method == "trimix" else shared)
    fresh, _ = generate.prefill(model, new)
    got = _continued(model, old, new, rows, tmp_path, attn)
    assert got.get_seq_length() == len(new)
    for a, b in zip(fresh.layers, got.layers):
        torch.testing.assert_close(b.keys, a.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.values, a.values, atol=1e-5, rtol=1e-5)


def test_rows_among_the_old_last_n_are_not_reusable(tmp_path):
    """The negative control: taking rows the old prefill ran as last rows (they saw every key) is wrong."""
    model = tiny_model("llama")
    attn = AttentionConfig(method="trimix", start_layer=1, **SMALL)
    attach(model, attn)
    old = _tokens(60, seed=1)
    new = old + _tokens(31, seed=2)
    fresh, _ = generate.prefill(model, new)
    assert _max_diff(fresh, _continued(model, old, new, 55, tmp_path, attn)) < 1e-5
    assert _max_diff(fresh, _continued(model, old, new, 60, tmp_path, attn)) > 1e-3


def test_usable_rows_leave_one_to_run():
    dense = AttentionConfig(method="dense", start_layer=0)
    assert reuse.usable_rows(100, 100, 100, dense) == 99
    assert reuse.usable_rows(0, 100, 100, dense) == 0
    assert reuse.usable_rows(90, 100, 300, AttentionConfig(last_n=128)) == 0
    assert reuse.shared_len([1, 2, 3], [1, 2, 4, 5]) == 2 and reuse.shared_len([1, 2], [1, 2, 3]) == 2


def test_grown_document_prefills_only_its_new_end(capsys, tmp_path, tiny_dir, monkeypatch):
    doc = tmp_path / "notes.txt"
    text = (DOCS / "notes.txt").read_text()
    doc.write_text(text[:900])
    args = (str(doc), "Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "12", *TINY)
    first = ask_json(capsys, *args)
    doc.write_text(text[:1000])  # the notes grew
    code, out, err = run(capsys, "ask", *args, "--json")
    assert code == 0, err
    grown = json.loads(out)
    assert not grown["cache_hit"] and grown["kv_path"] != first["kv_path"]
    assert 256 <= grown["reused_tokens"] < grown["prompt_tokens"] - 8
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing to reuse: one-shot prefill
    fresh = ask_json(capsys, *args)
    assert fresh["reused_tokens"] == 0 and fresh["answer"] == grown["answer"]
    assert fresh["prompt_tokens"] == grown["prompt_tokens"]
    code, _, err = run(capsys, "ask", *args)
    assert code == 0 and "cache hit" in err


def test_serve_reuses_the_cache_it_holds(capsys, tmp_path, tiny_dir, monkeypatch):
    """Inside `tmix serve`, a grown document starts from the cache held in memory: no KV file is read."""
    from tmixcli import serving
    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    lm = load_model(tiny_dir, device="cpu")
    for key, value in {"key": "test", "lm": lm, "resident": ResidentKV()}.items():
        monkeypatch.setitem(serving.served, key, value)
    doc = tmp_path / "notes.txt"
    text = (DOCS / "notes.txt").read_text()
    doc.write_text(text[:900])
    args = (str(doc), "Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "12", *TINY)
    first = ask_json(capsys, *args)
    assert not first["cache_hit"]
    doc.write_text(text[:1000])  # the notes grew
    with monkeypatch.context() as m:
        m.setattr(kvread, "load_kv", lambda *a, **k: pytest.fail("a KV file was read"))
        code, out, err = run(capsys, "ask", *args)
        assert code == 0 and "as kept in memory by tmix serve" in err, err
        doc.write_text(text[:1000] + " Grown again.")  # grown again: from the cache the last run left in memory
        grown = ask_json(capsys, *args)
    assert not grown["cache_hit"] and 256 <= grown["reused_tokens"] < grown["prompt_tokens"] - 8
    serving.served.clear()
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "fresh-cache"))  # one-shot prefill of the same text
    fresh = ask_json(capsys, *args)
    assert fresh["reused_tokens"] == 0 and fresh["answer"] == grown["answer"]
    assert fresh["prompt_tokens"] == grown["prompt_tokens"]


def test_a_damaged_file_is_only_not_reused_but_a_bug_reading_one_is_not_hidden(tmp_path, monkeypatch):
    from tmixcli import kvfolder, kvheader

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    monkeypatch.setattr(kvfolder, "list_entries", lambda folder: [{"path": str(bad), "error": None, "n_tokens": 999}])
    assert reuse.best_file(_tokens(999, seed=1), {}, AttentionConfig()) is None

    def bug(path):
        raise TypeError("a bug in the reader")

    monkeypatch.setattr(kvheader, "read_meta", lambda path: {})
    monkeypatch.setattr(kvheader, "read_prefix_ids", bug)
    with pytest.raises(TypeError, match="a bug in the reader"):
        reuse.best_file(_tokens(999, seed=1), {}, AttentionConfig())


def _three_docs(folder) -> list[str]:
    """Three short documents cut from the sample notes (a+b+c ~470 tiny-tokenizer tokens, a+b over MIN_ROWS)."""
    text = (DOCS / "notes.txt").read_text()
    folder.mkdir()
    paths = []
    for name, (start, end) in zip(("a.txt", "b.txt", "c.txt"), ((0, 260), (260, 520), (520, 720))):
        (folder / name).write_text(text[start:end])
        paths.append(str(folder / name))
    return paths


def test_one_more_document_reuses_the_earlier_documents_rows(capsys, tmp_path, tiny_dir, monkeypatch):
    """QA24 F4: a+b, then a+b+c, prefills only c (the headings do not name the count): all rows of the a+b file but
    its last_n (8), which a triangle prefill runs seeing every key; the result equals a one-pass prefill. Dropping c
    again reuses the a+b+c file's rows."""
    a, b, c = _three_docs(tmp_path / "docs")
    opts = ("--model", tiny_dir, *TINY)
    question = ("Who is the project manager?", "--max-new-tokens", "12")
    code, out, err = run(capsys, "prefill", a, b, *opts, "--json")
    assert code == 0, err
    two = json.loads(out)
    code, out, err = run(capsys, "ask", a, b, c, *question, *opts, "--json")
    assert code == 0, err
    grown = json.loads(out)
    assert not grown["cache_hit"] and grown["reused_tokens"] == two["tokens"] - 8
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing to reuse: one-shot prefill
    fresh = ask_json(capsys, a, b, c, *question, *opts)
    assert fresh["reused_tokens"] == 0 and fresh["answer"] == grown["answer"]
    assert fresh["prompt_tokens"] == grown["prompt_tokens"]
    assert _max_diff(kvread.load_kv(Path(fresh["kv_path"]))[0], kvread.load_kv(Path(grown["kv_path"]))[0]) < 1e-5
    code, _, err = run(capsys, "ask", a, b, *question, *opts)  # c dropped: the a+b+c file's rows but a+b's last_n
    assert code == 0 and f"(the first {two['tokens'] - 8} tokens taken from {Path(fresh['kv_path']).name}, " in err


def test_a_folder_gaining_a_last_file_reuses_the_rows_of_the_others(capsys, tmp_path, tiny_dir):
    """A folder's files are read in name order: one that sorts last only adds rows after the others'."""
    folder = tmp_path / "docs"
    *_, c = _three_docs(folder)
    last = Path(c).rename(tmp_path / "c.txt")
    opts = ("--model", tiny_dir, *TINY)
    code, out, err = run(capsys, "prefill", str(folder), *opts, "--json")
    assert code == 0, err
    two = json.loads(out)
    last.rename(folder / "c.txt")
    code, out, err = run(capsys, "prefill", str(folder), *opts, "--json")
    assert code == 0, err
    grown = json.loads(out)
    assert grown["kv_path"] != two["kv_path"] and grown["reused_tokens"] == two["tokens"] - 8
