"""GroupNorm forward prototype (Gluon, JIT): one program per group, half of it in registers and half in shared memory,
so that two programs fit an SM (16 warps at <= 64 registers a thread, 64 KB of shared memory each). bf16/fp16
[n, 512, 64, 64] (groups of 16 x 4096), timed as the benchmarks, against the build's register kernel.

    python scripts/gn_half_probe.py          # on the GPU box

Why (Nsight Compute on the build's kernel, one 1024-thread program per SM holding its whole group in registers):
28 % of warp stall samples wait on the group's loads, 9 % on the stores draining at exit, and no other program can
use the SM meanwhile. With two programs an SM, one loads or drains while the other reduces.
The shared half is copied with cp.async as the register half is loaded; the statistics are the build's (exact
two-pass over registers and shared memory); y = x * scale[c] + shift[c] from both.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))
import harness  # noqa: E402
import triton_src.group_norm as gn  # noqa: E402
from gn_ring_probe import _paff, _psq, _psum  # noqa: E402
from triton_src._rows import PREFETCH_L2 as _PF  # noqa: E402

PREFETCH_L2 = gl.constexpr(_PF.value)
WORDS = gl.constexpr(128)  # int32 pairs per row of the [numel / 256, 256] view
CH_ROWS = gl.constexpr(32)  # rows per shared-memory chunk


@gluon.jit
def _ld(X32, base, row0, coffs):
    return gl.load(X32 + base + row0 * WORDS + coffs, eviction_policy="evict_first")


@gluon.jit
def _out(Y32, base, c, coffs, v, scale_rows, shift_rows, rl: gl.constexpr, IS_BF16: gl.constexpr):
    sc = scale_rows.index(c).load(rl)[:, None]
    sh = shift_rows.index(c).load(rl)[:, None]
    gl.store(Y32 + base + c * (CH_ROWS * WORDS) + coffs, _paff(v, sc, sh, IS_BF16), eviction_policy="evict_first")


@gluon.jit
def gn_half_kernel(X, W, B, Y, MEAN, RSTD, G, CPG, eps, n_groups, ahead, REG_ROWS: gl.constexpr,
                   SM_ROWS: gl.constexpr, RPC: gl.constexpr, SERIAL: gl.constexpr = False):
    # REG_ROWS 128 or 96: four or three [32, 128] int32 chunks in registers (v0-v3); the other rows in shared memory
    grp = gl.program_id(0)
    IS_BF16: gl.constexpr = X.dtype.element_ty == gl.bfloat16
    layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [gl.num_warps(), 1], [1, 0])
    rl: gl.constexpr = gl.SliceLayout(1, layout)
    cols = gl.arange(0, WORDS, layout=gl.SliceLayout(0, layout))
    X32 = X.to(gl.pointer_type(gl.int32), bitcast=True)
    Y32 = Y.to(gl.pointer_type(gl.int32), bitcast=True)
    base = grp.to(gl.int64) * ((REG_ROWS + SM_ROWS) * WORDS)
    smem = gl.allocate_shared_memory(gl.int32, [SM_ROWS // CH_ROWS, CH_ROWS, WORDS],
                                     gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    NCH: gl.constexpr = (REG_ROWS + SM_ROWS) // CH_ROWS
    row_smem: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    scale_smem = gl.allocate_shared_memory(gl.float32, [NCH, CH_ROWS], row_smem)
    shift_smem = gl.allocate_shared_memory(gl.float32, [NCH, CH_ROWS], row_smem)
    rows_1d: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    scale_rows = scale_smem._reinterpret(gl.float32, [NCH, CH_ROWS], rows_1d)
    shift_rows = shift_smem._reinterpret(gl.float32, [NCH, CH_ROWS], rows_1d)
    g_layout: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    g_rows = (gl.arange(0, NCH, layout=gl.SliceLayout(1, g_layout))[:, None] * CH_ROWS
              + gl.arange(0, CH_ROWS, layout=gl.SliceLayout(0, g_layout))[None, :])
    ch = (grp % G) * CPG + g_rows // RPC
    w = gl.load(W + ch).to(gl.float32)
    b = gl.load(B + ch).to(gl.float32)
    crow = gl.arange(0, CH_ROWS, layout=rl)
    coffs = crow[:, None] * WORDS + cols[None, :]
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        async_copy.async_copy_global_to_shared(smem.index(c),
                                               X32 + base + (REG_ROWS + c * CH_ROWS) * WORDS + coffs,
                                               eviction_policy="evict_first")
    async_copy.commit_group()
    v0 = _ld(X32, base, 0, coffs)
    v1 = _ld(X32, base, CH_ROWS, coffs)
    if REG_ROWS >= 96:
        v2 = _ld(X32, base, 2 * CH_ROWS, coffs)
    else:
        v2 = v1
    if REG_ROWS == 128:
        v3 = _ld(X32, base, 3 * CH_ROWS, coffs)
    else:
        v3 = v2
    count = ((REG_ROWS + SM_ROWS) * 256) * 1.0
    # the group `ahead` programs later asked of L2 (128-byte lines)
    LINES: gl.constexpr = (REG_ROWS + SM_ROWS) * 512 // 128
    p_layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    nxt = grp + ahead
    lines = gl.arange(0, LINES, layout=p_layout)
    pf = (X.to(gl.pointer_type(gl.int8), bitcast=True) + nxt.to(gl.int64) * ((REG_ROWS + SM_ROWS) * 512)
          + lines * 128)
    gl.inline_asm_elementwise(PREFETCH_L2, "=r,l,r", [pf, ((nxt < n_groups) & (ahead > 0)).to(gl.int32) + lines * 0],
                              dtype=gl.int32, is_pure=False, pack=1)
    acc = _psum(v0, IS_BF16) + _psum(v1, IS_BF16)
    if REG_ROWS >= 96:
        acc += _psum(v2, IS_BF16)
    if REG_ROWS == 128:
        acc += _psum(v3, IS_BF16)
    async_copy.wait_group(0)
    gl.thread_barrier()
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        acc += _psum(smem.index(c).load(layout), IS_BF16)
        if SERIAL:
            gl.thread_barrier()
    mean = gl.sum(gl.sum(acc, 1), 0) / count
    mt = gl.zeros([CH_ROWS, WORDS], gl.float32, layout) + mean
    acc = _psq(v0, mt, IS_BF16) + _psq(v1, mt, IS_BF16)
    if REG_ROWS >= 96:
        acc += _psq(v2, mt, IS_BF16)
    if REG_ROWS == 128:
        acc += _psq(v3, mt, IS_BF16)
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        acc += _psq(smem.index(c).load(layout), mt, IS_BF16)
        if SERIAL:
            gl.thread_barrier()
    rstd = 1.0 / gl.sqrt_rn(gl.sum(gl.sum(acc, 1), 0) / count + eps)
    gl.store(MEAN + grp, mean)
    gl.store(RSTD + grp, rstd)
    scale = w * rstd
    scale_smem.store(scale)
    shift_smem.store(b - mean * scale)
    gl.thread_barrier()
    _out(Y32, base, 0, coffs, v0, scale_rows, shift_rows, rl, IS_BF16)
    _out(Y32, base, 1, coffs, v1, scale_rows, shift_rows, rl, IS_BF16)
    if REG_ROWS >= 96:
        _out(Y32, base, 2, coffs, v2, scale_rows, shift_rows, rl, IS_BF16)
    if REG_ROWS == 128:
        _out(Y32, base, 3, coffs, v3, scale_rows, shift_rows, rl, IS_BF16)
    for c in gl.static_range(SM_ROWS // CH_ROWS):
        _out(Y32, base, REG_ROWS // CH_ROWS + c, coffs, smem.index(c).load(layout), scale_rows,
             shift_rows, rl, IS_BF16)
        if SERIAL:
            gl.thread_barrier()


def ref_stats(x, g):
    xg = x.double().reshape(x.shape[0], g, -1)
    return xg.mean(-1), (xg.var(-1, unbiased=False) + 1e-5).rsqrt()


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = harness.copy_ceiling_gbps()
    c, hw, g = 512, 4096, 32
    cpg = c // g
    for dt, ns in ((torch.bfloat16, (32, 33, 16)), (torch.float16, (32,))):
        for n in ns:
            torch.manual_seed(n)
            x = torch.randn(n, c, hw, device="cuda", dtype=dt)
            x[0, cpg:2 * cpg] += 300
            x[0, 3 * cpg:4 * cpg] = 0.75
            w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=dt)
            b = 0.1 * torch.randn(c, device="cuda", dtype=dt)
            y = torch.empty_like(x)
            mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
            rm, rr = ref_stats(x, g)
            yref = F.group_norm(x.double(), g, w.double(), b.double(), 1e-5)
            nbytes = 2 * x.numel() * x.element_size()
            tcopy = harness.time_ms(lambda: y.copy_(x))
            print(f"{dt} [{n}, {c}, {hw}]: copy {tcopy * 1e3:.2f} us "
                  f"({nbytes / tcopy / 1e6 / ceiling * 100:.1f} % of {ceiling:.0f} GB/s)", flush=True)
            cands = [("build regs 32 warps", lambda: gn.group_norm_fwd_regs_kernel[(n * g,)](
                x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, True, True, True, sms // 2, BLOCK_C=16,
                BLOCK_HW=hw, num_warps=32))]
            for wp, reg_rows, maxnreg, ahead in ((16, 96, 64, 0), (16, 64, 64, 0), (8, 64, 128, 0),
                                                 (16, 96, 64, sms), (16, 96, 64, 2 * sms), (16, 64, 64, sms),
                                                 (8, 64, 128, sms)):
                sm_rows = 256 - reg_rows
                cands.append((f"half {wp}w regs {reg_rows} maxnreg {maxnreg} ahead {ahead}",
                              lambda wp=wp, rr_=reg_rows, sr=sm_rows, mr=maxnreg, ah=ahead: gn_half_kernel[(n * g,)](
                                  x, w, b, y, mean, rstd, g, cpg, 1e-5, n * g, ah, REG_ROWS=rr_, SM_ROWS=sr,
                                  RPC=hw // 256, SERIAL=True, num_warps=wp, maxnreg=mr)))
            for rep in range(2):
                for name, fn in list(cands):
                    errs = ""
                    if rep == 0:
                        y.fill_(float("nan"))
                        mean.fill_(float("nan"))
                        try:
                            fn()
                            torch.cuda.synchronize()
                        except Exception as e:  # noqa: BLE001
                            print(f"  {name}: {type(e).__name__}: {str(e)[:1500]}", flush=True)
                            cands.remove((name, fn))
                            continue
                        ey = (y.double() - yref).abs().max().item()
                        em = ((mean.double() - rm).abs() * rr).max().item()
                        er = ((rstd.double() - rr).abs() / rr).max().item()
                        errs = f"y err {ey:.3g}, mean err/sigma {em:.2e}, rstd rel err {er:.2e}"
                    t = harness.time_ms(fn)
                    print(f"  {name:<38} {t * 1e3:7.2f} us {nbytes / t / 1e6 / ceiling * 100:5.1f} % of copy {errs}",
                          flush=True)


if __name__ == "__main__":
    main()
