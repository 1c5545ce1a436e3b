"""One-token decode attention (split-K "flash decoding") whose key count is read from a device tensor.

A CUDA graph of a decode step cannot bake in the context length, so the step attends over a whole K/V buffer
[1, Hkv, C, D] and this kernel reads the valid length L = pos + 1 on the device. Each program takes one kv head
(its G query heads as GP >= 16 rows, so K/V are read once per group) and one slice of the keys; the partials are
merged by log-sum-exp (`_merge_splits` of the triangle kernel). Reference: `reference.triangle_reference` with
every key visible, on the first L keys.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tmix_kernels.triangle_triton import LOG2E, _interpreting, _merge_splits


@triton.jit
def _decode_split(Q, K, V, Pos, OPart, LsePart,
                  stride_qh, stride_qd, stride_kh, stride_kn, stride_kd, stride_vh, stride_vn, stride_vd,
                  split_len, n_splits, qk_scale, G,
                  GP: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                  DOT_PREC: tl.constexpr):
    """Partial attention of kv head program_id(0)'s query heads over keys [split * split_len, ...) below L."""
    kvh = tl.program_id(0)
    split = tl.program_id(1)
    n_keys = tl.sum(tl.load(Pos + tl.arange(0, 1)), axis=0) + 1  # valid keys 0 .. pos (a 0-d scalar everywhere)
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < G
    d_ok = offs_d < HEAD_DIM
    h = kvh * G + offs_g
    q = tl.load(Q + h[:, None] * stride_qh + offs_d[None, :] * stride_qd, mask=g_ok[:, None] & d_ok[None, :],
                other=0.0)  # q: [GP, BLOCK_D]
    lo = split * split_len
    hi = tl.minimum(lo + split_len, n_keys)
    m_i = tl.full([GP], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GP], dtype=tl.float32)
    acc = tl.zeros([GP, BLOCK_D], dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        kn = start + offs_n
        k_ok = kn < hi
        k = tl.load(K + kvh * stride_kh + kn[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                    mask=k_ok[None, :] & d_ok[:, None], other=0.0)  # kT: [BLOCK_D, BLOCK_N]
        s = tl.where(k_ok[None, :], tl.dot(q, k, input_precision=DOT_PREC) * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + kvh * stride_vh + kn[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=k_ok[:, None] & d_ok[None, :], other=0.0)  # v: [BLOCK_N, BLOCK_D]
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)  # acc: [GP, BLOCK_D]
        m_i = m_new
    has = l_i > 0.0
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    part = h * n_splits + split  # part: [GP]
    tl.store(LsePart + part, lse, mask=g_ok)
    tl.store(OPart + part[:, None] * BLOCK_D + offs_d[None, :], o, mask=g_ok[:, None])


def decode_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                            scale: float | None = None, n_splits: int | None = None) -> torch.Tensor:
    """q [1, H, 1, D] at position pos (int64 [1] on the device), k/v [1, Hkv, C, D] buffers whose first pos + 1
    rows are valid -> out [1, 1, H, D]. The launch depends only on shapes, so it can be captured in a CUDA graph."""
    if not (q.is_cuda or _interpreting()):
        raise ValueError("decode_attention_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    if q.dim() != 4 or q.shape[0] != 1 or q.shape[2] != 1 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"need q [1, H, 1, D] and k/v [1, Hkv, C, D]; got {tuple(q.shape)}, {tuple(k.shape)}")
    h, d = q.shape[1], q.shape[3]
    hkv, cap = k.shape[1], k.shape[2]
    if k.shape[0] != 1 or k.shape[3] != d or h % hkv or not 1 <= d <= 256:
        raise ValueError(f"shape mismatch or head_dim {d} unsupported: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"q/k/v must share one dtype of bf16, fp16, fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    if pos.dtype != torch.int64 or pos.numel() != 1 or pos.device != q.device:
        raise ValueError("pos must be one int64 on q's device")
    g = h // hkv
    block_d = max(16, triton.next_power_of_2(d))
    block_n = 16 if _interpreting() else (64 if block_d <= 128 else 32)
    if n_splits is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 4
        n_splits = max(1, min(triton.cdiv(2 * sms, hkv), triton.cdiv(cap, block_n)))
    split_len = triton.cdiv(triton.cdiv(cap, n_splits), block_n) * block_n
    n_splits = triton.cdiv(cap, split_len)
    o_part = torch.empty((h * n_splits, block_d), device=q.device, dtype=torch.float32)
    lse_part = torch.empty((h * n_splits,), device=q.device, dtype=torch.float32)
    out = torch.empty((1, 1, h, d), device=q.device, dtype=q.dtype)
    sc = (d**-0.5 if scale is None else scale) * LOG2E
    _decode_split[(hkv, n_splits)](
        q, k, v, pos, o_part, lse_part, q.stride(1), q.stride(3), k.stride(1), k.stride(2), k.stride(3),
        v.stride(1), v.stride(2), v.stride(3), split_len, n_splits, sc, g,
        GP=max(16, triton.next_power_of_2(g)), BLOCK_N=block_n, HEAD_DIM=d, BLOCK_D=block_d,
        DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4,
        num_stages=1 if _interpreting() else 3)
    _merge_splits[(1, h)](o_part, lse_part, out, *out.stride(), n_splits, 1, 0, h,
                          SPLIT_PAD=max(2, triton.next_power_of_2(n_splits)), HEAD_DIM=d, BLOCK_D=block_d,
                          num_warps=4)
    return out
