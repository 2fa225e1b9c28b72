"""Sweep the fused_add_rms_norm forward's launch configurations with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench flushes L2), beside torch.compile of x + r and Hugging Face's RMSNorm in the
same process. 8192 rows, bf16, with weight, casting "llama"; prints the best configurations.

    python scripts/tune_fused_add_rms_norm.py [hidden ...]      # on the GPU box
    python scripts/tune_fused_add_rms_norm.py bwd [hidden ...]  # the backward (dy and ds_out given, weight grad)

Sweeps the single-block kernel (one row per program, warps) and the looped kernel (BLOCK_N x warps, one program per
row);
the backward: the build's single-block kernel at one row per block (warps x programs per SM) and the split path
(rowstats + cols), the partial dw rows summed outside the timing (layer_norm's column_sum_kernel in the build).
A 1-D row kernel with the casting mode constant (tried 2026-11-29, not kept) spilled 148 bytes at 16384 x 32 warps
and 264 at 16 warps, and ran at 492-528 us against the split path's 397 at 8192 x 16384 bf16.
"""
import sys
from pathlib import Path

import torch
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.fused_add_rms_norm import (CASTING_LLAMA, fused_add_rms_norm_bwd_cols_kernel,  # noqa: E402
                                           fused_add_rms_norm_bwd_kernel, fused_add_rms_norm_bwd_rowstats_kernel,
                                           fused_add_rms_norm_fwd_kernel, fused_add_rms_norm_fwd_looped_kernel)

ROWS = 8192
DT = torch.bfloat16
EPS = 1e-6


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
