"""Prototype, not in the build: a GroupNorm forward for Hopper (sm_90a) in Gluon, each group staged in shared memory
by TMA, x read once. Timed by scripts/tune_group_norm.py --tma and --floor (JIT, H200); it lost to the build's
register kernel (group_norm.py's group_norm_fwd_regs_kernel), so it stays here as a measured dead end:

    H200, [32, 512, 64, 64] bf16, timed as the benchmarks (2026-11-30):  copy of x 67.2 us; register kernel 76.8;
    this kernel 79.3 (one pass, below), 81.8 (two passes over shared memory), 71.4 without statistics.

For 16-bit x, 16-byte aligned, a spatial size that is a multiple of 256, groups of TMA_MIN_GROUP to TMA_MAX_GROUP
elements.

x is seen as a [numel / 256, 256] matrix, so each group is rows_per_group consecutive rows and each channel
rows_per_channel of them. One program per SM walks its groups in turn; a ring of SLOTS shared-memory slots of
[CHUNK_ROWS, 256] elements (16 KB) is filled by TMA, one mbarrier per slot. A program holds its whole group in the
ring and reads it from there three times: the sum, the centred sum of squares (exact two-pass statistics), then
y = x * scale[c] + shift[c] stored to global memory. Each slot is handed back to TMA as soon as the last pass has
read it, for the chunk SLOTS later in the program's sequence, so the next group's first chunks are already in
flight while this group's statistics are computed. That is what the register kernel (group_norm.py's
group_norm_fwd_regs_kernel) cannot do: there, the group fills half the register file, and an SM's one program
issues no loads while it reduces.
Why it still loses: the ring (208 KB) holds a 128 KB group plus 80 KB of the next one, while keeping an SM's share
of the memory system busy takes about 32 GB/s x 3 us ~ 96 KB in flight; each group's last chunks are issued only
as the previous group's slots free up, and the statistics must wait for them (without statistics: 71.4 us).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

COLS = gl.constexpr(256)  # elements per row of the matrix view of x
CHUNK_ROWS = gl.constexpr(32)  # rows per ring slot: 16 KB of 16-bit x
SLOTS = 13  # 208 KB of ring
MAX_CHUNKS = gl.constexpr(8)  # a group must fit the ring with slots to spare for the next group's loads

MIN_GROUP = 16384
MAX_GROUP = MAX_CHUNKS.value * CHUNK_ROWS.value * COLS.value


@gluon.jit
def _issue(x_desc, bufs, ready, k, total, pid, nprog, n_chunks, rows_per_group, SLOTS: gl.constexpr):
    # chunk k of this program's sequence (chunk k % n_chunks of its group k // n_chunks) into slot k % SLOTS
    s = k % SLOTS
    row = (pid + (k // n_chunks) * nprog) * rows_per_group + (k % n_chunks) * CHUNK_ROWS
    mbarrier.expect(ready.index(s), x_desc.block_type.nbytes, pred=k < total)
    tma.async_copy_global_to_shared(x_desc, [row, 0], ready.index(s), bufs.index(s), pred=k < total)


@gluon.jit
def _flat_sum(t):
    return gl.sum(gl.sum(t, axis=1), axis=0)


@gluon.jit
def group_norm_fwd_tma_kernel(X, W, B, Y, MEAN, RSTD, n_groups, total_rows, G, CPG, rows_per_group, rows_per_channel,
                              eps, has_weight, has_bias, store_stats, SLOTS: gl.constexpr,
                              AB_BARRIER: gl.constexpr = True, AB_STATS: gl.constexpr = True,
                              ONE_PASS: gl.constexpr = True):
    # AB_*: ablations for timing only (AB_BARRIER=False drops the barrier before a slot is refilled: unsafe, timed
    # the same; AB_STATS=False: no statistics, wrong output); ONE_PASS=False: the two-pass statistics
    # X, Y: [N, C, HW] contiguous, 16-byte aligned, HW a multiple of 256 (so channels are whole rows of the view);
    # W, B: [C]; MEAN, RSTD: [N * G] fp32. Grid: at most one program per SM (the ring is 208 KB of shared memory).
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    dtype: gl.constexpr = X.dtype.element_ty
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    x_desc = tma.make_tensor_descriptor(X, [total_rows, COLS], [COLS, 1], [CHUNK_ROWS, COLS], smem_layout)
    bufs = gl.allocate_shared_memory(dtype, [SLOTS, CHUNK_ROWS, COLS], smem_layout)
    ready = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    # per-row scale and shift of the group being written (the affine weights gathered while its sums run)
    row_smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    scale_smem = gl.allocate_shared_memory(gl.float32, [MAX_CHUNKS, CHUNK_ROWS], row_smem)
    shift_smem = gl.allocate_shared_memory(gl.float32, [MAX_CHUNKS, CHUNK_ROWS], row_smem)
    for i in gl.static_range(SLOTS):
        mbarrier.init(ready.index(i), count=1)
    fence_async_shared()
    gl.thread_barrier()
    n_chunks = gl.cdiv(rows_per_group, CHUNK_ROWS)
    my_groups = gl.cdiv(n_groups - pid, nprog)
    total = my_groups * n_chunks
    for i in gl.static_range(SLOTS):
        _issue(x_desc, bufs, ready, i, total, pid, nprog, n_chunks, rows_per_group, SLOTS)

    layout: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [gl.num_warps(), 1], [1, 0])
    row_layout: gl.constexpr = gl.SliceLayout(1, layout)
    rows = gl.arange(0, CHUNK_ROWS, layout=row_layout)
    cols = gl.arange(0, COLS, layout=gl.SliceLayout(0, layout))
    # [MAX_CHUNKS, CHUNK_ROWS]: row c * CHUNK_ROWS + r of the group at [c, r], one element per thread at 8 warps
    g_layout: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    g_rows = (gl.arange(0, MAX_CHUNKS, layout=gl.SliceLayout(1, g_layout))[:, None] * CHUNK_ROWS
              + gl.arange(0, CHUNK_ROWS, layout=gl.SliceLayout(0, g_layout))[None, :])
    g_valid = g_rows < rows_per_group
    count = (rows_per_group * COLS).to(gl.float32)
    k0 = 0
    for j in range(my_groups):
        grp = pid + j * nprog
        ch = (grp % G) * CPG + g_rows // rows_per_channel
        w = gl.load(W + ch, mask=g_valid & has_weight, other=1.0).to(gl.float32)
        b = gl.load(B + ch, mask=g_valid & has_bias, other=0.0).to(gl.float32)
        mean = 0.0
        rstd = 1.0
        if AB_STATS and ONE_PASS:
            # One pass as the chunks land, shifted per position: each position (row r, column) of chunk 0 (whole:
            # groups span at least two chunks) is the shift K of the same position in the later chunks, so
            # s1 = sum (x - K), s2 = sum (x - K)^2 over a position's n_r values give its mean K + s1 / n_r and
            # M2 = s2 - s1^2 / n_r; K is one of those n_r <= MAX_CHUNKS values, so s2 <= n_r * M2 and the
            # subtraction loses at most log2(MAX_CHUNKS) bits. The positions then combine exactly (Chan):
            # M2 = sum M2_p + sum n_r (mean_p - mean)^2.
            s = k0 % SLOTS
            mbarrier.wait(ready.index(s), (k0 // SLOTS) & 1)
            kx = bufs.index(s).load(layout).to(gl.float32)
            s1 = gl.zeros([CHUNK_ROWS, COLS], gl.float32, layout)
            s2 = gl.zeros([CHUNK_ROWS, COLS], gl.float32, layout)
            for c in range(1, n_chunks):
                k = k0 + c
                s = k % SLOTS
                mbarrier.wait(ready.index(s), (k // SLOTS) & 1)
                valid = (c * CHUNK_ROWS + rows) < rows_per_group
                d = gl.where(valid[:, None], bufs.index(s).load(layout).to(gl.float32) - kx, 0.0)
                s1 += d
                s2 += d * d
            n_r = ((rows_per_group - rows + CHUNK_ROWS - 1) // CHUNK_ROWS).to(gl.float32)[:, None]
            mean = _flat_sum(kx * n_r + s1) / count
            dm = kx + s1 / n_r - mean
            m2 = gl.maximum(_flat_sum(s2 - s1 * s1 / n_r + n_r * dm * dm), 0.0)
            rstd = 1.0 / gl.sqrt_rn(m2 / count + eps)
        elif AB_STATS:
            acc = gl.zeros([CHUNK_ROWS, COLS], gl.float32, layout)
            for c in range(n_chunks):
                k = k0 + c
                s = k % SLOTS
                mbarrier.wait(ready.index(s), (k // SLOTS) & 1)
                valid = (c * CHUNK_ROWS + rows) < rows_per_group
                acc += gl.where(valid[:, None], bufs.index(s).load(layout).to(gl.float32), 0.0)
            mean = _flat_sum(acc) / count
            acc = gl.zeros([CHUNK_ROWS, COLS], gl.float32, layout)
            for c in range(n_chunks):
                s = (k0 + c) % SLOTS
                valid = (c * CHUNK_ROWS + rows) < rows_per_group
                d = gl.where(valid[:, None], bufs.index(s).load(layout).to(gl.float32) - mean, 0.0)
                acc += d * d
            rstd = 1.0 / gl.sqrt_rn(_flat_sum(acc) / count + eps)
        if store_stats:
            gl.store(MEAN + grp, mean)
            gl.store(RSTD + grp, rstd)
        scale = w * rstd
        scale_smem.store(scale)
        shift_smem.store(b - mean * scale)
        gl.thread_barrier()
        # the same bytes seen as MAX_CHUNKS rows of a 1-D layout, so that .index(c) gives chunk c's rows
        rows_1d: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
        scale_rows = scale_smem._reinterpret(gl.float32, [MAX_CHUNKS, CHUNK_ROWS], rows_1d)
        shift_rows = shift_smem._reinterpret(gl.float32, [MAX_CHUNKS, CHUNK_ROWS], rows_1d)
        y_row0 = grp.to(gl.int64) * rows_per_group
        for c in range(n_chunks):
            k = k0 + c
            s = k % SLOTS
            if not AB_STATS:
                mbarrier.wait(ready.index(s), (k // SLOTS) & 1)
            r = c * CHUNK_ROWS + rows
            x = bufs.index(s).load(layout).to(gl.float32)
            sc = scale_rows.index(c).load(row_layout)
            sh = shift_rows.index(c).load(row_layout)
            if AB_BARRIER:
                gl.thread_barrier()  # every warp has read slot s: TMA may refill it
                fence_async_shared()
            _issue(x_desc, bufs, ready, k + SLOTS, total, pid, nprog, n_chunks, rows_per_group, SLOTS)
            y = x * sc[:, None] + sh[:, None]
            offs = ((y_row0 + r) * COLS)[:, None] + cols[None, :]
            gl.store(Y + offs, y.to(dtype), mask=(r < rows_per_group)[:, None])
        k0 += n_chunks
