"""TriangleMix attention kernels (installed as `tmix_kernels`, never as a bare `kernels`).

Shared contract of every implementation here:
    q: [B, H, Lq, D], k/v: [B, Hkv, S, D] with H % Hkv == 0 (GQA, K/V not expanded),
    the queries are the last Lq positions of the S keys (global positions S-Lq .. S-1),
    total_len: length of the whole prefill (rows p >= total_len - last_n see every key j <= p);
    returns out: [B, Lq, H, D] (the layout transformers' attention interface returns).
Query p sees key j iff j <= p and (j < n_init or p - j < n_local or p >= total_len - last_n).
"""

from __future__ import annotations

import torch

from tmix_kernels.blockwise import triangle_attention_blockwise


def _triton_fn():
    try:
        from tmix_kernels.triangle_triton import triangle_attention_triton
    except ImportError:
        return None
    return triangle_attention_triton


def triangle_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int,
                       last_n: int, total_len: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Triton on CUDA (bf16/fp16, head_dim <= 256), blockwise PyTorch everywhere else."""
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] <= 256:
        fn = _triton_fn()
        if fn is not None:
            with torch.cuda.device(q.device):  # a layer of a device-mapped model may live on another GPU
                return fn(q, k, v, n_init, n_local, last_n, total_len, scale)
    return triangle_attention_blockwise(q, k, v, n_init, n_local, last_n, total_len, scale)


__all__ = ["triangle_attention"]
