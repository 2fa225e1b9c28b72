"""Sweep the fused_add_rms_norm forward's launch configurations with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench flushes L2), beside torch.compile of x + r and Hugging Face's RMSNorm in the
same process. 8192 rows, bf16, with weight, casting "llama"; prints the best configurations.

    python scripts/tune_fused_add_rms_norm.py [hidden ...]      # on the GPU box
    python scripts/tune_fused_add_rms_norm.py bwd [hidden ...]  # the backward (dy and ds_out given, weight grad)

Sweeps the single-block kernel (one row per program, warps) and the looped kernel (BLOCK_N x warps, one program per
row);
the backward: the build's single-block kernel at one row per block (warps x programs per SM), the split path
(rowstats + cols), the build's reload kernel (warps x programs per SM), and the two prototypes it came from:
farn_bwd_rows_kernel (shaped as Liger-Kernel's one-pass backward) and farn_bwd_reload_kernel; the partial dw rows
summed outside the timing (layer_norm's column_sum_kernel in the build).
A 1-D row kernel with the casting mode constant (tried 2026-11-29, not kept) spilled 148 bytes at 16384 x 32 warps
and 264 at 16 warps, and ran at 492-528 us against the split path's 397 at 8192 x 16384 bf16.
"""
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.fused_add_rms_norm import (CASTING_LLAMA, _normed, fused_add_rms_norm_bwd_cols_kernel,  # noqa: E402
                                           fused_add_rms_norm_bwd_kernel, fused_add_rms_norm_bwd_reload_kernel,
                                           fused_add_rms_norm_bwd_rowstats_kernel, fused_add_rms_norm_fwd_kernel,
                                           fused_add_rms_norm_fwd_looped_kernel)

ROWS = 8192
DT = torch.bfloat16
EPS = 1e-6


@triton.jit
def _rows_of(pid, n_progs, n_rows, rows_per_program, CONTIG: tl.constexpr):
    """(first, last, step) of a program's rows: consecutive ones (CONTIG) or every n_progs-th."""
    if CONTIG:
        first = pid * rows_per_program
        return first, tl.minimum(first + rows_per_program, n_rows), 1
    return pid, n_rows, n_progs


@triton.jit
def farn_bwd_rows_kernel(DY, DSO, S, W, RSTD, DS, DW_PARTIAL, n_rows, n_cols, rows_per_program,
                         BLOCK_N: tl.constexpr, CONTIG: tl.constexpr, W16: tl.constexpr, PREFETCH: tl.constexpr):
    """Prototype (not in the build): the one-pass backward as Liger-Kernel shapes it, one row at a time in a
    1-D block, dw accumulated in registers over the program's rows (casting "llama", weight, ds_out given, offset
    0). CONTIG: each program takes rows_per_program consecutive rows (Liger-Kernel) instead of striding by the
    grid; W16: the weight stays 16-bit in registers, widened at each use; PREFETCH: the next row's dy, s and
    ds_out loaded before this row is reduced."""
    DT: tl.constexpr = S.dtype.element_ty
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    w16 = tl.load(W + cols, mask=cm, other=0.0)
    w32 = w16.to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    first, last, step = _rows_of(pid, n_progs, n_rows, rows_per_program, CONTIG)
    if PREFETCH:
        off = tl.cast(first, tl.int64) * n_cols + cols
        ok = cm & (first < last)
        dy_n = tl.load(DY + off, mask=ok, other=0.0)
        s_n = tl.load(S + off, mask=ok, other=0.0)
        dso_n = tl.load(DSO + off, mask=ok, other=0.0)
    for row in range(first, last, step):
        off = tl.cast(row, tl.int64) * n_cols + cols
        if PREFETCH:
            dy, s, dso = dy_n, s_n, dso_n
            nxt = tl.cast(row + step, tl.int64) * n_cols + cols
            ok = cm & (row + step < last)
            dy_n = tl.load(DY + nxt, mask=ok, other=0.0)
            s_n = tl.load(S + nxt, mask=ok, other=0.0)
            dso_n = tl.load(DSO + nxt, mask=ok, other=0.0)
        else:
            dy = tl.load(DY + off, mask=cm, other=0.0)
            s = tl.load(S + off, mask=cm, other=0.0)
            dso = tl.load(DSO + off, mask=cm, other=0.0)
        dyf = dy.to(tl.float32)
        sf = s.to(tl.float32)
        rstd = tl.load(RSTD + row)
        dn = dyf * (w16.to(tl.float32) if W16 else w32)
        c = tl.sum(dn * sf, axis=0) / n_cols
        ds = rstd * dn - (rstd * rstd * rstd * c) * sf + dso.to(tl.float32)
        tl.store(DS + off, ds.to(DT), mask=cm)
        dw_acc += dyf * _normed(sf, rstd, 0, DT)
    tl.store(DW_PARTIAL + tl.cast(pid, tl.int64) * n_cols + cols, dw_acc, mask=cm)


