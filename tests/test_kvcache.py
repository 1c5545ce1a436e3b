"""The in-place KV cache: same logits as transformers' DynamicCache, no per-token copy, rewind and regrow."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import DynamicCache

from tiny import tiny_model
from tmixcli import attention, generate, kvcache
from tmixcli.context import rewind
from tmixcli.config import AttentionConfig
from tmixcli.kvcache import GrowingLayer


def plain_run(model, ids: list[int], steps: list[list[int]]) -> list[torch.Tensor]:
    """Reference: transformers' own DynamicCache, the prefix then each step appended."""
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([ids]), **kvcache.cache_kw(model, cache), use_cache=True)
        return [generate.extend(model, cache, s) for s in steps]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_same_logits_as_dynamic_cache_and_no_copy_per_token(family, monkeypatch):
    monkeypatch.setattr(kvcache, "HEADROOM", 8)  # force regrows: 8 spare rows, 4 tokens per step
    model = tiny_model(family)
    attention.attach(model, AttentionConfig(method="dense"))
    ids = torch.randint(3, 300, (61,)).tolist()
    steps = [torch.randint(3, 300, (4,)).tolist() for _ in range(6)] + [[5]] * 3
    ref = plain_run(model, ids, steps)
    cache, _ = generate.prefill(model, ids)
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    ptrs, got = [], []
    for s in steps:
        got.append(generate.extend(model, cache, s))
        ptrs.append(cache.layers[0].keys.data_ptr())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(set(ptrs)) < len(ptrs) and ptrs[-3:] == [ptrs[-1]] * 3  # mostly in place; single tokens never copy
    assert cache.get_seq_length() == len(ids) + sum(map(len, steps))


def test_rewind_then_append_keeps_the_prefix():
    model = tiny_model("llama")
    attention.attach(model, AttentionConfig(method="dense"))
    ids = torch.randint(3, 300, (40,)).tolist()
    cache, _ = generate.prefill(model, ids)
    prefix_k = cache.layers[1].keys.clone()
    first = generate.extend(model, cache, [7, 8, 9])
    rewind(cache, len(ids))
    generate.extend(model, cache, [11, 12])  # overwrites the rows the first question used
    rewind(cache, len(ids))
    assert torch.equal(cache.layers[1].keys, prefix_k)
    again = generate.extend(model, cache, [7, 8, 9])
    torch.testing.assert_close(again, first, atol=0, rtol=0)


def test_replaced_keys_are_adopted_not_overwritten():
    """Another cache method may swap `keys` for a new tensor: the next update copies it, never writes into it."""
    layer = GrowingLayer()
    k = torch.randn(1, 2, 5, 4)
    layer.update(k, k.clone())
    other = torch.randn(1, 2, 3, 4)
    layer.keys, layer.values = other, other.clone()
    keys, _ = layer.update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert torch.equal(keys[:, :, :3], other) and torch.equal(keys[:, :, 3:], torch.ones(1, 2, 1, 4))
    assert keys.data_ptr() != other.data_ptr()


def test_grad_mode_falls_back_to_concatenation():
    layer = GrowingLayer()
    k = torch.randn(1, 2, 5, 4, requires_grad=True)
    keys, _ = layer.update(k, k * 2)
    keys, _ = layer.update(k[:, :, :1], k[:, :, :1])
    keys.sum().backward()
    assert k.grad is not None and keys.shape[2] == 6


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_prefill_and_extend_pass_the_cache_without_deprecation_warnings(family):
    """transformers 5.24 renamed forward's `past_key_values` to `cache` and warns on every call with the old name:
    tmix passes whichever name the installed version takes (a warning would reach the user's stderr)."""
    model = tiny_model(family)
    attention.attach(model, AttentionConfig(start_layer=1, n_init=2, n_local=4, last_n=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache, _ = generate.prefill(model, list(range(3, 40)))
        generate.extend(model, cache, [5, 6])
    assert cache.get_seq_length() == 39
