"""Sweep launch configurations of the layer_norm kernels with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench flushes L2). 8192 rows, bf16, weight and bias; prints the best configs.

    python scripts/tune_layer_norm.py [fwd|bwd] [hidden ...]      # on the GPU box

Wide rows (hidden > 8192) also sweep the kernels the build uses above 32768 (forward) and 8192 (backward): the
looped forward (BLOCK_N x warps, one program per row), the backward's rowstats kernel (BLOCK_N x warps) and
cols kernel (BLOCK_M x BLOCK_N x warps x row programs), outputs checked against PyTorch.
"""
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.layer_norm import (layer_norm_bwd_cols_kernel, layer_norm_bwd_kernel,  # noqa: E402
                                   layer_norm_bwd_rowstats_kernel, layer_norm_fwd_kernel,
                                   layer_norm_fwd_looped_kernel)

ROWS = 8192
DT = torch.bfloat16
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=50, return_mode="median")


@triton.jit
def _pair_add(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _welford_merge(m_a, q_a, n_a, m_b, q_b, n_b):
    # Chan's pairwise merge of (mean, sum of squared deviations, count)
    n = n_a + n_b
    delta = m_b - m_a
    frac = tl.where(n > 0, n_b / tl.maximum(n, 1.0), 0.0)
    return m_a + delta * frac, q_a + q_b + delta * delta * n_a * frac, n


@triton.jit
def fwd_1d_kernel(X, W, B, Y, MEAN, RSTD, n_cols, eps, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                  MODE: tl.constexpr):
    # Experiment: one row as 1-D tensors, the statistics in 3 (MODE 0: the build's sum, sum xc, sum xc^2),
    # 2 (MODE 1: sum, then (sum xc, sum xc^2) as one two-operand reduction) or 1 block reduction (MODE 2:
    # (mean, M2, count) merged pairwise, Chan; MODE 3: (sum x, sum x^2), timing only, cancels).
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    xf = tl.load(X + row * n_cols + cols, mask=cm, other=0.0).to(tl.float32)
    if MODE == 2:
        mean, m2, _ = tl.reduce((xf, tl.zeros_like(xf), cm.to(tl.float32)), 0, _welford_merge)
        var = tl.maximum(m2 / n_cols, 0.0)
        c = 0.0
        xc = xf - mean
    elif MODE == 3:
        s1, s2 = tl.reduce((xf, xf * xf), 0, _pair_add)
        mean = s1 / n_cols
        var = tl.maximum(s2 / n_cols - mean * mean, 0.0)
        c = 0.0
        xc = xf - mean
    else:
        mean = tl.sum(xf, axis=0) / n_cols
        xc = tl.where(cm, xf - mean, 0.0)
        if MODE == 1:
            s1, s2 = tl.reduce((xc, xc * xc), 0, _pair_add)
        else:
            s1 = tl.sum(xc, axis=0)
            s2 = tl.sum(xc * xc, axis=0)
        c = s1 / n_cols
        var = tl.maximum(s2 / n_cols - c * c, 0.0)
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    w = tl.load(W + cols, mask=cm, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=cm, other=0.0).to(tl.float32)
    y = (xc - c) * rstd * w + b
    tl.store(Y + row * n_cols + cols, y.to(Y.dtype.element_ty), mask=cm)
    tl.store(MEAN + row, mean + c)
    tl.store(RSTD + row, rstd)


def tune_fwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w, b = torch.rand(n, device="cuda", dtype=DT), torch.randn(n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    mean = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    rstd = torch.empty_like(mean)
    ref = torch.nn.functional.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
    block_n = triton.next_power_of_2(n)
    res = []
    for bm in (1,) if n > 8192 else (1, 2, 4):
        for nw in (1, 2, 4, 8, 16, 32):
            if bm * block_n // (32 * nw) < 2 or bm * block_n > 32768:
                continue
            for affine in (False, True) if bm == 1 else (False,):
                grid = (triton.cdiv(ROWS, bm),)
                fn = lambda: layer_norm_fwd_kernel[grid](x, w, b, y, mean, rstd, ROWS, n // 8, n // 8, n // 8, 1e-5,
                                                         True, True, True, BLOCK_M=bm, BLOCK_N=block_n, ALIGN=8,
                                                         AFFINE=affine, num_warps=nw)
                res.append((bench(fn), f"2d bm={bm} nw={nw} affine={affine}"))
    for mode in (0, 1, 2, 3):
        for nw in (4, 8, 16, 32):
            if block_n // (32 * nw) < 2:
                continue
            fn = lambda: fwd_1d_kernel[(ROWS,)](x, w, b, y, mean, rstd, n, 1e-5, BLOCK_N=block_n, ALIGN=8,
                                                MODE=mode, num_warps=nw)
            fn()
            err = (y.float() - ref).abs().max().item()
            res.append((bench(fn), f"1d mode={mode} nw={nw} (max err {err:.3g})"))
    if n > 8192:
        for loop_n in (1024, 2048, 4096, 8192):
            for nw in (4, 8, 16):
                if loop_n // (32 * nw) < 2:
                    continue
                for progs in (ROWS,):  # one program per row (the kernel does not loop over rows)
                    fn = lambda: layer_norm_fwd_looped_kernel[(progs,)](x, w, b, y, mean, rstd, ROWS, n // 8, n // 8,
                                                                        n // 8, 1e-5, True, True, True,
                                                                        BLOCK_N=loop_n, ALIGN=8, num_warps=nw)
                    y.fill_(float("nan"))
                    fn()
                    err = (y.float() - ref).abs().max().item()
                    res.append((bench(fn), f"looped BLOCK_N={loop_n} nw={nw} programs={progs} (max err {err:.3g})"))
    copy_t = bench(lambda: y.copy_(x))
    res.sort()
    gbs = lambda t: 2 * x.numel() * 2 / t / 1e6
    best = "; ".join(f"{c} {t*1e3:.1f}us {gbs(t):.0f}GB/s" for t, c in res[:12])
    print(f"fwd n={n}: copy {copy_t*1e3:.1f}us; {best}", flush=True)
    compiled = torch.compile(lambda x, w, b: torch.nn.functional.layer_norm(x, (n,), w, b, 1e-5), dynamic=False)
    print(f"fwd n={n}: torch.compile {bench(lambda: compiled(x, w, b)) * 1e3:.1f}us", flush=True)
    try:
        from liger_kernel.ops.layer_norm import layer_norm_forward
        t = bench(lambda: layer_norm_forward(x, w, b, 1e-5))
        print(f"fwd n={n}: Liger-Kernel layer_norm_forward {t*1e3:.1f}us", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"Liger-Kernel: {str(e)[:100]}")


def tune_bwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dy = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    dx = torch.empty_like(x)
    mean = x.float().mean(1)
    rstd = torch.rsqrt(x.float().var(1, unbiased=False) + 1e-5)
    block_n = triton.next_power_of_2(n)
    res = []
    single = [] if block_n > 16384 else [(1, 4), (1, 8), (2, 4), (2, 8), (4, 8)] + ([(1, 16), (1, 32)] if n > 8192 else [])
    for bm, nw in single:
        for pre in (0, 1, 2):
            for per_sm in (1, 2, 3, 4):
                progs = SMS * per_sm
                part = torch.empty(2, progs, n, device="cuda", dtype=torch.float32)
                fn = lambda: layer_norm_bwd_kernel[(progs,)](dy, x, w, mean, rstd, dx, part[0], part[1], ROWS, n // 8,
                                                             n // 8, n // 8, n // 8, True, True, True, BLOCK_M=bm,
                                                             BLOCK_N=block_n, ALIGN=8, PREFETCH=pre, num_warps=nw)
                try:
                    res.append((bench(fn), f"bm={bm} nw={nw} prefetch={pre} progs/SM={per_sm}"))
                except Exception as e:  # noqa: BLE001
                    print(f"bwd bm={bm} nw={nw} pre={pre} per_sm={per_sm}: {str(e)[:80]}")
    if n > 8192:
        stats = torch.empty(ROWS, 4, device="cuda", dtype=torch.float32)
        xr = x.float().requires_grad_()
        wr = w.float().requires_grad_()
        yr = torch.nn.functional.layer_norm(xr, (n,), wr, None, 1e-5)
        ref_dx = torch.autograd.grad(yr, xr, dy.float())[0]
        stat_res = []
        for stat_n in (1024, 2048, 4096, 8192):
            for nw in (4, 8, 16):
                for progs in (ROWS,):  # one program per row (the kernel does not loop over rows)
                    fn = lambda: layer_norm_bwd_rowstats_kernel[(progs,)](dy, x, w, mean, rstd, stats, ROWS, n // 8,
                                                                          n // 8, n // 8, True, BLOCK_N=stat_n,
                                                                          ALIGN=8, num_warps=nw)
                    stat_res.append((bench(fn), f"rowstats BLOCK_N={stat_n} nw={nw} programs={progs}"))
        stat_res.sort()
        print(f"bwd n={n} rowstats (2 reads): " + "; ".join(f"{c} {t*1e3:.1f}us {2 * x.numel() * 2 / t / 1e6:.0f}GB/s"
                                                           for t, c in stat_res[:4]), flush=True)
        layer_norm_bwd_rowstats_kernel[(ROWS,)](dy, x, w, mean, rstd, stats, ROWS, n // 8, n // 8, n // 8, True,
                                                BLOCK_N=4096, ALIGN=8, num_warps=8)
        for bm in (1, 2, 4, 8):
            for cn in (256, 512, 1024, 2048):
                for nw in (2, 4, 8):
                    if bm * cn // (32 * nw) < 4 or bm * cn // (32 * nw) > 32:
                        continue
                    col_blocks = triton.cdiv(n, cn)
                    for per_sm in (2, 4, 8):
                        progs = max(1, min(triton.cdiv(SMS * per_sm, col_blocks), triton.cdiv(ROWS, bm)))
                        part = torch.empty(2, progs, n, device="cuda", dtype=torch.float32)
                        fn = lambda: layer_norm_bwd_cols_kernel[(progs, col_blocks)](
                            dy, x, w, mean, rstd, stats, dx, part[0], part[1], ROWS, n // 8, n // 8, n // 8, n // 8,
                            True, True, True, BLOCK_M=bm, BLOCK_N=cn, ALIGN=8, num_warps=nw)
                        try:
                            dx.fill_(float("nan"))
                            fn()
                            err = (dx.float() - ref_dx).abs().max().item()
                            t = bench(fn)
                            res.append((t + stat_res[0][0], f"split: best rowstats + cols bm={bm} BLOCK_N={cn} nw={nw} "
                                                           f"programs/SM={per_sm} (cols {t*1e3:.1f}us, dx err {err:.3g})"))
                        except Exception as e:  # noqa: BLE001
                            print(f"bwd cols bm={bm} n={cn} nw={nw} per_sm={per_sm}: {str(e)[:80]}")
    res.sort()
    gbs = lambda t: 3 * x.numel() * 2 / t / 1e6
    print(f"bwd n={n} (kernel only, no column sum): " + "; ".join(f"{c} {t*1e3:.1f}us {gbs(t):.0f}GB/s"
                                                               for t, c in res[:6]), flush=True)


if __name__ == "__main__":
    only = {a for a in sys.argv[1:] if a in ("fwd", "bwd")} or {"fwd", "bwd"}
    for n in [int(a) for a in sys.argv[1:] if a.isdigit()] or [4096]:
        if "fwd" in only:
            tune_fwd(n)
        if "bwd" in only:
            tune_bwd(n)
