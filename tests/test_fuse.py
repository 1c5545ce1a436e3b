"""`--compile`: each layer's norms and MLP under torch.compile give the eager model's outputs, one graph for all."""

from __future__ import annotations

import pytest
import torch

from tmixcli import attention, generate
from tmixcli.config import AttentionConfig
from tmixcli.fuse import compile_blocks, resolve_compile


def test_resolve_compile():
    assert resolve_compile("auto", torch.device("cuda")) and not resolve_compile("auto", torch.device("cpu"))
    assert resolve_compile("on", torch.device("cpu")) and not resolve_compile("off", torch.device("cuda"))
    with pytest.raises(ValueError, match="auto, on or off"):
        resolve_compile("yes", torch.device("cpu"))


def test_compiled_blocks_match_eager_on_new_lengths():
    from tiny import tiny_model

    torch._dynamo.reset()
    model = tiny_model("qwen2", layers=2)
    attention.attach(model, AttentionConfig(method="trimix", start_layer=1, n_local=16, last_n=8))
    ids = torch.randint(0, 320, (301,), generator=torch.Generator().manual_seed(0)).tolist()
    eager = [generate.prefill(model, ids[:n])[1] for n in (301, 200)]
    assert compile_blocks(model) == 2 * 3 + 1
    for (n, ref) in zip((301, 200), eager):
        cache, logits = generate.prefill(model, ids[:n])
        assert torch.allclose(logits, ref, atol=1e-4, rtol=1e-4)
    assert len(cache.layers[1].keys[0, 0]) == 200
