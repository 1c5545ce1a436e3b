"""TriangleMix attention in Triton: one launch for the sink+local band and split-K last rows, native GQA.

Each program packs GP query heads of one kv head into its BLOCK_M rows (GP heads x P positions), so a
K/V tile is read once for the whole group. Band rows run sink blocks, masked edge blocks and unmasked
middle blocks of the local window (half-width EDGE_N blocks at both window ends trim the keys computed
per row); the last rows (p >= total_len - last_n) are split along the keys into
fp32 partials that a small second kernel merges by log-sum-exp. On Hopper K/V come through TMA
descriptors and maxnreg=128 lets two CTAs share an SM.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
last_compiled: dict = {}  # the last launched main kernel (bench reads n_regs / n_spills from it)


@triton.jit
def _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                Kd, Vd, kv_row0, offs_d, pos, lo, hi, kv_hi, qk_scale, n_init, n_local,
                MASK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr, USE_TMA: tl.constexpr):
    """Online softmax over keys [lo, hi). MASK: 0 none, 1 triangle band (keys j <= p only, so kv_hi is implied),
    2 causal with keys >= kv_hi dropped.

    USE_TMA: K/V tiles come from [B*Hkv*S, D] tensor descriptors Kd/Vd (row kv_row0 + j) instead of pointers;
    rows past S there belong to the next head, so edge blocks rely on the score mask (p = 0).
    """
    offs_n = tl.arange(0, BLOCK_N)
    d_ok = offs_d < HEAD_DIM
    for start in tl.range(lo, hi, BLOCK_N):
        start = tl.multiple_of(start, BLOCK_N)
        kn = start + offs_n
        k_ptrs = k_base + kn[None, :] * stride_kn + offs_d[:, None] * stride_kd  # kT: [BLOCK_D, BLOCK_N]
        v_ptrs = v_base + kn[:, None] * stride_vn + offs_d[None, :] * stride_vd  # v: [BLOCK_N, BLOCK_D]
        if USE_TMA:
            k = tl.trans(Kd.load([kv_row0 + start, 0]))
        elif MASK == 0:
            if HEAD_DIM == BLOCK_D:
                k = tl.load(k_ptrs)
            else:
                k = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs, mask=(kn[None, :] < kv_hi) & d_ok[:, None], other=0.0)
        qk = tl.dot(q, k, input_precision=DOT_PREC)  # qk: [BLOCK_M, BLOCK_N]
        if MASK == 0:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        else:
            if MASK == 1:  # j <= p and (p - j < n_local or j < n_init): one unsigned test per score
                lim = tl.where(kn < n_init, 0x7FFFFFFF, n_local).to(tl.uint32)
                keep = (pos[:, None] - kn[None, :]).to(tl.uint32) < lim[None, :]
            else:
                keep = (kn[None, :] <= pos[:, None]) & (kn[None, :] < kv_hi)
            qk = tl.where(keep, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if USE_TMA:
            v = Vd.load([kv_row0 + start, 0])
        elif MASK == 0:
            if HEAD_DIM == BLOCK_D:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        else:
            v = tl.load(v_ptrs, mask=(kn[:, None] < kv_hi) & d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _triangle_fwd(Q, K, V, Kd, Vd, Kd2, Vd2, Out, OPart, LsePart,
                  stride_qb, stride_qh, stride_qm, stride_qd,
                  stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd,
                  stride_ob, stride_om, stride_oh, stride_od,
                  S, q0, band_end, n_band_tiles, n_last_tiles, n_splits, split_len, n_split_progs,
                  n_init, n_local, qk_scale, G, HKV, NCHUNK,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINK_N: tl.constexpr, GP: tl.constexpr,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
                  SPLIT_LOOPS: tl.constexpr, USE_TMA: tl.constexpr,
                  EDGE_N: tl.constexpr):
    """Programs [0, n_split_progs) do split-K last rows, the rest do band tiles (rows [q0, band_end))."""
    P: tl.constexpr = BLOCK_M // GP
    pid = tl.program_id(0)
    is_split = pid < n_split_progs
    split = pid % n_splits
    rest = tl.where(is_split, pid // n_splits, pid - n_split_progs)
    n_tiles = tl.where(is_split, n_last_tiles, n_band_tiles)
    tile = rest % n_tiles
    bhc = rest // n_tiles
    row0 = tl.where(is_split, band_end, q0) + tile * P
    row_end = tl.where(is_split, S, band_end)
    chunk = bhc % NCHUNK
    kvh = (bhc // NCHUNK) % HKV
    b = bhc // (NCHUNK * HKV)

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    g = chunk * GP + offs_m // P  # query head within the kv group, per row
    pos = row0 + offs_m % P  # global position, per row
    row_ok = (g < G) & (pos < row_end)
    h = kvh * G + g
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * stride_qb + h[:, None] * stride_qh + (pos - q0)[:, None] * stride_qm \
        + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # q: [BLOCK_M, BLOCK_D]
    kv_row0 = (b * HKV + kvh) * S
    k_base = K + b * stride_kb + kvh * stride_kh
    v_base = V + b * stride_vb + kvh * stride_vh

    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: a row with no key yet gets p = 0, not NaN
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    p_last = tl.minimum(row0 + P, row_end) - 1
    if is_split:
        ks = split * split_len
        ke = tl.minimum(ks + split_len, p_last + 1)
        full_end = tl.maximum(ks, tl.minimum(ke, (row0 + 1) // BLOCK_N * BLOCK_N))
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, ks, full_end, ke, qk_scale, n_init,
                                    n_local, 0, BLOCK_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, full_end, ke, ke, qk_scale, n_init,
                                    n_local, 2, BLOCK_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        has = l_i > 0.0
        lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        n_last = S - band_end
        part = (((b * HKV * G + h) * n_last + (pos - band_end)) * n_splits + split)  # part: [BLOCK_M]
        tl.store(LsePart + part, lse, mask=row_ok)
        tl.store(OPart + part[:, None] * BLOCK_D + offs_d[None, :], o, mask=row_ok[:, None])
    else:
        # keys [lo, hi) of the window (lo aligned down to EDGE_N), sinks [0, sink_hi) before them
        hi = p_last + 1
        lo = tl.maximum(row0 - n_local + 1, 0) // EDGE_N * EDGE_N
        sink_hi = tl.minimum(n_init, lo)
        # sinks: with n_init := sink_hi and n_local := 0 the mask keeps exactly the keys [0, sink_hi)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, 0, sink_hi, sink_hi, qk_scale, sink_hi,
                                    0, 1, SINK_N, HEAD_DIM, BLOCK_D, DOT_PREC, False)
        # EDGE_N < BLOCK_N: an EDGE_N-key head piece [lo, lo_b) and tail piece [main_hi, hi) around the
        # BLOCK_N-aligned main range [lo_b, main_hi), so that at most EDGE_N - 1 keys are wasted per side
        lo_b = tl.minimum((lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N, hi)
        main_hi = lo_b + tl.maximum((hi + EDGE_N - 1) // EDGE_N * EDGE_N - lo_b, 0) // BLOCK_N * BLOCK_N
        if EDGE_N < BLOCK_N:
            acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                        stride_vd, Kd2, Vd2, kv_row0, offs_d, pos, lo, lo_b, hi, qk_scale, n_init,
                                        n_local, 1, EDGE_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        if SPLIT_LOOPS:  # masked left edge, unmasked middle, masked diagonal
            full_lo = (tl.maximum(p_last - n_local + 1, lo_b) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
            mid_lo = tl.minimum(full_lo, main_hi)
            mid_hi = tl.maximum(mid_lo, tl.minimum((row0 + 1) // BLOCK_N * BLOCK_N, main_hi))
        else:  # one masked loop over the whole window
            mid_lo = main_hi
            mid_hi = main_hi
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, lo_b, mid_lo, hi, qk_scale, n_init,
                                    n_local, 1, BLOCK_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, mid_lo, mid_hi, hi, qk_scale, n_init,
                                    n_local, 0, BLOCK_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                    stride_vd, Kd, Vd, kv_row0, offs_d, pos, mid_hi, main_hi, hi, qk_scale, n_init,
                                    n_local, 1, BLOCK_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        if EDGE_N < BLOCK_N:
            acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                        stride_vd, Kd2, Vd2, kv_row0, offs_d, pos, main_hi, hi, hi, qk_scale,
                                        n_init, n_local, 1, EDGE_N, HEAD_DIM, BLOCK_D, DOT_PREC, USE_TMA)
        o = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
        o_ptrs = Out + b * stride_ob + (pos - q0)[:, None] * stride_om + h[:, None] * stride_oh \
            + offs_d[None, :] * stride_od
        tl.store(o_ptrs, o.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _merge_splits(OPart, LsePart, Out, stride_ob, stride_om, stride_oh, stride_od,
                  n_splits, n_last, i0, H,
                  SPLIT_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Log-sum-exp merge of the split-K partials of one (row, b*h) into Out[b, i0 + row, h]."""
    row = tl.program_id(0)
    bh = tl.program_id(1)
    offs_s = tl.arange(0, SPLIT_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < n_splits
    base = (bh * n_last + row) * n_splits
    lse = tl.load(LsePart + base + offs_s, mask=s_ok, other=float("-inf"))  # lse: [SPLIT_PAD]
    m = tl.max(lse, 0)
    w = tl.math.exp2(lse - m)
    o = tl.load(OPart + (base + offs_s)[:, None] * BLOCK_D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    res = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)  # res: [BLOCK_D]
    o_ptrs = Out + (bh // H) * stride_ob + (i0 + row) * stride_om + (bh % H) * stride_oh + offs_d * stride_od
    tl.store(o_ptrs, res.to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def default_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Fixed launch config per (head_dim, dtype, arch): no autotuning, no per-length compiles."""
    if _interpreting() or device.type != "cuda":
        return {"block_m": 32, "block_n": 16, "num_warps": 4, "num_stages": 1, "splits_per_sm": 2,
                "split_loops": True}
    hopper = torch.cuda.get_device_capability(device)[0] >= 9
    block_d = max(16, triton.next_power_of_2(head_dim))
    if dtype == torch.float32 or block_d > 128:
        cfg = {"block_m": 64, "block_n": 32, "num_warps": 4, "num_stages": 2}
    elif block_d <= 64:
        cfg = {"block_m": 128, "block_n": 64, "num_warps": 4, "num_stages": 3}
    elif hopper:  # 128 regs x 8 warps and 2 stages: two CTAs per SM hide each other's prologue/epilogue
        cfg = {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 2, "maxnreg": 128, "edge_n": 32}
    else:
        cfg = {"block_m": 128, "block_n": 64, "num_warps": 8, "num_stages": 3}
    return {**cfg, "splits_per_sm": 2, "split_loops": True, "tma": hopper}


def _tma_ok(k: torch.Tensor, v: torch.Tensor) -> bool:
    """2D [B*Hkv*S, D] descriptors need flattenable (b, h, s) strides, a unit last stride, 16-byte alignment."""
    hkv, s = k.shape[1], k.shape[2]
    return all(t.stride(3) == 1 and t.stride(1) == s * t.stride(2) and t.stride(0) == hkv * t.stride(1)
               and t.data_ptr() % 16 == 0 and (t.stride(2) * t.element_size()) % 16 == 0 for t in (k, v))


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, n_local: int, last_n: int,
           total: int) -> None:
    if not (q.is_cuda or _interpreting()):
        raise ValueError("triangle_attention_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q must be [B, H, Lq, D] and k/v [B, Hkv, S, D]")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise ValueError(f"q/k/v must share one dtype of {_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k, v must be on one device")
    (b, h, lq, d), (bk, hkv, s, dk) = q.shape, k.shape
    if tuple(v.shape) != (bk, hkv, s, dk) or bk != b or dk != d:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if hkv == 0 or h % hkv:
        raise ValueError(f"query heads ({h}) must be a multiple of kv heads ({hkv})")
    if lq > s:
        raise ValueError(f"more queries ({lq}) than keys ({s})")
    if not 1 <= d <= 256:
        raise ValueError(f"head_dim {d} not supported (1..256; padded up to a power of two)")
    if n_init < 0 or last_n < 0 or n_local < 1:
        raise ValueError("need n_init >= 0, last_n >= 0 and n_local >= 1")
    if total < s:
        raise ValueError(f"total_len ({total}) is shorter than the keys ({s})")


def triangle_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int = 8, n_local: int = 512,
    last_n: int = 128, total_len: int | None = None, scale: float | None = None,
    out: torch.Tensor | None = None, config: dict | None = None,
) -> torch.Tensor:
    """Triangle attention: q [B,H,Lq,D], k/v [B,Hkv,S,D] -> out [B, Lq, H, D] (contiguous, q's dtype)."""
    total = k.shape[2] if total_len is None else int(total_len)
    _check(q, k, v, n_init, n_local, last_n, total)
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if out is None:
        out = torch.empty((b, lq, h, d), device=q.device, dtype=q.dtype)
    elif tuple(out.shape) != (b, lq, h, d) or out.dtype != q.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous [B, Lq, H, D] tensor of q's dtype")
    if lq == 0 or b == 0:
        return out
    cfg = {**default_config(d, q.dtype, q.device), **(config or {})}
    block_m, block_n = cfg["block_m"], cfg["block_n"]
    block_d = max(16, triton.next_power_of_2(d))
    g = h // hkv
    gp = min(triton.next_power_of_2(g), block_m)
    n_chunk = triton.cdiv(g, gp)
    p_rows = block_m // gp
    q0 = s - lq
    band_end = min(max(q0, total - last_n), s)  # rows [q0, band_end) are band rows, [band_end, s) last rows
    n_band_tiles = triton.cdiv(band_end - q0, p_rows)
    n_last = s - band_end
    n_last_tiles = triton.cdiv(n_last, p_rows)
    units = n_last_tiles * b * hkv * n_chunk
    n_splits, split_len = 1, s
    o_part = lse_part = out
    if n_last:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else 4
        want = max(1, min(64, triton.cdiv(cfg["splits_per_sm"] * sms, units), triton.cdiv(s, block_n)))
        split_len = triton.cdiv(triton.cdiv(s, want), block_n) * block_n
        n_splits = triton.cdiv(s, split_len)
        o_part = torch.empty((b * h * n_last * n_splits, block_d), device=q.device, dtype=torch.float32)
        lse_part = torch.empty((b * h * n_last * n_splits,), device=q.device, dtype=torch.float32)
    n_split_progs = units * n_splits if n_last else 0
    edge_n = cfg.get("edge_n") or block_n
    if block_n % edge_n or edge_n < (1 if _interpreting() else 16):
        raise ValueError(f"edge_n ({edge_n}) must divide block_n ({block_n}) and be >= 16")
    sink_n = min(block_n, max(16, triton.next_power_of_2(max(n_init, 1))))
    kd, vd, use_tma = k, v, bool(cfg.get("tma")) and _tma_ok(k, v)
    kd2, vd2 = kd, vd
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        rows = b * hkv * s
        kd = TensorDescriptor(k, [rows, d], [k.stride(2), 1], [block_n, block_d])
        vd = TensorDescriptor(v, [rows, d], [v.stride(2), 1], [block_n, block_d])
        kd2 = TensorDescriptor(k, [rows, d], [k.stride(2), 1], [edge_n, block_d])
        vd2 = TensorDescriptor(v, [rows, d], [v.stride(2), 1], [edge_n, block_d])
    sc = d**-0.5 if scale is None else scale
    grid = (n_split_progs + n_band_tiles * b * hkv * n_chunk,)
    if grid[0]:
        last_compiled["fwd"] = _triangle_fwd[grid](
            q, k, v, kd, vd, kd2, vd2, out, o_part, lse_part, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            s, q0, band_end, max(n_band_tiles, 1), max(n_last_tiles, 1), n_splits, split_len, n_split_progs,
            n_init, n_local, sc * LOG2E, g, hkv, n_chunk,
            BLOCK_M=block_m, BLOCK_N=block_n, SINK_N=sink_n,
            GP=gp, HEAD_DIM=d, BLOCK_D=block_d, DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
            SPLIT_LOOPS=cfg["split_loops"], USE_TMA=use_tma, EDGE_N=edge_n,
            num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"], **({"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}),
        )
    if n_last:
        _merge_splits[(n_last, b * h)](
            o_part, lse_part, out, *out.stride(), n_splits, n_last, band_end - q0, h,
            SPLIT_PAD=max(2, triton.next_power_of_2(n_splits)), HEAD_DIM=d, BLOCK_D=block_d, num_warps=4,
        )
    return out
