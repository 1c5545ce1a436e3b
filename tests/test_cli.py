"""End to end through the `tmix` CLI: the default model on the sample documents' facts, cold, cached, from a KV file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runcli import DOCS, TINY, ask_json, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)

FACTS = json.loads((DOCS / "facts.json").read_text())


@pytest.mark.model
@pytest.mark.parametrize("doc", ["report.pdf", "notes.txt", "report.docx", "report.odt"])
def test_answers_facts_from_sample_docs(capsys, doc):
    """Cold ask prefills and saves; follow-up questions hit the cache; every fact is answered exactly."""
    source = "report.pdf" if doc.startswith("report.") else doc  # .docx and .odt hold report.pdf's text
    facts = [f for f in FACTS if f["doc"] == source]
    results = [ask_json(capsys, str(DOCS / doc), f["question"], "--max-new-tokens", "40") for f in facts]
    for fact, res in zip(facts, results):
        assert fact["answer"].lower() in res["answer"].lower(), (fact, res["answer"])
    assert [r["cache_hit"] for r in results] == [False] + [True] * (len(results) - 1)
    assert len({r["kv_path"] for r in results}) == 1
    first = results[0]
    assert first["document_tokens"] > 500 and first["prompt_tokens"] > first["document_tokens"]
    assert first["ttft_s"] >= first["prefill_s"] > 0 and first["attention"]["method"] == "trimix"
    for key in ("answer", "prompt_tokens", "document_tokens", "ttft_s", "prefill_s", "decode_tokens_per_s",
                "cache_hit", "kv_path", "model", "attention"):
        assert key in first


@pytest.mark.model
def test_answers_facts_from_two_documents_read_together(capsys):
    """notes.txt then report.pdf in one prompt (shipped start layer): every fact of both, from one KV file.

    With report.pdf first the default model misses the CEO at start layer 9 (dense answers it): docs/fidelity.md."""
    docs = [str(DOCS / "notes.txt"), str(DOCS / "report.pdf")]
    results = [ask_json(capsys, *docs, f["question"], "--max-new-tokens", "40") for f in FACTS]
    for fact, res in zip(FACTS, results):
        assert fact["answer"].lower() in res["answer"].lower(), (fact, res["answer"])
    assert [r["cache_hit"] for r in results] == [False] + [True] * (len(FACTS) - 1)
    assert results[0]["attention"]["start_layer"] == 9 and results[0]["document_tokens"] > 4500


@pytest.mark.parametrize("method", ["dense", "trimix"])
def test_cached_answer_token_identical_tiny(capsys, tiny_dir, short_doc, method):
    args = (short_doc, "Who is the project manager?", "--model", tiny_dir, "--attention", method,
            "--max-new-tokens", "24", *TINY)
    cold = ask_json(capsys, *args)
    warm = ask_json(capsys, *args)
    nocache = ask_json(capsys, *args, "--no-cache")
    assert (cold["cache_hit"], warm["cache_hit"], nocache["cache_hit"]) == (False, True, False)
    assert cold["answer"] == warm["answer"] == nocache["answer"] and cold["answer"]
    assert nocache["kv_path"] is None


@pytest.mark.model
def test_cached_answer_token_identical_default_model(capsys):
    args = (str(DOCS / "notes.txt"), FACTS[-1]["question"], "--max-new-tokens", "24")
    warm_after_cold = [ask_json(capsys, *args) for _ in range(2)]
    nocache = ask_json(capsys, *args, "--no-cache")
    assert [r["cache_hit"] for r in warm_after_cold] == [False, True]
    assert warm_after_cold[0]["answer"] == warm_after_cold[1]["answer"] == nocache["answer"]


@pytest.mark.model
def test_prefill_then_ask_from_kv_file_alone(capsys, tmp_path):
    kv = tmp_path / "notes.safetensors"
    code, out, err = run(capsys, "prefill", str(DOCS / "notes.txt"), "-o", str(kv), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert Path(info["kv_path"]) == kv and kv.is_file() and not info["cache_hit"]
    # file size = layers x 2 x kv_heads x tokens x head_dim x 4 bytes (fp32) + token ids + a small header
    tensor_bytes = 30 * 2 * 3 * info["tokens"] * 64 * 4 + info["tokens"] * 8
    assert tensor_bytes < kv.stat().st_size < tensor_bytes + 64 * 1024
    res = ask_json(capsys, "--kv", str(kv), FACTS[-1]["question"], "--max-new-tokens", "30")
    assert res["cache_hit"] and FACTS[-1]["answer"].lower() in res["answer"].lower()
    other = str(info["attention"]["start_layer"] + 1)  # settings that differ from the file's are refused
    code, _, err = run(capsys, "ask", "--kv", str(kv), "q?", "--start-layer", other)
    assert code == 2 and f"--start-layer {other} cannot apply to this KV file" in err
