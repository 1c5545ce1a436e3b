"""Dense-masked float64 reference for the triangle pattern: the ground truth for every kernel test."""

from __future__ import annotations

import torch


def triangle_mask(
    q_len: int, kv_len: int, n_init: int, n_local: int, last_n: int, total_len: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Bool [q_len, kv_len], True where query (global pos kv_len-q_len+i) may see key j."""
    total = kv_len if total_len is None else total_len
    p = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]  # p: [Lq, 1] global query positions
    j = torch.arange(kv_len, device=device)[None, :]  # j: [1, S]
    return (j <= p) & ((j < n_init) | (p - j < n_local) | (p >= total - last_n))


def triangle_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int, last_n: int,
    total_len: int | None = None, scale: float | None = None,
) -> torch.Tensor:
    """float64 masked softmax attention; q [B,H,Lq,D], k/v [B,Hkv,S,D] -> [B, Lq, H, D] float64."""
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    q64 = q.double()
    k64 = k.double().repeat_interleave(h // hkv, dim=1)  # k64: [B, H, S, D]
    v64 = v.double().repeat_interleave(h // hkv, dim=1)
    scores = (q64 @ k64.transpose(-1, -2)) * scale  # scores: [B, H, Lq, S]
    mask = triangle_mask(lq, s, n_init, n_local, last_n, total_len, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v64  # out: [B, H, Lq, D]
    return out.transpose(1, 2)