@triton.jit
def farn_bwd_reload_kernel(DY, DSO, S, W, RSTD, DS, DW_PARTIAL, n_rows, n_cols, rows_per_program,
                           BLOCK_N: tl.constexpr, CONTIG: tl.constexpr, RELOAD: tl.constexpr,
                           W_EACH_ROW: tl.constexpr):
    """Prototype (not in the build): one pass over memory, two over the row. The row's dot sum(dy w s) from dy
    and s held only for the reduction; then dy and s loaded again (from L1 or L2: the program read them just
    before; RELOAD picks the cache modifier, "" or ".cg") with ds_out, and ds and the dw sums computed. Only dw's
    accumulator and the weight stay live across rows, instead of dy, s and dw at once (which spills at 16384).
    W_EACH_ROW: the weight loaded again for each row (from L1) rather than held in registers."""
    DT: tl.constexpr = S.dtype.element_ty
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    w = tl.load(W + cols, mask=cm, other=0.0)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    first, last, step = _rows_of(pid, n_progs, n_rows, rows_per_program, CONTIG)
    for row in range(first, last, step):
        off = tl.cast(row, tl.int64) * n_cols + cols
        rstd = tl.load(RSTD + row)
        dy = tl.load(DY + off, mask=cm, other=0.0)
        s = tl.load(S + off, mask=cm, other=0.0)
        if W_EACH_ROW:
            w = tl.load(W + cols, mask=cm, other=0.0)
        dot = tl.sum(dy.to(tl.float32) * w.to(tl.float32) * s.to(tl.float32), axis=0)
        c = rstd * rstd * rstd * dot / n_cols
        dyf = tl.load(DY + off, mask=cm, other=0.0, cache_modifier=RELOAD).to(tl.float32)
        sf = tl.load(S + off, mask=cm, other=0.0, cache_modifier=RELOAD).to(tl.float32)
        dso = tl.load(DSO + off, mask=cm, other=0.0)
        ds = rstd * (dyf * w.to(tl.float32)) - c * sf + dso.to(tl.float32)
        tl.store(DS + off, ds.to(DT), mask=cm)
        dw_acc += dyf * _normed(sf, rstd, 0, DT)
    tl.store(DW_PARTIAL + tl.cast(pid, tl.int64) * n_cols + cols, dw_acc, mask=cm)


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=50, return_mode="median")


def hf(x, r, w):
    s = x + r
    sf = s.float()
    return w * (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + EPS)).to(s.dtype), s


