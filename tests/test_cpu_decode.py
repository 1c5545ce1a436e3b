"""The direct CPU decode step (tmixcli/cpu_decode.py) against the model's own forward, family by family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model

from tmixcli import cpu_decode, generate
from tmixcli.attention import attach
from tmixcli.config import AttentionConfig

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}
CASES = {
    "llama": ("llama", {}),
    "llama-bias-llama3-rope": ("llama", {"attention_bias": True, "mlp_bias": True, "rope_parameters": LLAMA3_ROPE}),
    "qwen2-yarn": ("qwen2", {"rope_parameters": YARN_ROPE}),
    "qwen3": ("qwen3", {}),
    "mistral-odd-vocab": ("mistral", {"vocab": 321}),  # 321 output rows: the head falls back to F.linear
}


def _prefilled(family: str, kw: dict, length: int = 150):
    model = tiny_model(family, **kw)
    attach(model, AttentionConfig(n_init=4, n_local=32, last_n=8, start_layer=2))  # as `tmix ask` prefills
    ids = torch.randint(0, model.config.vocab_size, (length,), generator=torch.Generator().manual_seed(1)).tolist()
    cache, logits = generate.prefill(model, ids)
    return model, cache, logits


def _rewind(cache, n: int) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., :n, :], layer.values[..., :n, :]


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_step_matches_the_model_forward(case, split):
    """Six steps give the logits and the cache rows of the model's own one-token forward."""
    family, kw = CASES[case]
    model, cache, _ = _prefilled(family, kw)
    assert cpu_decode.usable(model, cache)
    n = cache.get_seq_length()
    tokens = [3, 77, 150, 9, 200, 41]
    with torch.inference_mode():
        ref = [generate.extend(model, cache, [t]) for t in tokens]
    ref_k = [layer.keys.clone() for layer in cache.layers]
    ref_v = [layer.values.clone() for layer in cache.layers]
    _rewind(cache, n)
    dec = cpu_decode.CpuDecoder(model, cache, split=split)
    got = [dec.step(t) for t in tokens]
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert cache.get_seq_length() == n + len(tokens)
    for layer, k, v in zip(cache.layers, ref_k, ref_v, strict=True):
        torch.testing.assert_close(layer.keys, k, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.values, v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows,cols,bias", [(64, 48, False), (320, 64, True), (4096, 576, False), (24, 7, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_linear_equals_linear(rows, cols, bias, dtype):
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(rows, cols, generator=g).to(dtype)
    b = torch.randn(rows, generator=g).to(dtype) if bias else None
    x = torch.randn(1, 1, cols, generator=g).to(dtype)
    got = cpu_decode.split_linear(x, w, b)
    assert got.shape == (1, 1, rows)
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # sums of up to 576 products of size ~1
    torch.testing.assert_close(got.float(), F.linear(x, w, b).float(), rtol=tol, atol=tol)


def test_answers_are_the_same_with_and_without_the_step(monkeypatch):
    """generate_ids decodes through the step on the CPU; greedy ids equal those of the model's own forward."""
    model, cache, _ = _prefilled("llama", {})
    n = cache.get_seq_length()
    calls = []
    real_step = cpu_decode.CpuDecoder.step
    monkeypatch.setattr(cpu_decode.CpuDecoder, "step", lambda self, t: calls.append(t) or real_step(self, t))
    with_step = list(generate.generate_ids(model, cache, [5, 6, 7], stops=set(), max_new_tokens=24))
    assert len(calls) == 23
    _rewind(cache, n)
    monkeypatch.setenv("TMIX_CPU_STEP", "0")
    without = list(generate.generate_ids(model, cache, [5, 6, 7], stops=set(), max_new_tokens=24))
    assert len(calls) == 23 and with_step == without


def test_not_used_where_it_does_not_apply(monkeypatch):
    model, cache, _ = _prefilled("mistral", {})
    assert cpu_decode.usable(model, cache)
    model.config.sliding_window = 16
    assert not cpu_decode.usable(model, cache)  # a sliding window: the model's own forward decodes
    model, cache, _ = _prefilled("qwen3", {})
    assert cpu_decode.usable(model, cache)
    from transformers import DynamicCache

    assert not cpu_decode.usable(model, DynamicCache(config=model.config))  # nothing prefilled
    monkeypatch.setenv("TMIX_CPU_STEP", "0")
    assert not cpu_decode.usable(model, cache)
    assert cpu_decode.start(model, cache) is None


def test_probe_result_is_kept():
    w = torch.randn(2048, 256)
    first = cpu_decode.split_is_faster(w)
    assert isinstance(first, bool) and cpu_decode.split_is_faster(w) is first
    assert cpu_decode.split_is_faster(torch.randn(2047, 256)) is False  # no row blocks: never split
