"""Decode steps on the CPU in direct PyTorch, for the Llama-family layer (Llama, Mistral, Qwen2, Qwen3).

transformers' eager forward of one token runs some 40 small ops per layer through several wrappers, and the MKL in
PyTorch's CPU wheels runs a one-row linear at about half the memory bandwidth. This step does the model's own math
for one token (its embedding, norm, rotary and activation modules are called; linears, the rotation and the
attention are written out) with every linear run as one bmm over row blocks of its weight, which streams the
weight at full bandwidth where a probe finds it faster. Off with TMIX_CPU_STEP=0.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from tmixcli.envflags import switch
from tmixcli.kvstore import uses_sliding_window
from tmixcli.models import decoder_layers

# The families whose layer is exactly the math below (no embedding or residual multipliers): a subset of
# modelcheck.FAMILIES, kept apart so that a new family runs its own forward until its math is checked here.
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
_BLOCKS = (8, 16, 4, 2)
_split_faster: dict[tuple, bool] = {}


def _blocks(n: int) -> int:
    """Row blocks for a weight of n output rows (0: none fits)."""
    return next((b for b in _BLOCKS if n % b == 0), 0)


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of one row x [..., K] as a bmm over row blocks of weight [N, K]: MKL's threaded path."""
    n, k = weight.shape
    g = _blocks(n)
    xt = x.reshape(1, k).t().expand(g, k, 1)  # xt: [G, K, 1], column-major (the layout MKL runs fast)
    y = torch.bmm(weight.view(g, n // g, k), xt).view(*x.shape[:-1], n)  # y: [..., N]
    return y if bias is None else y + bias


def _best_s(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def split_is_faster(weight: torch.Tensor) -> bool:
    """Whether split_linear beats F.linear by >= 10% on one row of this (large) weight; timed once per shape,
    dtype and thread count (~20 ms for a 50M-element weight)."""
    key = (tuple(weight.shape), weight.dtype, torch.get_num_threads())
    if key not in _split_faster:
        x = torch.randn(1, weight.shape[1], dtype=weight.dtype)
        with torch.inference_mode():
            ok = bool(_blocks(weight.shape[0])) and \
                _best_s(lambda: split_linear(x, weight)) < 0.9 * _best_s(lambda: F.linear(x, weight))
        _split_faster[key] = ok
    return _split_faster[key]


def usable(model: torch.nn.Module, cache) -> bool:
    """A CPU model of a supported family with full attention in every layer, and a cache of plain layers."""
    cfg = model.config
    if not switch("TMIX_CPU_STEP") or model.device.type != "cpu":
        return False
    if getattr(cfg, "model_type", None) not in FAMILIES or getattr(cfg, "pretraining_tp", 1) != 1:
        return False
    if uses_sliding_window(cfg):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    layers = decoder_layers(model)
    parts = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj", "mlp.act_fn", "input_layernorm", "post_attention_layernorm")
    if not all(_has(model, p) for p in ("lm_head", "model.embed_tokens", "model.rotary_emb", "model.norm")):
        return False
    if not layers or not all(_has(layer, p) for layer in layers for p in parts):
        return False
    cl = getattr(cache, "layers", [])
    return len(cl) == len(layers) and all(isinstance(c, DynamicLayer) and c.is_initialized for c in cl)


def _has(module: torch.nn.Module, path: str) -> bool:
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return False
    return True


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding with halves rotated (the Llama-family convention); x [1, H, 1, D], cos/sin [1, 1, D]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class CpuDecoder:
    """One-token steps of `model` over `cache` (appending to it as transformers would)."""

    def __init__(self, model: torch.nn.Module, cache, split: bool | None = None) -> None:
        self.model, self.cache = model, cache
        self.inner = model.model
        self.layers = list(decoder_layers(model))
        self.split = split_is_faster(model.lm_head.weight.detach()) if split is None else split

    def _linear(self, mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.split and _blocks(mod.weight.shape[0]):
            return split_linear(x, mod.weight, mod.bias)
        return F.linear(x, mod.weight, mod.bias)

    def _attention(self, attn: torch.nn.Module, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   i: int) -> torch.Tensor:
        d = attn.head_dim
        q = self._linear(attn.q_proj, h).view(1, 1, -1, d)  # q: [1, 1, H, D]
        k = self._linear(attn.k_proj, h).view(1, 1, -1, d)  # k: [1, 1, Hkv, D]
        v = self._linear(attn.v_proj, h).view(1, 1, -1, d)
        if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMSNorm over each head before the rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [1, heads, 1, D]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        keys, values = self.cache.update(k, v, i)  # keys: [1, Hkv, S, D], this token's row included
        hkv = keys.shape[1]
        # every key is visible to the new token: fold each group's query heads into rows, no K/V copy
        o = F.scaled_dot_product_attention(q.reshape(1, hkv, -1, d), keys, values, scale=attn.scaling)
        return self._linear(attn.o_proj, o.reshape(1, 1, -1))  # rows j*G..j*G+G-1 are query heads of kv head j

    @torch.inference_mode()
    def step(self, token: int) -> torch.Tensor:
        """Feed `token` at the next position; returns that position's logits [V] in fp32."""
        n = self.cache.get_seq_length()
        x = self.inner.embed_tokens(torch.tensor([[token]]))  # x: [1, 1, hidden]
        cos, sin = self.inner.rotary_emb(x, torch.tensor([[n]]))  # cos/sin: [1, 1, D]
        for i, layer in enumerate(self.layers):
            x = x + self._attention(layer.self_attn, layer.input_layernorm(x), cos, sin, i)
            h = layer.post_attention_layernorm(x)
            mlp = layer.mlp
            x = x + self._linear(mlp.down_proj, mlp.act_fn(self._linear(mlp.gate_proj, h)) *
                                 self._linear(mlp.up_proj, h))
        return self._linear(self.model.lm_head, self.inner.norm(x)).view(-1).float()

    def close(self) -> None:
        """Nothing to give back: every step appended to the cache in place."""


def start(model: torch.nn.Module, cache) -> CpuDecoder | None:
    """A CpuDecoder when the model and cache allow it, else None (decode with the model's own forward)."""
    if not usable(model, cache):
        return None
    return CpuDecoder(model, cache)