def tune_fwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    r = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = 1 + 0.1 * torch.randn(n, device="cuda", dtype=DT)
    y, s = torch.empty_like(x), torch.empty_like(x)
    rstd = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    ref_y, ref_s = hf(x, r, w)
    v = n // 8
    res = []

    def run(fn, what):
        y.fill_(float("nan"))
        fn()
        err = (y.float() - ref_y.float()).abs().max().item()
        res.append((bench(fn), f"{what} (max err {err:.3g})"))

    block_n = triton.next_power_of_2(n)
    for nw in (4, 8, 16, 32):
        if block_n // (32 * nw) >= 2 and block_n <= 32768:
            run(lambda: fused_add_rms_norm_fwd_kernel[(ROWS,)](x, r, w, y, s, rstd, ROWS, v, v, v, v, EPS, 0.0,
                                                                True, True, CASTING=CASTING_LLAMA, BLOCK_M=1,
                                                                BLOCK_N=block_n, ALIGN=8, num_warps=nw),
                f"single nw={nw}")
    for loop_n in (2048, 4096, 8192):
        for nw in (4, 8, 16):
            if loop_n // (32 * nw) < 2 or loop_n > n:
                continue
            for progs in (ROWS,):  # one program per row (the kernel does not loop over rows)
                run(lambda: fused_add_rms_norm_fwd_looped_kernel[(progs,)](x, r, w, y, s, rstd, ROWS, v, v, v, v, EPS,
                                                                           0.0, CASTING_LLAMA, True, True,
                                                                           BLOCK_N=loop_n, ALIGN=8, num_warps=nw),
                    f"looped BLOCK_N={loop_n} nw={nw} programs={progs}")
    res.sort()
    gbs = lambda t: 4 * x.numel() * 2 / t / 1e6
    print(f"fwd n={n}: " + "; ".join(f"{c} {t*1e3:.1f}us {gbs(t):.0f}GB/s" for t, c in res[:8]), flush=True)
    compiled = torch.compile(hf, dynamic=False)
    print(f"fwd n={n}: torch.compile {bench(lambda: compiled(x, r, w)) * 1e3:.1f}us", flush=True)
    try:
        from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm_forward
        t = bench(lambda: fused_add_rms_norm_forward(x, r, w, EPS, 0.0, "llama"))
        print(f"fwd n={n}: Liger-Kernel fused_add_rms_norm_forward {t*1e3:.1f}us", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"Liger-Kernel: {str(e)[:100]}")


