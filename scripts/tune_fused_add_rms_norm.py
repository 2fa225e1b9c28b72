"""Sweep the fused_add_rms_norm forward's launch configurations with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench flushes L2), beside torch.compile of x + r and Hugging Face's RMSNorm in the
same process. 8192 rows, bf16, with weight, casting "llama"; prints the best configurations.

    python scripts/tune_fused_add_rms_norm.py [hidden ...]      # on the GPU box

Sweeps the single-block kernel (one row per program, warps) and the looped kernel (BLOCK_N x warps, one program per row).
"""
import sys
from pathlib import Path

import torch
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.fused_add_rms_norm import (CASTING_LLAMA, fused_add_rms_norm_fwd_kernel,  # noqa: E402
                                           fused_add_rms_norm_fwd_looped_kernel)

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


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [16384]:
        tune_fwd(n)
