"""Persistent band kernel for TriangleMix (Hopper, TMA): the steady band tiles of triangle_triton.

A steady tile (rows [row0, row0 + P), row0 - n_local + 1 >= n_init) sees the sinks [0, n_init) and the window
[row0 - n_local + 1, row0 + P - 1]; the sinks never fall inside the window. So every steady tile does the same
work: ceil(n_init / BLOCK_N) sink blocks, then ceil((n_local + P - 1) / BLOCK_N) window blocks starting at the
(unaligned, TMA-loaded) first window key, all in one key-block loop masked by one cheap range test. With a single
inner loop whose bounds do not depend on the tile, `tl.range(..., flatten=True)` fuses the persistent tile loop
and the key-block loop into one software-pipelined loop, so the next tile's K/V loads are issued under this
tile's last blocks and epilogue.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softmax_step(acc, l_i, m_i, qk, keep, v, qk_scale):
    """One online-softmax update with the keys of qk [BLOCK_M, N] where keep, values v [N, BLOCK_D]."""
    qk = tl.where(keep, qk * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key seen yet
    p = tl.math.exp2(qk - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.jit
def _band_persistent(Q, Kd, Vd, Out,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_ob, stride_om, stride_oh, stride_od,
                     S, q0, row_lo, band_end, n_tiles, n_total, n_progs, n_sink_blocks, n_blocks,
                     n_init, n_local, qk_scale, G, HKV, NCHUNK,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GP: tl.constexpr,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FLATTEN: tl.constexpr):
    """Program pid does tiles pid, pid + n_progs, ... of the n_total steady tiles (rows from row_lo)."""
    P: tl.constexpr = BLOCK_M // GP
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    d_ok = offs_d < HEAD_DIM
    for t in tl.range(pid, n_total, n_progs, flatten=FLATTEN):
        tile = t % n_tiles  # consecutive programs take neighbouring tiles of one kv head: K/V stay in L2
        bhc = t // n_tiles
        row0 = row_lo + tile * P
        chunk = bhc % NCHUNK
        kvh = (bhc // NCHUNK) % HKV
        b = bhc // (NCHUNK * HKV)
        g = chunk * GP + offs_m // P  # query head within the kv group, per row
        pos = row0 + offs_m % P  # global position, per row
        row_ok = (g < G) & (pos < band_end)
        h = kvh * G + g
        q_ptrs = Q + b * stride_qb + h[:, None] * stride_qh + (pos - q0)[:, None] * stride_qm \
            + offs_d[None, :] * stride_qd
        if HEAD_DIM == BLOCK_D:  # a row-only mask keeps the (pipelined) Q load's live state small
            q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # q: [BLOCK_M, BLOCK_D]
        else:
            q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        kv_row0 = (b * HKV + kvh) * S
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        win_lo = row0 - n_local + 1
        # one loop (flatten fuses only a single inner loop): n_sink_blocks blocks [0, n_init) then the window.
        # key kn is visible iff 0 <= anchor - kn < lim: anchor = n_init - 1, lim = n_init for sink blocks
        # (all sinks are <= p in a steady tile) and anchor = p, lim = n_local for window blocks
        for jb in tl.range(0, n_blocks):
            is_sink = jb < n_sink_blocks
            start = tl.where(is_sink, jb * BLOCK_N, win_lo + (jb - n_sink_blocks) * BLOCK_N)
            qk = tl.dot(q, tl.trans(Kd.load([kv_row0 + start, 0])))  # qk: [BLOCK_M, BLOCK_N]
            anchor = tl.where(is_sink, n_init - 1, pos)
            lim = tl.where(is_sink, n_init, n_local)
            dist = (anchor - start)[:, None] - offs_n[None, :]
            keep = dist.to(tl.uint32, bitcast=True) < lim.to(tl.uint32, bitcast=True)
            acc, l_i, m_i = _softmax_step(acc, l_i, m_i, qk, keep, Vd.load([kv_row0 + start, 0]), qk_scale)
        o = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
        o_ptrs = Out + b * stride_ob + (pos - q0)[:, None] * stride_om + h[:, None] * stride_oh \
            + offs_d[None, :] * stride_od
        tl.store(o_ptrs, o.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def first_steady_tile(q0: int, p_rows: int, n_init: int, n_local: int) -> int:
    """Index of the first band tile (row0 = q0 + t * p_rows) whose window starts at or after the sinks."""
    return max(0, triton.cdiv(n_local + n_init - 1 - q0, p_rows))


def launch_band_persistent(q, kd, vd, out, s, q0, row_lo, band_end, n_tiles, n_groups, n_init, n_local, qk_scale,
                           g, hkv, n_chunk, block_m, block_n, gp, d, block_d, cfg):
    """Launch over n_tiles steady tiles (rows [row_lo, band_end)) of each of n_groups (b, kv head, chunk)."""
    p_rows = block_m // gp
    n_total = n_tiles * n_groups
    n_progs = max(1, min(n_total, cfg.get("ctas_per_sm", 2) * torch_sms(q)))
    n_sink = triton.cdiv(n_init, block_n)
    maxnreg = cfg.get("p_maxnreg", cfg.get("maxnreg"))  # p_*: the persistent kernel's own overrides
    n_blocks = n_sink + triton.cdiv(n_local + p_rows - 1, block_n)
    return _band_persistent[(n_progs,)](
        q, kd, vd, out, *q.stride(), *out.stride(),
        s, q0, row_lo, band_end, n_tiles, n_total, n_progs, n_sink, n_blocks,
        n_init, n_local, qk_scale, g, hkv, n_chunk,
        BLOCK_M=block_m, BLOCK_N=block_n, GP=gp, HEAD_DIM=d, BLOCK_D=block_d,
        FLATTEN=bool(cfg.get("flatten", True)), num_warps=cfg["num_warps"],
        num_stages=cfg.get("p_stages", cfg["num_stages"]), **({"maxnreg": maxnreg} if maxnreg else {}),
    )


def torch_sms(t) -> int:
    import torch

    return torch.cuda.get_device_properties(t.device).multi_processor_count if t.is_cuda else 4