def tune_bwd(n):
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    s = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dy = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dso = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = 1 + 0.1 * torch.randn(n, device="cuda", dtype=DT)
    sf = s.float()
    rstd = torch.rsqrt(sf.pow(2).mean(-1) + EPS)
    dn = dy.float() * w.float()
    ref_ds = rstd[:, None] * dn - (rstd ** 3 * (dn * sf).mean(-1))[:, None] * sf + dso.float()
    ref_dw = (dy.float() * (sf * rstd[:, None]).to(DT).float()).sum(0)
    ds = torch.empty_like(s)
    stats = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    v = n // 8
    block_n = triton.next_power_of_2(n)
    res = []

    def run(fn, parts, what):
        partial = torch.zeros(parts, n, device="cuda", dtype=torch.float32)
        ds.fill_(float("nan"))
        fn(partial)
        err = (ds.float() - ref_ds).abs().max().item()
        dw_err = ((partial.sum(0) - ref_dw).abs().max() / ref_dw.abs().max()).item()
        # the partial sum (column_sum_kernel in the build) is the same small kernel for every variant: not timed
        res.append((bench(lambda: fn(partial)), f"{what} (ds err {err:.3g}, dw rel err {dw_err:.2g})"))

    for nw in (16, 32):
        for per_sm in (1, 2):
            progs = sms * per_sm
            if block_n > 16384:
                break  # spills: 2.4-8.2 ms at 32768 (2026-11-29)
            run(lambda p: fused_add_rms_norm_bwd_kernel[(progs,)](
                dy, dso, s, w, rstd, ds, p, ROWS, v, v, v, v, v, 0.0, CASTING_LLAMA, True, True, True, BLOCK_M=1,
                BLOCK_N=block_n, ALIGN=8, PREFETCH=0, num_warps=nw), progs,
                f"single block, one row, nw={nw} programs={progs}")

    col_blocks = triton.cdiv(n, 1024)
    split_progs = max(1, -(-sms * 8 // col_blocks))  # the launcher: one resident wave of the cols kernel

    def split(p):
        fused_add_rms_norm_bwd_rowstats_kernel[(ROWS,)](dy, s, w, stats, ROWS, v, v, v, 0.0, True, BLOCK_N=1024,
                                                         ALIGN=8, num_warps=4)
        fused_add_rms_norm_bwd_cols_kernel[(split_progs, col_blocks)](
            dy, dso, s, w, rstd, stats, ds, p, ROWS, v, v, v, v, v, 0.0, CASTING_LLAMA, True, True, True, BLOCK_M=2,
            BLOCK_N=1024, ALIGN=8, num_warps=8)

    run(split, split_progs, f"split rowstats + cols ({split_progs} x {col_blocks})")
    # farn_bwd_rows_kernel (2026-11-30, H200, 16384): best 413.9 us (16 warps, 132 programs, consecutive rows, no
    # prefetch; prefetching spilled: 795-3400 us), the split path 396.5, Liger-Kernel's kernel 323.7 (profiler)
    if block_n <= 16384:
        run(lambda p: farn_bwd_rows_kernel[(sms,)](
            dy, dso, s, w, rstd, ds, p, ROWS, n, -(-ROWS // sms), BLOCK_N=block_n, CONTIG=True, W16=False,
            PREFETCH=False, num_warps=16), sms, f"rows prototype nw=16 programs={sms} contig=True")
    # farn_bwd_reload_kernel (2026-11-30, 16384): 294.5 us at 16 warps, one program per SM, consecutive rows, .cg
    # reloads (two per SM 298.1; default-cached reloads 375.6; strided rows 311.3; the weight loaded per row 330.0)
    if block_n <= 16384:
        run(lambda p: farn_bwd_reload_kernel[(sms,)](
            dy, dso, s, w, rstd, ds, p, ROWS, n, -(-ROWS // sms), BLOCK_N=block_n, CONTIG=True, RELOAD=".cg",
            W_EACH_ROW=False, num_warps=16), sms, "reload prototype nw=16 contig .cg")
    for nw in (8, 16, 32):
        for per_sm in (1, 2):
            progs = sms * per_sm
            if block_n // (32 * nw) < 4 or block_n // (32 * nw) > 64:
                continue
            try:
                run(lambda p: fused_add_rms_norm_bwd_reload_kernel[(progs,)](
                    dy, dso, s, w, rstd, ds, p, ROWS, v, v, v, v, v, 0.0, True, True, True,
                    CASTING=CASTING_LLAMA, BLOCK_N=block_n, ALIGN=8, WEIGHT_AND_DW=True, num_warps=nw), progs,
                    f"build's reload kernel nw={nw} programs={progs}")
            except Exception as e:  # noqa: BLE001  (out of resources)
                print(f"  reload kernel nw={nw} {progs}: {str(e)[:120]}")
    res.sort()
    gbs = lambda t: 4 * s.numel() * 2 / t / 1e6
    print(f"bwd n={n}: " + "; ".join(f"{c} {t*1e3:.1f}us {gbs(t):.0f}GB/s" for t, c in res), flush=True)
    try:
        from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm_backward  # noqa: F401
        from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction as F
        xr = s.clone().requires_grad_()
        rr = torch.zeros_like(s).requires_grad_()
        wr = w.clone().requires_grad_()
        y, s_out = F.apply(xr, rr, wr, EPS, 0.0, "llama", False)
        t = bench(lambda: torch.autograd.grad((y, s_out), (xr, rr, wr), (dy, dso), retain_graph=True))
        print(f"bwd n={n}: Liger-Kernel autograd backward {t*1e3:.1f}us", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"Liger-Kernel: {str(e)[:200]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    tune = tune_bwd if args[:1] == ["bwd"] else tune_fwd
    for n in [int(a) for a in args if a != "bwd"] or [16384]:
        tune(n)
