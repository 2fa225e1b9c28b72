"""GroupNorm forward prototype (Gluon, sm_90, JIT): each group held in registers, the groups after it streamed into a
shared-memory ring by TMA. bf16/fp16 [n, 512, 64, 64] (groups of 16 x 4096 = 64K elements), timed as the
benchmarks, against the build's register kernel and a copy of x.

    python scripts/gn_ring_probe.py          # on the GPU box

Why: the build's register kernel (one program per group, the group half the register file) leaves each SM with
nothing in flight while it reduces; scripts/gluon_group_norm_tma.py held the group in a shared-memory ring, so only
80 KB of the next group could be in flight. Here one persistent program per SM loads its group from the ring into
registers (8 chunks of [32, 256]), hands the 8 slots straight back to TMA for the chunks SLOTS later (the next
group and part of the one after), and then reduces and writes from registers while up to 208 KB stream in.
H200, bf16 [32, 512, 64, 64], 2026-12-01: all eight chunks in registers 156 us (spills into an L1 left small by
208 KB of shared memory); gn_ring2_kernel, two or three chunks read from their slots in each pass, 87.5 us at 16
warps; the register kernel 76.3. Not kept (group_norm_fwd_split16_kernel, scripts/gn_half_probe.py, reached 71.8).
"""
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

import gn_cases
from gn_cases import gn

COLS = gl.constexpr(256)  # elements per row of the [numel / 256, 256] view of x
WORDS = gl.constexpr(128)  # int32 pairs per row
CHUNK_ROWS = gl.constexpr(32)  # 16 KB of 16-bit x per ring slot
NCH = 8  # chunks per group: groups of 8 * 32 * 256 = 65536 elements


