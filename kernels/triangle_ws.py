"""Persistent, warp-specialized TriangleMix band kernel in Gluon (Hopper), the FA3 layout on the band's short tiles.

A tile is 128 query rows = GP heads of one kv head x PT = 128 / GP consecutive positions (GQA packing as in
the Triton kernel). One CTA per SM walks tiles tile_id = pid, pid + grid, ... (positions fastest, so the CTAs
running at one time share their window K/V in L2). Three partitions:
  - producer (1 warp): for every tile, TMA the sink block into a 2-deep sink buffer and the tile's window
    blocks into a NUM_BUF-deep K/V ring (ready/empty mbarrier pairs); the ring runs on across tiles, so the
    next tile's blocks load while the consumers finish this one.
  - two consumer warpgroups (4 warps each, 64 rows of the tile each): Q by cp.async into a 2-deep buffer, one
    tile ahead; the sink block; then the v6 pipelined window loop (QK^T(t) and PV(t-1) as
    async wgmma, softmax(t) on the CUDA cores while PV(t-1) runs); epilogue stores straight from registers.
Window geometry per tile is v6's: blocks of BLOCK_N keys from the unaligned first key row0 - n_local + 1,
masked only where a block is not wholly inside every row's window (warpgroup-uniform branch).
"""

from __future__ import annotations

import torch
import triton

from tmix_kernels.triangle_gluon import _GL_DTYPES, HAVE_GLUON, _jit, _softmax_block, supported

if HAVE_GLUON:
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.language.nvidia.ampere import async_copy
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

last_compiled: dict = {}
# consumer warpgroups -> (kernel maxnreg over the 4 x (NC + 1) launched warps, registers per consumer warpgroup)
_REGS = {2: (168, 240), 3: (128, 160), 4: (96, 120)}
ROWS_PY = 64  # query rows per consumer warpgroup (one wgmma M=64 slab per warp quad)


@_jit
def _tile(tile_id, n_ptiles, q0, HKV, NCHUNK, PT: gl.constexpr):
    """tile_id -> (batch, kv head, head chunk, first position); positions vary fastest."""
    bhc = tile_id // n_ptiles
    return bhc // (NCHUNK * HKV), (bhc // NCHUNK) % HKV, bhc % NCHUNK, q0 + (tile_id % n_ptiles) * PT


@_jit
def _geom(row0, n_init, n_local, n_win, BLOCK_N: gl.constexpr):
    """Sink bound, first window key and window block count of the tile starting at position row0."""
    lo = row0 - n_local + 1
    sink_hi = gl.minimum(n_init, gl.maximum(lo, 0))
    i_first = gl.maximum(sink_hi - lo, 0) // BLOCK_N  # blocks wholly below max(0, sink_hi) are skipped
    return sink_hi, lo + i_first * BLOCK_N, n_win - i_first


@_jit
def _q_fetch(dst, Q, b, kvh, chunk, row0, q0, band_end, G, stride_qb, stride_qh, stride_qm, stride_qd, ok_tile,
             C: gl.constexpr, GP: gl.constexpr, PT: gl.constexpr, HEAD_DIM: gl.constexpr, layout: gl.constexpr):
    """cp.async consumer C's 64 Q rows of a tile into dst (one commit group; rows off the tile stay unread)."""
    ROWS: gl.constexpr = 64
    rr = C * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    g = chunk * GP + rr // PT
    pos = row0 + rr % PT
    ok = (g < G) & (pos < band_end) & ok_tile
    ptrs = Q + b.to(gl.int64) * stride_qb + gl.expand_dims((kvh * G + g) * stride_qh + (pos - q0) * stride_qm, 1) \
        + gl.expand_dims(offs_d, 0)  # stride_qd == 1 (ws_supported)
    async_copy.async_copy_global_to_shared(dst, ptrs, mask=gl.expand_dims(ok, 1) & gl.expand_dims(offs_d >= 0, 0))
    async_copy.commit_group()


@_jit
def _turn_wait(turn, n, C: gl.constexpr, PINGPONG: gl.constexpr):
    """Ping-pong: wait until the previous warpgroup has issued its wgmma (consumer 0 goes first); returns n + 1."""
    if PINGPONG:
        if C == 0:
            mbarrier.wait(turn.index(C), (n & 1) ^ 1)
        else:
            mbarrier.wait(turn.index(C), n & 1)
    return n + 1


