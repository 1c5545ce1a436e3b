"""Decoding helpers: loop detection, and the cache a kept chat turn leaves."""

from __future__ import annotations

import pytest
import torch

from tmixcli.generate import repeated_tail

HEAT = "The new heat pump will be used to heat the new children's corner. "  # 13 words


def test_loop_found_across_line_breaks():
    """The default model loops with its line breaks in different places each time (seen on the sample notes)."""
    intro = "The old oil boiler goes. "
    text = intro + HEAT + HEAT.replace("heat the ", "heat the\n") + HEAT.replace("pump ", "pump\n") + "The"
    cut = repeated_tail(text)
    assert cut and text[:cut] == intro + HEAT.rstrip()
    assert repeated_tail(intro + HEAT * 2 + "The") == 0  # two copies are not yet a loop
    assert repeated_tail((intro + HEAT * 3).rstrip()) == 0  # the last word may still grow ("corner." -> "corner.\"")
    assert repeated_tail(intro + HEAT * 3) == len(intro + HEAT) - 1


def test_cut_ends_on_a_full_sentence():
    text = "Heat pumps. " + ("will heat the corner. The new heat pump " * 3) + "will"
    assert text[:repeated_tail(text)] == "Heat pumps. will heat the corner."


def test_short_or_long_repeats_are_not_loops():
    assert repeated_tail("no, no, no, " * 2 + "fine ") == 0  # 12 words in all: text, not a loop
    assert repeated_tail("yes " * 24 + "x") == len("yes " * 8) - 1  # one word 24 times: a span of 8, thrice
    words = " ".join(f"w{i}" for i in range(70)) + " "
    assert repeated_tail(words * 3 + "x") == 0  # longer than max_period
    assert repeated_tail(words * 3 + "x", max_period=70) == len(words) - 1


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("max_new", [5, 40])  # 40: on CUDA the steps after the first replay a graph
def test_kept_turn_holds_exactly_the_answer(max_new, device):
    """chat --keep-history: after an answer the cache equals a one-pass run of prefix + question + answer ids."""
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, generate, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama").to(device), tok, "tiny", torch.device(device), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=max_new)
    ctx = answer.open_document(lm, Document("d.txt", "The project manager is Tomas Brekke. " * 4, "0" * 64, None), s)
    q_ids = prompt.question_ids(tok, "Who is the project manager?", None)
    ans = answer.ask_ids(ctx, q_ids, s, keep=True)
    assert len(ans.ids) == ans.new_tokens >= 1
    assert ctx.cache.get_seq_length() == len(ctx.prefix_ids) + len(q_ids) + ans.new_tokens
    fresh, _ = generate.prefill(lm.model, ctx.prefix_ids + q_ids + ans.ids)
    for kept, ref in zip(ctx.cache.layers, fresh.layers, strict=True):
        torch.testing.assert_close(kept.keys, ref.keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(kept.values, ref.values, rtol=1e-4, atol=1e-5)


def test_kept_turn_after_a_cut_loop_holds_one_copy(monkeypatch):
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, generate, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama"), tok, "tiny", torch.device("cpu"), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=400)
    ctx = answer.open_document(lm, Document("d.txt", "The budget is four million kroner.", "0" * 64, None), s)
    loop = tok(" " + HEAT.strip(), add_special_tokens=False).input_ids

    def looping(model, cache, suffix_ids, *args, on_first=None, **kw):  # feeds the cache as generate_ids does
        generate.extend(model, cache, suffix_ids)
        for tok in loop * 10:
            yield tok
            generate.extend(model, cache, [tok])

    monkeypatch.setattr(generate, "generate_ids", looping)
    q_ids = prompt.question_ids(tok, "What heats the corner?", None)
    ans = answer.ask_ids(ctx, q_ids, s, keep=True)
    assert ans.stop_reason == "repeat" and ans.text.strip() == HEAT.strip()
    assert ctx.cache.get_seq_length() == len(ctx.prefix_ids) + len(q_ids) + len(loop)
    fresh, _ = generate.prefill(lm.model, ctx.prefix_ids + q_ids + loop)
    torch.testing.assert_close(ctx.cache.layers[-1].keys, fresh.layers[-1].keys, rtol=1e-4, atol=1e-5)


def test_loop_check_reads_only_the_tail():
    long_text = "".join(f"Sentence number {i} says something new. " for i in range(2000))  # ~80K chars, no loop
    assert repeated_tail(long_text) == 0
    looped = long_text + HEAT * 3
    assert looped[:repeated_tail(looped)] == long_text + HEAT.rstrip()


@pytest.mark.parametrize("keep", [True, False])
def test_interrupted_turn_leaves_the_cache_as_before(keep):
    """Ctrl-C in the middle of an answer (chat) drops the whole turn, also with --keep-history."""
    from tiny import tiny_model, tiny_tokenizer

    from tmixcli import answer, prompt
    from tmixcli.config import Settings
    from tmixcli.documents import Document
    from tmixcli.models import LoadedModel

    tok = tiny_tokenizer("llama")
    lm = LoadedModel(tiny_model("llama"), tok, "tiny", torch.device("cpu"), torch.float32)
    s = Settings(method="dense", use_cache=False, max_new_tokens=30, stop_repeats=False)
    ctx = answer.open_document(lm, Document("d.txt", "The budget is four million kroner. " * 3, "0" * 64, None), s)
    base = ctx.cache.get_seq_length()
    q_ids = prompt.question_ids(tok, "What is the budget?", None)
    seen = []

    def interrupt(piece):
        seen.append(piece)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        answer.ask_ids(ctx, q_ids, s, interrupt, keep=keep)
    assert ctx.cache.get_seq_length() == base
    assert all(layer.keys.shape[-2] == base for layer in ctx.cache.layers)
    again = answer.ask_ids(ctx, q_ids, s, keep=keep)
    assert again.new_tokens >= 3 and "".join(seen) == again.text[:len("".join(seen))]
