"""CPU (and fallback) TriangleMix: blockwise PyTorch whose work is O(L*(n_init+n_local) + last_n*L), no L x L mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tmix_kernels.dense import dense_tail_attention


def _gqa_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """Biased SDPA with GQA folded into rows; q [B,H,M,D], k/v [B,Hkv,N,D], bias [G*M,N] -> [B, M, H, D]."""
    b, h, m, d = q.shape
    hkv = k.shape[1]
    g = h // hkv
    qg = q.reshape(b, hkv, g * m, d)  # qg: [B, Hkv, G*M, D], head h = kv*G + g as in repeat_kv
    out = F.scaled_dot_product_attention(qg, k, v, attn_mask=bias, scale=scale)  # out: [B, Hkv, G*M, D]
    return out.view(b, hkv, g, m, d).permute(0, 3, 1, 2, 4).reshape(b, m, h, d)


def _bias(allowed: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (0 / -inf) [G*M, N] from a bool [M, N], tiled once per query head of a group."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return bias.repeat(groups, 1) if groups > 1 else bias


def triangle_attention_blockwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int, last_n: int,
    total_len: int | None = None, scale: float | None = None, block: int = 64,
) -> torch.Tensor:
    """Triangle attention by query blocks: each block sees the sinks plus its own window; the last rows see all."""
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if h % hkv:
        raise ValueError(f"query heads {h} not a multiple of kv heads {hkv}")
    g = h // hkv
    scale = d**-0.5 if scale is None else scale
    total = s if total_len is None else total_len
    q0 = s - lq  # global position of the first query
    split = min(s, max(q0, total - last_n))  # rows at global positions >= split see every earlier key
    out = q.new_empty(b, lq, h, d)
    dev = q.device
    steady = None  # the bias of a full block whose window starts past the sinks is the same for every such block
    for a in range(q0, split, block):
        e = min(a + block, split)
        ws = max(a - n_local + 1, 0)  # first window key any row of the block needs
        if ws <= n_init:
            kp = torch.arange(0, e, device=dev)
            kb, vb = k[:, :, :e], v[:, :, :e]
        else:
            kp = torch.cat([torch.arange(0, n_init, device=dev), torch.arange(ws, e, device=dev)])
            kb = torch.cat([k[:, :, :n_init], k[:, :, ws:e]], dim=2)  # kb: [B, Hkv, n_init + e - ws, D]
            vb = torch.cat([v[:, :, :n_init], v[:, :, ws:e]], dim=2)
        is_steady = ws > n_init and e - a == block
        if is_steady and steady is not None:
            bias = steady
        else:
            p = torch.arange(a, e, device=dev)[:, None]
            allowed = (kp[None, :] <= p) & ((kp[None, :] < n_init) | (p - kp[None, :] < n_local))
            bias = _bias(allowed, g, q.dtype)
            if is_steady:
                steady = bias
        out[:, a - q0 : e - q0] = _gqa_sdpa(q[:, :, a - q0 : e - q0], kb, vb, bias, scale)
    if split < s and q.device.type == "cpu":  # the last rows: unmasked + causal parts merged by log-sum-exp
        out[:, split - q0 :] = dense_tail_attention(q[:, :, split - q0 :], k, v, scale)
    elif split < s:
        p = torch.arange(split, s, device=dev)[:, None]
        allowed = torch.arange(s, device=dev)[None, :] <= p  # allowed: [rows, S], bottom-right causal
        out[:, split - q0 :] = _gqa_sdpa(q[:, :, split - q0 :], k, v, _bias(allowed, g, q.dtype), scale)
    return out
