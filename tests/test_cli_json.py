"""`ask --json` and `prefill --json` as scripts read them: a prefill's and a KV load's times apart, no rate for one
token, an answer of whitespace alone said as such, kv_path absolute; the served cache-hit line;
prefill's help."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runcli import run
from test_prefill_status import QUESTION, TINY
from tmixcli import cli_open, generate, threads


@pytest.fixture()
def doc(tmp_path) -> str:
    """A ferry timetable of ~200 tokens for the tiny model: past TINY's triangle span of 32."""
    path = tmp_path / "ferry.txt"
    path.write_text("".join(f"Ferry {n} leaves pier {n % 4} at {6 + n}:45; the project manager is Ingrid.\n"
                            for n in range(12)))
    return str(path)


def _answer_with(monkeypatch, ids: list[int]) -> None:
    """The model answers exactly these token ids."""
    def fake(*args, on_first=None, **kw):
        if ids:
            on_first()
        yield from ids
    monkeypatch.setattr(generate, "generate_ids", fake)


def _json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0 and err == "", err
    return json.loads(out)


def _ids(tiny_dir: str, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)(text, add_special_tokens=False)["input_ids"]


def test_a_kv_load_is_not_a_prefill_and_one_token_has_no_rate(capsys, monkeypatch, tiny_dir, doc):
    """prefill_s is the time spent prefilling (0 on a cache hit), kv_load_s the hit's load (0 on a miss);
    decode_tokens_per_s is null below two answer tokens (it was 0.0, which reads as infinitely slow)."""
    word = _ids(tiny_dir, "Pier")[:1]
    _answer_with(monkeypatch, word)
    args = ("ask", doc, QUESTION, "--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    miss = _json(capsys, *args)
    assert not miss["cache_hit"] and miss["prefill_s"] > 0 and miss["kv_load_s"] == 0, miss
    assert miss["new_tokens"] == 1 and miss["decode_tokens_per_s"] is None, miss
    hit = _json(capsys, *args)
    assert hit["cache_hit"] and hit["prefill_s"] == 0 and hit["kv_load_s"] > 0, hit
    assert hit["ttft_s"] >= hit["kv_load_s"] and hit["decode_tokens_per_s"] is None, hit
    _answer_with(monkeypatch, word * 3)
    three = _json(capsys, *args)
    assert three["new_tokens"] == 3 and three["decode_tokens_per_s"] > 0, three
    prefilled = _json(capsys, "prefill", doc, "--model", tiny_dir, *TINY)
    assert prefilled["cache_hit"] and prefilled["prefill_s"] == 0 and prefilled["kv_load_s"] > 0, prefilled


def test_an_answer_without_visible_text_is_kept_and_said_as_it_is(capsys, monkeypatch, tiny_dir, doc):
    """Whitespace alone is printed as generated and said as whitespace with its token count (it was "the model gave
    no answer"); --json's answer is stripped; tokens that print nothing, and no token at all, likewise."""
    args = ("ask", doc, QUESTION, "--model", tiny_dir, "--max-new-tokens", "16", "--no-cache", *TINY)
    newline = _ids(tiny_dir, "\n")
    assert len(newline) == 1
    special = _ids(tiny_dir, "<|begin_of_text|>")  # skipped in the answer's text
    for ids, text, note in ((newline * 10, "\n" * 10, "the model's answer was only whitespace (10 tokens)"),
                            (special * 3, "", "the model's answer had no visible text (3 tokens)"),
                            ([], "", "the model gave no answer")):
        _answer_with(monkeypatch, ids)
        code, out, err = run(capsys, *args)
        assert code == 0 and out == text + "\n" and err.splitlines()[-1] == f"tmix: {note}", (out, err)
        res = _json(capsys, *args)
        assert res["answer"] == text.strip() and res["notes"] == [note] and res["new_tokens"] == len(ids), res
    _answer_with(monkeypatch, _ids(tiny_dir, " Pier 3\n"))
    res = _json(capsys, *args)
    assert res["answer"] == "Pier 3" and res["notes"] == [], res


def test_kv_path_is_absolute_however_it_was_named(capsys, monkeypatch, tiny_dir, doc, tmp_path):
    """prefill -o REL, --kv REL and a relative TMIX_CACHE_DIR all give an absolute kv_path; prefill prints it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMIX_CACHE_DIR", "rel-cache")
    _answer_with(monkeypatch, _ids(tiny_dir, "Pier")[:1])
    model = ("--model", tiny_dir, "--max-new-tokens", "8")
    out_kv = str(tmp_path / "out.kv")
    assert _json(capsys, "prefill", doc, "-o", "out.kv", *model[:2], *TINY)["kv_path"] == out_kv
    code, out, err = run(capsys, "prefill", doc, "-o", "out.kv", *model[:2], *TINY, "-q")
    assert code == 0 and out == out_kv + "\n", err
    assert _json(capsys, "ask", "--kv", "out.kv", QUESTION, *model)["kv_path"] == out_kv
    cached = _json(capsys, "ask", doc, QUESTION, *model, *TINY)["kv_path"]
    assert cached.startswith(str(tmp_path / "rel-cache" / "kv") + "/") and Path(cached).is_file(), cached
    assert _json(capsys, "prefill", doc, *model[:2], *TINY)["kv_path"] == cached


def test_a_cache_hit_line_names_the_file_then_where_it_came_from(capsys, monkeypatch):
    """Through tmix serve: "cache hit: PATH, kept in memory by tmix serve" (it read "kept in memory by tmix serve
    PATH in 0.00 s"); a file read from disk still says how long its load took."""
    monkeypatch.setattr(threads, "note", lambda: "")
    ctx = SimpleNamespace(notes_said=0, notes=[], kv_notes=[], cache_hit=True, kept_in_memory=True, recomputed=None,
                          doc_unread=True, kv_path=Path("/c/kv/k.safetensors"), prefill_s=0.0004)
    cli_open.describe(ctx, quiet=False)
    assert capsys.readouterr().err == ("tmix: cache hit: /c/kv/k.safetensors, kept in memory by tmix serve (documents "
                                       "unchanged since: not read again)\n")
    ctx.kept_in_memory, ctx.doc_unread, ctx.prefill_s = False, False, 0.25
    cli_open.describe(ctx, quiet=False)
    assert capsys.readouterr().err == "tmix: cache hit: loaded /c/kv/k.safetensors in 0.25 s\n"


def test_prefill_help_names_no_kv_and_no_streaming(capsys):
    """prefill has no --kv and streams nothing: its --attention and --json help say only what applies."""
    code, out, _ = run(capsys, "prefill", "--help")
    assert code == 0 and "--kv" not in out and "streaming" not in out, out
    assert "the KV file's" in " ".join(out.split()), out
    code, out, _ = run(capsys, "ask", "--help")
    assert "--kv file's values" in " ".join(out.split()), out


def test_a_hit_prefilled_again_counts_as_a_prefill():
    """A cache hit whose file was on course to read slower than its prefill, and was prefilled again instead: its time
    is prefill_s (kv_load_s 0), and the TTFT line says prefill, not KV load."""
    from tmixcli.answer import Answer
    from tmixcli.cli_status import ttft_said

    ctx = SimpleNamespace(cache_hit=True, recomputed=1.5, prefill_s=0.8)
    assert cli_open.timings_json(ctx) == {"prefill_s": 0.8, "kv_load_s": 0.0}
    ans = Answer("Ingrid", 100, 2, 0.2, 5.0)
    assert ttft_said(ans, ctx) == "TTFT 1.00 s (prefill 0.80 s + question 0.20 s)"
    ctx.recomputed = None
    assert cli_open.timings_json(ctx) == {"prefill_s": 0.0, "kv_load_s": 0.8}
    assert ttft_said(ans, ctx) == "TTFT 1.00 s (KV load 0.80 s + question 0.20 s)"
