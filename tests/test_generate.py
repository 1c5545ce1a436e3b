"""Decoding helpers that need no model: loop detection."""

from __future__ import annotations

import pytest
import torch

from tmixcli.generate import repeating


def test_repeating_finds_a_loop_of_three_copies():
    unit = list(range(100, 113))  # 13 tokens
    assert repeating([1, 2, 3] + unit * 3) == 13
    assert repeating([1, 2, 3] + unit * 2) == 0  # two copies are not yet a loop
    assert repeating([7] * 33) == 11 and repeating([7] * 32) == 0  # one token said 33 times: a span of 11, thrice
    assert repeating([5, 6] * 8) == 0  # short repeats (16 tokens) are text, not a loop


def test_repeating_ignores_long_or_broken_periods():
    unit = list(range(80))
    assert repeating(unit * 3) == 0  # longer than max_period
    assert repeating(unit * 3, max_period=80) == 80
    unit = list(range(20))
    assert repeating(unit * 2 + unit[:-1] + [999]) == 0



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
