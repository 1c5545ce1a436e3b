"""TriangleMix band attention in Gluon (Hopper): explicit async wgmma so the softmax overlaps the tensor cores.

Only the band rows (p < total_len - last_n: sinks j < n_init plus the window p - n_local < j <= p) run here;
`triangle_triton.triangle_attention_triton` dispatches to this kernel (config `gluon=True`) and keeps its
Triton split-K programs + LSE merge for the last rows.

One program = BLOCK_M query rows = GP query heads of one kv head x P consecutive positions (GQA packing as in
the Triton kernel), so every K/V tile in shared memory serves the whole group. Per program:
  - Q: pointer loads (q may be strided) -> NVMMA-swizzled shared memory, the A operand of every QK^T.
  - sinks: one SINK_N-key block (TMA), keys [0, sink_hi) with sink_hi = min(n_init, window start).
  - window: n_win_blocks BLOCK_N-key blocks (BLOCK_N 32 by default: 17 blocks, 544 keys for P=32) starting at
    the UNALIGNED first key row0 - n_local + 1 (TMA takes any row coordinate; rows < 0 or past the tensor come
    back as zeros and are masked). With P <= BLOCK_N only the first and the last block need a mask; the rest
    take the mask-free softmax (CTA-uniform branch; every block gets the exact mask test, so any P is correct).
  - K and V come through separate NUM_BUF-deep rings with one mbarrier each, so a K slot is refilled as soon
    as its QK^T retired and a V slot as soon as its PV retired.
  - intra-warpgroup pipelining (FA3): iteration t issues QK^T(t) and PV(t-1) back to back as async wgmma,
    waits for QK^T(t) only (num_outstanding=1), runs the online softmax of block t on the CUDA cores while
    PV(t-1) still runs on the tensor cores, then waits for PV(t-1) and rescales the accumulator.
Status (v6 in docs/kernel-notes.md): correct, but 6-10% slower than the Triton band on the H100, so opt-in only.
"""

from __future__ import annotations

import torch
import triton

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    HAVE_GLUON = True
except ImportError:  # older triton: the dispatcher falls back to the Triton kernel
    HAVE_GLUON = False

last_compiled: dict = {}


def _jit(fn):
    return gluon.jit(fn) if HAVE_GLUON else fn


@_jit
def _softmax_block(s, m_i, l_i, cols, pos, start, sink_hi, n_init, n_local, qk_scale, MASKED: gl.constexpr):
    """Online-softmax step of one key block: s [BLOCK_M, BLOCK_N] raw scores -> (p, m_new, alpha, l_new).

    MASKED: key j = start + col is kept iff j <= p, j >= sink_hi (keys below are the sink block's) and
    (p - j < n_local or j < n_init); rows that have seen no key keep m = -inf (exp2 then uses 0 as the max).
    """
    if MASKED:
        jj = gl.expand_dims(start + cols, 0)  # jj: [1, BLOCK_N] key positions
        pp = gl.expand_dims(pos, 1)  # pp: [BLOCK_M, 1] query positions
        keep = (jj <= pp) & (jj >= sink_hi) & ((pp - jj < n_local) | (jj < n_init))
        s = gl.where(keep, s * qk_scale, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1))
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(s - gl.expand_dims(m_safe, 1))
        alpha = gl.exp2(m_i - m_safe)
    else:
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
        alpha = gl.exp2(m_i - m_new)
    l_new = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, alpha, l_new


@_jit
def _load_block(desc, bar, dst, row, pred):
    """TMA one [rows, HEAD_DIM] tile at global row `row` into dst, arriving on bar (skipped when not pred)."""
    mbarrier.expect(bar, desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc, [row, 0], bar, dst, pred=pred)