@_jit
def _turn_pass(turn, C: gl.constexpr, NC: gl.constexpr, PINGPONG: gl.constexpr):
    """Ping-pong: this warpgroup's wgmma are issued, the next one's turn."""
    if PINGPONG:
        mbarrier.arrive(turn.index((C + 1) % NC), count=1)


@_jit
def _producer(args, C: gl.constexpr, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
              PINGPONG: gl.constexpr, NC: gl.constexpr):
    (Q, Out, k_desc, v_desc, ks_desc, vs_desc, q_smem, k_smem, v_smem, ks_smem, vs_smem,
     k_ready, k_empty, v_ready, v_empty, s_ready, s_empty, turn, stride_qb, stride_qh, stride_qm, stride_qd,
     stride_ob, stride_om, stride_oh, stride_od, S, q0, band_end, n_ptiles, n_work, n_win,
     n_init, n_local, qk_scale, G, HKV, NCHUNK) = args
    ROWS: gl.constexpr = 64
    PT: gl.constexpr = NC * ROWS // GP
    it = 0
    j = 0
    for tile_id in range(gl.program_id(0), n_work, gl.num_programs(0)):
        b, kvh, chunk, row0 = _tile(tile_id, n_ptiles, q0, HKV, NCHUNK, PT)
        sink_hi, win0, nblk = _geom(row0, n_init, n_local, n_win, BLOCK_N)
        kv_row0 = (b * HKV + kvh) * S
        sb = j % 2
        mbarrier.wait(s_empty.index(sb), ((j // 2) & 1) ^ 1)
        mbarrier.expect(s_ready.index(sb), 2 * ks_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(ks_desc, [kv_row0, 0], s_ready.index(sb), ks_smem.index(sb))
        tma.async_copy_global_to_shared(vs_desc, [kv_row0, 0], s_ready.index(sb), vs_smem.index(sb))
        for i in range(nblk):
            slot = it % NUM_BUF
            ph = ((it // NUM_BUF) & 1) ^ 1
            mbarrier.wait(k_empty.index(slot), ph)
            mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [kv_row0 + win0 + i * BLOCK_N, 0], k_ready.index(slot),
                                            k_smem.index(slot))
            mbarrier.wait(v_empty.index(slot), ph)
            mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [kv_row0 + win0 + i * BLOCK_N, 0], v_ready.index(slot),
                                            v_smem.index(slot))
            it += 1
        j += 1


@_jit
def _consumer(args, C: gl.constexpr, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
              PINGPONG: gl.constexpr, NC: gl.constexpr):
    (Q, Out, k_desc, v_desc, ks_desc, vs_desc, q_smem, k_smem, v_smem, ks_smem, vs_smem,
     k_ready, k_empty, v_ready, v_empty, s_ready, s_empty, turn, stride_qb, stride_qh, stride_qm, stride_qd,
     stride_ob, stride_om, stride_oh, stride_od, S, q0, band_end, n_ptiles, n_work, n_win,
     n_init, n_local, qk_scale, G, HKV, NCHUNK) = args
    ROWS: gl.constexpr = 64
    PT: gl.constexpr = NC * ROWS // GP
    dtype: gl.constexpr = k_desc.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    z_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, SINK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    io_layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[32 // TPW_D, TPW_D],
                                               warps_per_cta=[4, 1], order=[1, 0])
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    rows_s = C * ROWS + gl.arange(0, ROWS, layout=row_s)
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    cols_z = gl.arange(0, SINK_N, layout=gl.SliceLayout(0, z_layout))
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    zero_z = gl.zeros([ROWS, SINK_N], gl.float32, z_layout)
    zero_o = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    rr = C * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, io_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, io_layout))

    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    b, kvh, chunk, row0 = _tile(pid, n_ptiles, q0, HKV, NCHUNK, PT)
    _q_fetch(q_smem.index(2 * C), Q, b, kvh, chunk, row0, q0, band_end, G, stride_qb, stride_qh, stride_qm,
             stride_qd, pid < n_work, C, GP, PT, HEAD_DIM, io_layout)
    it = 0
    j = 0
    n = 0
    for tile_id in range(pid, n_work, nprog):
        b, kvh, chunk, row0 = _tile(tile_id, n_ptiles, q0, HKV, NCHUNK, PT)
        sink_hi, win0, nblk = _geom(row0, n_init, n_local, n_win, BLOCK_N)
        # Q of the next tile goes to the other buffer while this one is used (cp.async, no registers held)
        nb, nkvh, nchunk, nrow0 = _tile(tile_id + nprog, n_ptiles, q0, HKV, NCHUNK, PT)
        _q_fetch(q_smem.index(2 * C + (j + 1) % 2), Q, nb, nkvh, nchunk, nrow0, q0, band_end, G, stride_qb,
                 stride_qh, stride_qm, stride_qd, tile_id + nprog < n_work, C, GP, PT, HEAD_DIM, io_layout)
        async_copy.wait_group(1)
        gl.thread_barrier()
        fence_async_shared()
        q_s = q_smem.index(2 * C + j % 2)
        pos = row0 + rows_s % PT
        p_lo = gl.min(pos, axis=0)  # this warpgroup's first and last position
        p_hi = gl.max(pos, axis=0)

        # ---- sink block (synchronous, small): m, l and P of keys [0, sink_hi)
        sb = j % 2
        mbarrier.wait(s_ready.index(sb), (j // 2) & 1)
        z = warpgroup_mma(q_s, ks_smem.index(sb).permute((1, 0)), zero_z, use_acc=False)
        z = gl.where(gl.expand_dims(cols_z < sink_hi, 0), z * qk_scale, float("-inf"))
        m_z = gl.max(z, axis=1)
        pz = gl.exp2(z - gl.expand_dims(gl.where(m_z == float("-inf"), 0.0, m_z), 1))
        l_i = gl.convert_layout(gl.sum(pz, axis=1), row_s)
        m_i = gl.convert_layout(m_z, row_s)
        pz = gl.convert_layout(pz.to(dtype), p_layout)

        # ---- window block 0: QK^T(0) and PV(sinks) in flight together
        slot = it % NUM_BUF
        mbarrier.wait(k_ready.index(slot), (it // NUM_BUF) & 1)
        n = _turn_wait(turn, n, C, PINGPONG)
        s_tok = warpgroup_mma(q_s, k_smem.index(slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        acc_tok = warpgroup_mma(pz, vs_smem.index(sb), zero_o, use_acc=False, is_async=True)
        _turn_pass(turn, C, NC, PINGPONG)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        mbarrier.arrive(k_empty.index(slot), count=1)
        full = (win0 >= sink_hi) & (win0 + BLOCK_N - 1 <= p_lo) & (p_hi - win0 < n_local)
        if full:
            p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, win0, sink_hi, n_init, n_local, qk_scale,
                                                False)
        else:
            p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, win0, sink_hi, n_init, n_local, qk_scale,
                                                True)
        acc, pz = warpgroup_mma_wait(0, deps=(acc_tok, pz))
        mbarrier.arrive(s_empty.index(sb), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        p_op = gl.convert_layout(p.to(dtype), p_layout)

        # ---- steady state: QK^T(t) | PV(t-1) async, softmax(t) under PV(t-1)
        for t in range(1, nblk):
            i = it + t
            slot = i % NUM_BUF
            pslot = (i - 1) % NUM_BUF
            mbarrier.wait(k_ready.index(slot), (i // NUM_BUF) & 1)
            mbarrier.wait(v_ready.index(pslot), ((i - 1) // NUM_BUF) & 1)
            n = _turn_wait(turn, n, C, PINGPONG)
            s_tok = warpgroup_mma(q_s, k_smem.index(slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
            acc_tok = warpgroup_mma(p_op, v_smem.index(pslot), acc, is_async=True)
            _turn_pass(turn, C, NC, PINGPONG)
            s = warpgroup_mma_wait(1, deps=(s_tok,))
            mbarrier.arrive(k_empty.index(slot), count=1)
            start = win0 + t * BLOCK_N
            full = (start >= sink_hi) & (start + BLOCK_N - 1 <= p_lo) & (p_hi - start < n_local)
            if full:
                p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, start, sink_hi, n_init, n_local,
                                                    qk_scale, False)
            else:
                p, m_i, alpha, l_i = _softmax_block(s, m_i, l_i, cols, pos, start, sink_hi, n_init, n_local,
                                                    qk_scale, True)
            acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
            mbarrier.arrive(v_empty.index(pslot), count=1)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
            p_op = gl.convert_layout(p.to(dtype), p_layout)

        # ---- last PV, epilogue
        i = it + nblk - 1
        slot = i % NUM_BUF
        mbarrier.wait(v_ready.index(slot), (i // NUM_BUF) & 1)
        n = _turn_wait(turn, n, C, PINGPONG)
        acc_tok = warpgroup_mma(p_op, v_smem.index(slot), acc, is_async=True)
        _turn_pass(turn, C, NC, PINGPONG)
        acc, p_op = warpgroup_mma_wait(0, deps=(acc_tok, p_op))
        mbarrier.arrive(v_empty.index(slot), count=1)
        it += nblk
        j += 1

        l_o = gl.convert_layout(l_i, row_o)
        o = gl.convert_layout((acc / gl.expand_dims(gl.where(l_o > 0.0, l_o, 1.0), 1)).to(dtype), io_layout)
        g = chunk * GP + rr // PT
        pos_io = row0 + rr % PT
        ok = (g < G) & (pos_io < band_end)
        o_ptrs = Out + b.to(gl.int64) * stride_ob \
            + gl.expand_dims((pos_io - q0) * stride_om + (kvh * G + g) * stride_oh, 1) \
            + gl.expand_dims(offs_d * stride_od, 0)
        gl.store(o_ptrs, o, mask=gl.expand_dims(ok, 1))


@_jit
def _consumer0(args, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
              PINGPONG: gl.constexpr, NC: gl.constexpr):
    _consumer(args, 0, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)


@_jit
def _consumer1(args, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
              PINGPONG: gl.constexpr, NC: gl.constexpr):
    _consumer(args, 1, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)


@_jit
def _consumer2(args, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_BUF: gl.constexpr, TPW_D: gl.constexpr, PINGPONG: gl.constexpr,
               NC: gl.constexpr):
    _consumer(args, 2, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)


@_jit
def _consumer3(args, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_BUF: gl.constexpr, TPW_D: gl.constexpr, PINGPONG: gl.constexpr,
               NC: gl.constexpr):
    _consumer(args, 3, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)


@_jit
def _producer0(args, BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_BUF: gl.constexpr, TPW_D: gl.constexpr,
              PINGPONG: gl.constexpr, NC: gl.constexpr):
    _producer(args, 0, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)


@_jit
def _triangle_band_ws(Q, Out, k_desc, v_desc, ks_desc, vs_desc,
                      stride_qb, stride_qh, stride_qm, stride_qd,
                      stride_ob, stride_om, stride_oh, stride_od,
                      S, q0, band_end, n_ptiles, n_work, n_win, n_init, n_local, qk_scale, G, HKV, NCHUNK,
                      BLOCK_N: gl.constexpr, SINK_N: gl.constexpr, GP: gl.constexpr, HEAD_DIM: gl.constexpr,
                      NUM_BUF: gl.constexpr, TPW_D: gl.constexpr, Q_LAYOUT: gl.constexpr,
                      CONSUMER_REGS: gl.constexpr, PINGPONG: gl.constexpr, NC: gl.constexpr,
                      num_warps: gl.constexpr):
    """Band rows [q0, band_end): persistent CTAs over n_work tiles of NC x 64 rows (GP heads x NC*64/GP positions)."""
    ROWS: gl.constexpr = 64
    dtype: gl.constexpr = k_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2 * NC, ROWS, HEAD_DIM], Q_LAYOUT)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK_N, HEAD_DIM], v_desc.layout)
    ks_smem = gl.allocate_shared_memory(dtype, [2, SINK_N, HEAD_DIM], ks_desc.layout)
    vs_smem = gl.allocate_shared_memory(dtype, [2, SINK_N, HEAD_DIM], vs_desc.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    s_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    s_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [NC, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_BUF):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=NC)
        mbarrier.init(v_empty.index(i), count=NC)
    for i in gl.static_range(2):
        mbarrier.init(s_ready.index(i), count=1)
        mbarrier.init(s_empty.index(i), count=NC)
    for i in gl.static_range(NC):
        mbarrier.init(turn.index(i), count=1)
    fence_async_shared()

    args = (Q, Out, k_desc, v_desc, ks_desc, vs_desc, q_smem, k_smem, v_smem, ks_smem, vs_smem,
            k_ready, k_empty, v_ready, v_empty, s_ready, s_empty, turn, stride_qb, stride_qh, stride_qm, stride_qd,
            stride_ob, stride_om, stride_oh, stride_od, S, q0, band_end, n_ptiles, n_work, n_win,
            n_init, n_local, qk_scale, G, HKV, NCHUNK)
    # (constexprs must be spelled out in each partition's argument tuple: through a variable they become tensors)
    if NC == 2:
        gl.warp_specialize([
            (_consumer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer1, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_producer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
        ], [4, 1], [CONSUMER_REGS, 24])
    elif NC == 3:
        gl.warp_specialize([
            (_consumer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer1, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer2, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_producer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([
            (_consumer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer1, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer2, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_consumer3, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
            (_producer0, (args, BLOCK_N, SINK_N, GP, HEAD_DIM, NUM_BUF, TPW_D, PINGPONG, NC)),
        ], [4, 4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, CONSUMER_REGS, 24])


def ws_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_init: int, consumers: int = 2) -> bool:
    """Gluon band shapes (Hopper, bf16/fp16, D 64/128, TMA-able K/V, <= 128 sinks), <= 128 heads per kv head and
    16-byte aligned Q rows with unit last stride (Q rows are fetched with 16-byte cp.async)."""
    return (supported(q, k, v, n_init) and (consumers * ROWS_PY) % triton.next_power_of_2(q.shape[1] // k.shape[1]) == 0
            and q.stride(3) == 1
            and all(st % 16 == 0 for st in q.stride()[:3]) and q.data_ptr() % 16 == 0)


def triangle_band_ws(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, band_end: int,
                     n_init: int, n_local: int, scale: float, config: dict | None = None):
    """Band rows [S - Lq, band_end) of triangle attention into out [B, Lq, H, D]; q [B,H,Lq,D], k/v [B,Hkv,S,D].

    config: block_n (64), num_buf (3), consumers (2, 3 or 4 warpgroups of 64 rows; a tile is consumers x 64 rows),
    consumer_regs / maxnreg (from _REGS: 4 x (consumers + 1) warps x 32 x maxnreg <= 64K registers),
    ctas_per_sm (1), pingpong (True: the two warpgroups take turns issuing wgmma, FA3). Returns the kernel handle.
    """
    cfg = {"block_n": 64, "num_buf": 3, "consumers": 2, "ctas_per_sm": 1, "pingpong": True, **(config or {})}
    nc = cfg["consumers"]
    if nc not in _REGS:
        raise ValueError(f"consumers must be one of {sorted(_REGS)}")
    cfg = {"maxnreg": _REGS[nc][0], "consumer_regs": _REGS[nc][1], **cfg}
    if not ws_supported(q, k, v, n_init, nc):
        raise ValueError("triangle_band_ws: unsupported input (needs Hopper, bf16/fp16, D 64/128, TMA-able K/V)")
    b, h, lq, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if h % hkv or tuple(out.shape) != (b, lq, h, d) or band_end > s:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, out {tuple(out.shape)}")
    q0 = s - lq
    if band_end <= q0 or b == 0:
        return None
    block_n, nbuf = cfg["block_n"], cfg["num_buf"]
    if block_n not in (16, 32, 64, 128) or nbuf < 2:
        raise ValueError(f"bad ws config {cfg}: block_n 16..128, num_buf >= 2")
    g = h // hkv
    gp = triton.next_power_of_2(g)
    n_chunk = triton.cdiv(g, gp)
    pt = nc * ROWS_PY // gp
    n_ptiles = triton.cdiv(band_end - q0, pt)
    n_work = n_ptiles * b * hkv * n_chunk
    n_win = triton.cdiv(n_local + pt - 1, block_n)
    sink_n = max(16, triton.next_power_of_2(max(n_init, 1)))
    gdt = getattr(gl, _GL_DTYPES[q.dtype])
    rows = b * hkv * s

    def desc(t, n):
        lay = gl.NVMMASharedLayout.get_default_for([n, d], gdt)
        return TensorDescriptor(t, [rows, d], [t.stride(2), 1], [n, d], lay)

    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    grid = (min(n_work, max(1, int(sms * cfg["ctas_per_sm"]))),)
    kern = _triangle_band_ws[grid](
        q, out, desc(k, block_n), desc(v, block_n), desc(k, sink_n), desc(v, sink_n),
        *q.stride(), *out.stride(),
        s, q0, band_end, n_ptiles, n_work, n_win, n_init, n_local, scale * 1.4426950408889634, g, hkv, n_chunk,
        BLOCK_N=block_n, SINK_N=sink_n, GP=gp, HEAD_DIM=d, NUM_BUF=nbuf, TPW_D=min(32, d // 8),
        Q_LAYOUT=gl.NVMMASharedLayout.get_default_for([ROWS_PY, d], gdt), CONSUMER_REGS=cfg["consumer_regs"],
        PINGPONG=bool(cfg["pingpong"]), NC=nc, num_warps=4, maxnreg=cfg["maxnreg"],
    )
    last_compiled["band"] = kern
    return kern