@gluon.jit
def _issue(x_desc, bufs, ready, k, total, pid, nprog, SLOTS: gl.constexpr, NCH: gl.constexpr):
    s = k % SLOTS
    row = (pid + (k // NCH) * nprog) * (NCH * CHUNK_ROWS) + (k % NCH) * CHUNK_ROWS
    mbarrier.expect(ready.index(s), x_desc.block_type.nbytes, pred=k < total)
    tma.async_copy_global_to_shared(x_desc, [row, 0], ready.index(s), bufs.index(s), pred=k < total)


@gluon.jit
def _take(words, ready, k, SLOTS: gl.constexpr, layout: gl.constexpr):
    s = k % SLOTS
    mbarrier.wait(ready.index(s), (k // SLOTS) & 1)
    return words.index(s).load(layout)


@gluon.jit
def _slot(words, ready, k, SLOTS: gl.constexpr):
    s = k % SLOTS
    mbarrier.wait(ready.index(s), (k // SLOTS) & 1)
    return s


@gluon.jit
def _reload(words, s, layout: gl.constexpr):
    """Slot s read again: the index goes through an opaque move, so that the compiler cannot reuse an earlier
    read of the same slot (which would keep it in registers across the passes)."""
    s = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [s], dtype=gl.int32, is_pure=False, pack=1)
    return words.index(s).load(layout)


@gluon.jit
def gn_ring2_kernel(X, W, B, Y, MEAN, RSTD, n_groups, total_rows, G, CPG, eps,
                    SLOTS: gl.constexpr, NCH: gl.constexpr, RPC: gl.constexpr, SMEM5: gl.constexpr = False):
    """gn_ring_kernel with chunks 0-5 of a group in registers and chunks 6-7 read from their ring slots in each
    pass (24 data registers a thread at 32 warps instead of 32: no spills); slots 0-5 go back to TMA once loaded,
    slots 6-7 after the group is written."""
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    dtype: gl.constexpr = X.dtype.element_ty
    IS_BF16: gl.constexpr = dtype == gl.bfloat16
    smem_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    x_desc = tma.make_tensor_descriptor(X, [total_rows, COLS], [COLS, 1], [CHUNK_ROWS, COLS], smem_layout)
    bufs = gl.allocate_shared_memory(dtype, [SLOTS, CHUNK_ROWS, COLS], smem_layout)
    words = bufs._reinterpret(gl.int32, [SLOTS, CHUNK_ROWS, WORDS], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    ready = gl.allocate_shared_memory(gl.int64, [SLOTS, 1], mbarrier.MBarrierLayout())
    row_smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    scale_smem = gl.allocate_shared_memory(gl.float32, [NCH, CHUNK_ROWS], row_smem)
    shift_smem = gl.allocate_shared_memory(gl.float32, [NCH, CHUNK_ROWS], row_smem)
    rows_1d: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    scale_rows = scale_smem._reinterpret(gl.float32, [NCH, CHUNK_ROWS], rows_1d)
    shift_rows = shift_smem._reinterpret(gl.float32, [NCH, CHUNK_ROWS], rows_1d)
    for i in gl.static_range(SLOTS):
        mbarrier.init(ready.index(i), count=1)
    fence_async_shared()
    gl.thread_barrier()
    my_groups = gl.cdiv(n_groups - pid, nprog)
    total = my_groups * NCH
    for i in gl.static_range(SLOTS):
        _issue(x_desc, bufs, ready, i, total, pid, nprog, SLOTS, NCH)

    layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [gl.num_warps(), 1], [1, 0])
    row_layout: gl.constexpr = gl.SliceLayout(1, layout)
    rows = gl.arange(0, CHUNK_ROWS, layout=row_layout)
    g_layout: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    g_rows = (gl.arange(0, NCH, layout=gl.SliceLayout(1, g_layout))[:, None] * CHUNK_ROWS
              + gl.arange(0, CHUNK_ROWS, layout=gl.SliceLayout(0, g_layout))[None, :])
    cols = gl.arange(0, WORDS, layout=gl.SliceLayout(0, layout))
    offs = rows[:, None] * WORDS + cols[None, :]
    Y32 = Y.to(gl.pointer_type(gl.int32), bitcast=True)
    count = (NCH * CHUNK_ROWS * COLS) * 1.0
    for j in range(my_groups):
        grp = pid + j * nprog
        k0 = j * NCH
        v0 = _take(words, ready, k0 + 0, SLOTS, layout)
        v1 = _take(words, ready, k0 + 1, SLOTS, layout)
        v2 = _take(words, ready, k0 + 2, SLOTS, layout)
        v3 = _take(words, ready, k0 + 3, SLOTS, layout)
        v4 = _take(words, ready, k0 + 4, SLOTS, layout)
        if SMEM5:
            s5 = _slot(words, ready, k0 + 5, SLOTS)
            v5 = _reload(words, s5, layout)
        else:
            v5 = _take(words, ready, k0 + 5, SLOTS, layout)
        gl.thread_barrier()
        fence_async_shared()
        for c in gl.static_range(5):
            _issue(x_desc, bufs, ready, k0 + c + SLOTS, total, pid, nprog, SLOTS, NCH)
        if not SMEM5:
            _issue(x_desc, bufs, ready, k0 + 5 + SLOTS, total, pid, nprog, SLOTS, NCH)
        s6 = _slot(words, ready, k0 + 6, SLOTS)
        s7 = _slot(words, ready, k0 + 7, SLOTS)
        ch = (grp % G) * CPG + g_rows // RPC
        w = gl.load(W + ch).to(gl.float32)
        b = gl.load(B + ch).to(gl.float32)
        s = (gn._s16_sum(v0, IS_BF16) + gn._s16_sum(v1, IS_BF16) + gn._s16_sum(v2, IS_BF16) + gn._s16_sum(v3, IS_BF16)
             + gn._s16_sum(v4, IS_BF16) + gn._s16_sum(v5, IS_BF16) + gn._s16_sum(_reload(words, s6, layout), IS_BF16)
             + gn._s16_sum(_reload(words, s7, layout), IS_BF16))
        mean = gl.sum(gl.sum(s, 1), 0) / count
        mt = gl.zeros([CHUNK_ROWS, WORDS], gl.float32, layout) + mean
        q = (gn._s16_sq(v0, mt, IS_BF16) + gn._s16_sq(v1, mt, IS_BF16) + gn._s16_sq(v2, mt, IS_BF16)
             + gn._s16_sq(v3, mt, IS_BF16)
             + gn._s16_sq(v4, mt, IS_BF16) + gn._s16_sq(_reload(words, s5, layout) if SMEM5 else v5, mt, IS_BF16)
             + gn._s16_sq(_reload(words, s6, layout), mt, IS_BF16)
             + gn._s16_sq(_reload(words, s7, layout), mt, IS_BF16))
        rstd = 1.0 / gl.sqrt_rn(gl.sum(gl.sum(q, 1), 0) / count + eps)
        gl.store(MEAN + grp, mean)
        gl.store(RSTD + grp, rstd)
        scale = w * rstd
        scale_smem.store(scale)
        shift_smem.store(b - mean * scale)
        gl.thread_barrier()
        y_row0 = grp.to(gl.int64) * (NCH * CHUNK_ROWS)
        yb = y_row0 * WORDS
        gn._s16_store(Y32, yb, 0, offs, v0, scale_rows, shift_rows, row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 1, offs, v1, scale_rows, shift_rows, row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 2, offs, v2, scale_rows, shift_rows, row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 3, offs, v3, scale_rows, shift_rows, row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 4, offs, v4, scale_rows, shift_rows, row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 5, offs, _reload(words, s5, layout) if SMEM5 else v5, scale_rows, shift_rows,
                      row_layout, IS_BF16)
        gn._s16_store(Y32, yb, 6, offs, _reload(words, s6, layout), scale_rows, shift_rows, row_layout,
                      IS_BF16)
        gn._s16_store(Y32, yb, 7, offs, _reload(words, s7, layout), scale_rows, shift_rows, row_layout,
                      IS_BF16)
        gl.thread_barrier()  # every warp has read slots 6 and 7
        fence_async_shared()
        if SMEM5:
            _issue(x_desc, bufs, ready, k0 + 5 + SLOTS, total, pid, nprog, SLOTS, NCH)
        _issue(x_desc, bufs, ready, k0 + 6 + SLOTS, total, pid, nprog, SLOTS, NCH)
        _issue(x_desc, bufs, ready, k0 + 7 + SLOTS, total, pid, nprog, SLOTS, NCH)
    for i in gl.static_range(SLOTS):
        mbarrier.invalidate(ready.index(i))


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = gn_cases.harness.copy_ceiling_gbps()
    g, cpg = gn_cases.G, gn_cases.CPG
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    for dt, ns in ((torch.bfloat16, (32, 33, 8)), (torch.float16, (32,))):
        for n in ns:
            k = gn_cases.make_case(n, dt, ceiling)
            cands = [gn_cases.build_regs(k, sms)]
            for wp in (32, 16):
                for smem5 in (False, True):
                    cands.append((f"ring2 {wp} warps{' smem5' if smem5 else ''}", lambda wp=wp, smem5=smem5:
                                  gn_ring2_kernel[(min(n * g, sms),)](
                                      k.x, k.w, k.b, k.y, k.mean, k.rstd, n * g, k.x.numel() // 256, g, cpg, 1e-5,
                                      SLOTS=13, NCH=NCH, RPC=gn_cases.HW // 256, SMEM5=smem5, num_warps=wp)))
            gn_cases.run(k, cands, width=24)


if __name__ == "__main__":
    main()