@_jit
def _triangle_band_fwd(Q, Out, k_desc, v_desc, ks_desc, vs_desc,
                       stride_qb, stride_qh, stride_qm, stride_qd,
                       stride_ob, stride_om, stride_oh, stride_od,
                       S, q0, band_end, n_tiles, n_win_blocks, n_init, n_local, qk_scale, G, HKV, NCHUNK,
                       BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr,
                       HEAD_DIM: gl.constexpr, NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
                       Q_LAYOUT: gl.constexpr, num_warps: gl.constexpr):
    """Band rows [q0, band_end): one program per (tile of P positions, batch, kv head, head chunk)."""
    P: gl.constexpr = BLOCK_M // GP
    dtype: gl.constexpr = k_desc.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    z_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, SINK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    io_layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[32 // TPW_D, TPW_D],
                                               warps_per_cta=[num_warps, 1], order=[1, 0])
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    pid = gl.program_id(0)
    tile = pid % n_tiles
    bhc = pid // n_tiles
    chunk = bhc % NCHUNK
    kvh = (bhc // NCHUNK) % HKV
    b = bhc // (NCHUNK * HKV)
    row0 = q0 + tile * P

    # ---- Q tile -> shared memory (rows: head g = chunk*GP + i // P, position row0 + i % P)
    offs_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, io_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, io_layout))
    g = chunk * GP + offs_m // P
    pos_io = row0 + offs_m % P
    row_ok = (g < G) & (pos_io < band_end)
    h = kvh * G + g
    io_mask = gl.expand_dims(row_ok, 1) & gl.expand_dims(offs_d < HEAD_DIM, 0)
    q_ptrs = Q + b.to(gl.int64) * stride_qb + gl.expand_dims(h * stride_qh + (pos_io - q0) * stride_qm, 1) \
        + gl.expand_dims(offs_d * stride_qd, 0)
    q = gl.load(q_ptrs, mask=io_mask, other=0.0)  # q: [BLOCK_M, HEAD_DIM]
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], Q_LAYOUT, q)

    # ---- K/V rings, sink tiles, barriers
    k_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], v_desc.layout)
    ks_smem = gl.allocate_shared_memory(dtype, [SINK_N, HEAD_DIM], ks_desc.layout)
    vs_smem = gl.allocate_shared_memory(dtype, [SINK_N, HEAD_DIM], vs_desc.layout)
    bar_k = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    bar_v = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    bar_s = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_BUF):
        mbarrier.init(bar_k.index(i), count=1)
        mbarrier.init(bar_v.index(i), count=1)
    mbarrier.init(bar_s, count=1)
    fence_async_shared()

    # ---- tile geometry: window keys [lo, lo + n_win_blocks * BLOCK_N), sinks [0, sink_hi)
    lo = row0 - n_local + 1
    sink_hi = gl.minimum(n_init, gl.maximum(lo, 0))
    i_first = gl.maximum(sink_hi - lo, 0) // BLOCK_N  # blocks wholly below max(0, sink_hi) are skipped
    nblk = n_win_blocks - i_first
    win0 = lo + i_first * BLOCK_N
    kv_row0 = (b * HKV + kvh) * S

    mbarrier.expect(bar_s, 2 * ks_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(ks_desc, [kv_row0, 0], bar_s, ks_smem)
    tma.async_copy_global_to_shared(vs_desc, [kv_row0, 0], bar_s, vs_smem)
    for i in gl.static_range(NUM_BUF):
        _load_block(k_desc, bar_k.index(i), k_smem.index(i), kv_row0 + win0 + i * BLOCK_N, i < nblk)
        _load_block(v_desc, bar_v.index(i), v_smem.index(i), kv_row0 + win0 + i * BLOCK_N, i < nblk)

    # ---- sink block (synchronous; small): m, l and P of keys [0, sink_hi)
    cols_z = gl.arange(0, SINK_N, layout=gl.SliceLayout(0, z_layout))
    mbarrier.wait(bar_s, 0)
    z = warpgroup_mma(q_smem, ks_smem.permute((1, 0)), gl.zeros([BLOCK_M, SINK_N], gl.float32, z_layout),
                      use_acc=False)
    z = gl.where(gl.expand_dims(cols_z < sink_hi, 0), z * qk_scale, float("-inf"))
    m_z = gl.max(z, axis=1)
    pz = gl.exp2(z - gl.expand_dims(gl.where(m_z == float("-inf"), 0.0, m_z), 1))
    l_z = gl.sum(pz, axis=1)
    pz = gl.convert_layout(pz.to(dtype), p_layout)
    m_i = gl.convert_layout(m_z, row_s)
    l_i = gl.convert_layout(l_z, row_s)

    rows_s = gl.arange(0, BLOCK_M, layout=row_s)
    pos = row0 + rows_s % P
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)

    # ---- window block 0: QK^T(0) and PV(sinks) in flight together
    mbarrier.wait(bar_k.index(0), 0)
    s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    acc_tok = warpgroup_mma(pz, vs_smem, gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout), use_acc=False,
                            is_async=True)
    s = warpgroup_mma_wait(1, deps=(s_tok,))
    _load_block(k_desc, bar_k.index(0), k_smem.index(0), kv_row0 + win0 + NUM_BUF * BLOCK_N, NUM_BUF < nblk)
    full = (win0 + BLOCK_N - 1 <= row0) & (row0 + P - 1 - win0 < n_local) & (win0 >= sink_hi)
    if full:
        p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, win0, sink_hi, n_init, n_local, qk_scale,
                                            False)
    else:
        p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, win0, sink_hi, n_init, n_local, qk_scale,
                                            True)
    acc, pz = warpgroup_mma_wait(0, deps=(acc_tok, pz))
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    p_op = gl.convert_layout(p.to(dtype), p_layout)

    # ---- steady state: QK^T(t) | PV(t-1) async, softmax(t) under PV(t-1)
    for t in range(1, nblk):
        slot = t % NUM_BUF
        pslot = (t - 1) % NUM_BUF
        mbarrier.wait(bar_k.index(slot), (t // NUM_BUF) & 1)
        s_tok = warpgroup_mma(q_smem, k_smem.index(slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        mbarrier.wait(bar_v.index(pslot), ((t - 1) // NUM_BUF) & 1)
        acc_tok = warpgroup_mma(p_op, v_smem.index(pslot), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        _load_block(k_desc, bar_k.index(slot), k_smem.index(slot), kv_row0 + win0 + (t + NUM_BUF) * BLOCK_N,
                    t + NUM_BUF < nblk)
        start = win0 + t * BLOCK_N
        full = (start + BLOCK_N - 1 <= row0) & (row0 + P - 1 - start < n_local) & (start >= sink_hi)
        if full:
            p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, start, sink_hi, n_init, n_local,
                                                qk_scale, False)
        else:
            p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, start, sink_hi, n_init, n_local,
                                                qk_scale, True)
        acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
        _load_block(v_desc, bar_v.index(pslot), v_smem.index(pslot),
                    kv_row0 + win0 + (t - 1 + NUM_BUF) * BLOCK_N, t - 1 + NUM_BUF < nblk)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        p_op = gl.convert_layout(p.to(dtype), p_layout)

    # ---- last PV, epilogue
    last = nblk - 1
    mbarrier.wait(bar_v.index(last % NUM_BUF), (last // NUM_BUF) & 1)
    acc_tok = warpgroup_mma(p_op, v_smem.index(last % NUM_BUF), acc, is_async=True)
    acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
    for i in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bar_k.index(i))
        mbarrier.invalidate(bar_v.index(i))
    mbarrier.invalidate(bar_s)

    l_o = gl.convert_layout(l_i, row_o)
    o = acc / gl.expand_dims(gl.where(l_o > 0.0, l_o, 1.0), 1)
    o = gl.convert_layout(o.to(dtype), io_layout)
    o_ptrs = Out + b.to(gl.int64) * stride_ob + gl.expand_dims((pos_io - q0) * stride_om + h * stride_oh, 1) \
        + gl.expand_dims(offs_d * stride_od, 0)
    gl.store(o_ptrs, o, mask=io_mask)


_GL_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int) -> bool:
    """Shapes this kernel handles: Hopper (sm_90), bf16/fp16, head_dim 64 or 128, <= 128 sinks, TMA-able K/V."""
    if not (HAVE_GLUON and q.is_cuda and q.dtype in _GL_DTYPES and q.shape[-1] in (64, 128) and n_init <= 128):
        return False
    if torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    hkv, s = k.shape[1], k.shape[2]
    return all(t.stride(3) == 1 and t.stride(1) == s * t.stride(2) and t.stride(0) == hkv * t.stride(1)
               and t.data_ptr() % 16 == 0 and (t.stride(2) * t.element_size()) % 16 == 0 for t in (k, v))


def triangle_band_gluon(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, band_end: int,
                        n_init: int, n_local: int, scale: float, config: dict | None = None):
    """Band rows [S - Lq, band_end) of triangle attention into out [B, Lq, H, D]; q [B,H,Lq,D], k/v [B,Hkv,S,D].

    config: block_m (128), block_n (32), num_warps (8), num_buf (2), maxnreg (None). Returns the kernel handle.
    block_n 32 (v6 run 2): 127 registers, 74 KB shared -> two 8-warp CTAs per SM, 544 + 16 keys per row.
    """
    cfg = {"block_m": 128, "block_n": 32, "num_warps": 8, "num_buf": 2, **(config or {})}
    if not supported(q, k, v, n_init):
        raise ValueError("triangle_band_gluon: unsupported input (needs Hopper, bf16/fp16, D 64/128, TMA-able K/V)")
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if h % hkv or tuple(out.shape) != (b, lq, h, d) or not 0 <= s - lq <= s or band_end > s:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, out {tuple(out.shape)}, "
                         f"band_end {band_end}")
    q0 = s - lq
    if band_end <= q0 or b == 0:
        return None
    block_m, block_n, warps, nbuf = cfg["block_m"], cfg["block_n"], cfg["num_warps"], cfg["num_buf"]
    if block_m % (16 * warps) or warps not in (4, 8) or block_n not in (16, 32, 64, 128) or nbuf < 1:
        raise ValueError(f"bad gluon config {cfg}: block_m a multiple of 16 x num_warps (4 or 8), block_n 16..128")
    g = h // hkv
    gp = min(triton.next_power_of_2(g), block_m)
    n_chunk = triton.cdiv(g, gp)
    p_rows = block_m // gp
    n_tiles = triton.cdiv(band_end - q0, p_rows)
    n_win_blocks = triton.cdiv(n_local + p_rows - 1, block_n)
    sink_n = max(16, triton.next_power_of_2(max(n_init, 1)))
    gdt = getattr(gl, _GL_DTYPES[q.dtype])
    rows = b * hkv * s

    def desc(t, n):
        lay = gl.NVMMASharedLayout.get_default_for([n, d], gdt)
        return TensorDescriptor(t, [rows, d], [t.stride(2), 1], [n, d], lay)

    grid = (n_tiles * b * hkv * n_chunk,)
    kern = _triangle_band_fwd[grid](
        q, out, desc(k, block_n), desc(v, block_n), desc(k, sink_n), desc(v, sink_n),
        *q.stride(), *out.stride(),
        s, q0, band_end, n_tiles, n_win_blocks, n_init, n_local, scale * 1.4426950408889634, g, hkv, n_chunk,
        BLOCK_M=block_m, BLOCK_N=block_n, SINK_N=sink_n, GP=gp, HEAD_DIM=d, NUM_BUF=nbuf,
        TPW_D=min(32, d // 8), Q_LAYOUT=gl.NVMMASharedLayout.get_default_for([block_m, d], gdt),
        num_warps=warps, **({"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}),
    )
    last_compiled["band"] = kern
    return kern
