"""The sweep behind group_norm_fwd_split16_kernel (Gluon, JIT): one program per group, R of its 256 rows of 256
elements in registers and the others in shared memory, bf16/fp16 [n, 512, 64, 64] (groups of 16 x 4096), timed as
the benchmarks against the build's register kernel, over warps, R, maxnreg and an L2 prefetch of a later group.

    python scripts/gn_half_probe.py          # on the GPU box

Why (Nsight Compute on the register kernel, one 1024-thread program an SM holding its whole group in registers):
28 % of the warp stall samples wait on the group's loads, 9 % on the stores draining at exit, and no other program
can use the SM meanwhile. At <= 64 registers a thread and 16 warps, two programs share an SM, and one loads or
drains while the other reduces. H200, 2026-12-01 (bf16 [32, ...], second timing): R 64 71.8 us (88 % of copy),
96 73.3-73.8, 128 75.6, 8 warps at R 64 72.2; the register kernel 76.4; a prefetch 132 programs ahead 74.6. The
build keeps 16 warps, R 64, no prefetch. SERIAL (a barrier after each shared chunk) keeps ptxas from loading all the
chunks at once, which spilled (101-109 us without it).
"""
import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

import gn_cases
from gn_cases import gn
from triton_src._rows import PREFETCH_L2 as _PF

PREFETCH_L2 = gl.constexpr(_PF.value)
WORDS = gn._S16_WORDS
CH_ROWS = gn._S16_CHUNK


@gluon.jit
def _ld(X32, base, row0, coffs):
    return gl.load(X32 + base + row0 * WORDS + coffs, eviction_policy="evict_first")


@gluon.jit
def gn_half_kernel(X, W, B, Y, MEAN, RSTD, G, CPG, eps, n_groups, ahead, REG_ROWS: gl.constexpr,
                   SM_ROWS: gl.constexpr, RPC: gl.constexpr, SERIAL: gl.constexpr = False):
    """group_norm_fwd_split16_kernel with REG_ROWS 64, 96 or 128 (v0-v3 the register chunks), SERIAL optional, the
    group `ahead` programs later asked of L2 (none at 0); weight and bias present, statistics stored."""
    grp = gl.program_id(0)
    IS_BF16: gl.constexpr = X.dtype.element_ty == gl.bfloat16
    NCH: gl.constexpr = (REG_ROWS + SM_ROWS) // CH_ROWS
    layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [gl.num_warps(), 1], [1, 0])
    rl: gl.constexpr = gl.SliceLayout(1, layout)
    crow = gl.arange(0, CH_ROWS, layout=rl)
    coffs = crow[:, None] * WORDS + gl.arange(0, WORDS, layout=gl.SliceLayout(0, layout))[None, :]
    X32 = X.to(gl.pointer_type(gl.int32), bitcast=True)
    Y32 = Y.to(gl.pointer_type(gl.int32), bitcast=True)
    base = grp.to(gl.int64) * ((REG_ROWS + SM_ROWS) * WORDS)
    flat: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    smem = gl.allocate_shared_memory(gl.int32, [SM_ROWS // CH_ROWS, CH_ROWS, WORDS], flat)
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        async_copy.async_copy_global_to_shared(smem.index(c), X32 + base + (REG_ROWS + c * CH_ROWS) * WORDS + coffs,
                                               eviction_policy="evict_first")
    async_copy.commit_group()
    v0 = _ld(X32, base, 0, coffs)
    v1 = _ld(X32, base, CH_ROWS, coffs)
    v2 = _ld(X32, base, 2 * CH_ROWS, coffs) if REG_ROWS >= 96 else v1
    v3 = _ld(X32, base, 3 * CH_ROWS, coffs) if REG_ROWS == 128 else v2
    LINES: gl.constexpr = (REG_ROWS + SM_ROWS) * 512 // 128
    lines = gl.arange(0, LINES, layout=gl.BlockedLayout([1], [32], [gl.num_warps()], [0]))
    nxt = grp + ahead
    pf = X.to(gl.pointer_type(gl.int8), bitcast=True) + nxt.to(gl.int64) * ((REG_ROWS + SM_ROWS) * 512) + lines * 128
    gl.inline_asm_elementwise(PREFETCH_L2, "=r,l,r", [pf, ((nxt < n_groups) & (ahead > 0)).to(gl.int32) + lines * 0],
                              dtype=gl.int32, is_pure=False, pack=1)
    g_layout: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    g_rows = (gl.arange(0, NCH, layout=gl.SliceLayout(1, g_layout))[:, None] * CH_ROWS
              + gl.arange(0, CH_ROWS, layout=gl.SliceLayout(0, g_layout))[None, :])
    ch = (grp % G) * CPG + g_rows // RPC
    w = gl.load(W + ch).to(gl.float32)
    b = gl.load(B + ch).to(gl.float32)
    count = ((REG_ROWS + SM_ROWS) * 256) * 1.0
    acc = gn._s16_sum(v0, IS_BF16) + gn._s16_sum(v1, IS_BF16)
    if REG_ROWS >= 96:
        acc += gn._s16_sum(v2, IS_BF16)
    if REG_ROWS == 128:
        acc += gn._s16_sum(v3, IS_BF16)
    async_copy.wait_group(0)
    gl.thread_barrier()
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        acc += gn._s16_sum(smem.index(c).load(layout), IS_BF16)
        if SERIAL:
            gl.thread_barrier()
    mean = gl.sum(gl.sum(acc, 1), 0) / count
    mt = gl.zeros([CH_ROWS, WORDS], gl.float32, layout) + mean
    acc = gn._s16_sq(v0, mt, IS_BF16) + gn._s16_sq(v1, mt, IS_BF16)
    if REG_ROWS >= 96:
        acc += gn._s16_sq(v2, mt, IS_BF16)
    if REG_ROWS == 128:
        acc += gn._s16_sq(v3, mt, IS_BF16)
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        acc += gn._s16_sq(smem.index(c).load(layout), mt, IS_BF16)
        if SERIAL:
            gl.thread_barrier()
    rstd = 1.0 / gl.sqrt_rn(gl.sum(gl.sum(acc, 1), 0) / count + eps)
    gl.store(MEAN + grp, mean)
    gl.store(RSTD + grp, rstd)
    scale_smem = gl.allocate_shared_memory(gl.float32, [NCH, CH_ROWS], flat)
    shift_smem = gl.allocate_shared_memory(gl.float32, [NCH, CH_ROWS], flat)
    scale = w * rstd
    scale_smem.store(scale)
    shift_smem.store(b - mean * scale)
    gl.thread_barrier()
    rows_1d: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    scale_rows = scale_smem._reinterpret(gl.float32, [NCH, CH_ROWS], rows_1d)
    shift_rows = shift_smem._reinterpret(gl.float32, [NCH, CH_ROWS], rows_1d)
    gn._s16_store(Y32, base, 0, coffs, v0, scale_rows, shift_rows, rl, IS_BF16)
    gn._s16_store(Y32, base, 1, coffs, v1, scale_rows, shift_rows, rl, IS_BF16)
    if REG_ROWS >= 96:
        gn._s16_store(Y32, base, 2, coffs, v2, scale_rows, shift_rows, rl, IS_BF16)
    if REG_ROWS == 128:
        gn._s16_store(Y32, base, 3, coffs, v3, scale_rows, shift_rows, rl, IS_BF16)
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        gn._s16_store(Y32, base, REG_ROWS // CH_ROWS + c, coffs, smem.index(c).load(layout), scale_rows, shift_rows,
                      rl, IS_BF16)
        if SERIAL:
            gl.thread_barrier()


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = gn_cases.harness.copy_ceiling_gbps()
    g, cpg = gn_cases.G, gn_cases.CPG
    for dt, ns in ((torch.bfloat16, (32, 33, 16)), (torch.float16, (32,))):
        for n in ns:
            k = gn_cases.make_case(n, dt, ceiling)
            cands = [gn_cases.build_regs(k, sms)]
            for wp, reg_rows, maxnreg, serial, ahead in (
                    (16, 64, 64, True, 0), (16, 96, 64, True, 0), (16, 128, 64, True, 0), (8, 64, 128, True, 0),
                    (16, 64, 64, False, 0), (16, 64, 64, True, sms), (16, 96, 64, True, sms)):
                name = f"half {wp}w regs {reg_rows} maxnreg {maxnreg}{' serial' if serial else ''} ahead {ahead}"
                cands.append((name,
                              lambda wp=wp, rr=reg_rows, mr=maxnreg, se=serial, ah=ahead: gn_half_kernel[(n * g,)](
                                  k.x, k.w, k.b, k.y, k.mean, k.rstd, g, cpg, 1e-5, n * g, ah, REG_ROWS=rr,
                                  SM_ROWS=256 - rr, RPC=gn_cases.HW // 256, SERIAL=se, num_warps=wp, maxnreg=mr)))
            cands.append(("build's split16 kernel (JIT)", lambda: gn.group_norm_fwd_split16_kernel[(n * g,)](
                k.x, k.w, k.b, k.y, k.mean, k.rstd, g, cpg, gn_cases.HW // 256, 1e-5, True, True, True,
                REG_ROWS=gn.SPLIT16_REG_ROWS, num_warps=gn.SPLIT16_WARPS, maxnreg=64)))
            gn_cases.run(k, cands, width=52)


if __name__ == "__main__":
    main()
