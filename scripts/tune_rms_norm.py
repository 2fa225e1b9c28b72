"""Sweep launch configurations of the rms_norm kernels with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench, L2 flushed). Prints the best configs per hidden size.

    python scripts/tune_rms_norm.py [hidden ...]      # on the GPU box; 8192 rows, bf16
"""
import sys
from pathlib import Path

import torch
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.rms_norm import rms_norm_bwd_kernel, rms_norm_fwd_kernel  # noqa: E402

ROWS = 8192
DT = torch.bfloat16
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def bench(fn):
    # do_bench flushes L2 between calls, as the benchmarks do; graphs would replay from a warm L2.
    return tt.do_bench(fn, warmup=10, rep=40, return_mode="median")


def tune_fwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    rstd = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    block_n = triton.next_power_of_2(n)
    res = []
    for bm in (1, 2, 4):
        if bm * block_n > 65536 or bm * block_n < 1024:
            continue
        for nw in (4, 8, 16, 32):
            if bm * block_n // (32 * nw) < 2:
                continue
            grid = (triton.cdiv(ROWS, bm),)
            fn = lambda: rms_norm_fwd_kernel[grid](x, w, y, rstd, ROWS, n // 8, n // 8, n // 8, 1e-6, 0.0, True, True,
                                                   CASTING=0, BLOCK_M=bm, BLOCK_N=block_n, ALIGN=8, num_warps=nw)
            try:
                t = bench(fn)
            except Exception as e:  # noqa: BLE001
                print(f"fwd n={n} bm={bm} nw={nw} failed: {str(e)[:80]}")
                continue
            res.append((t, bm, nw))
    res.sort()
    gbs = lambda t: 2 * x.numel() * 2 / t / 1e6
    print(f"fwd n={n:6d}: best " + ", ".join(f"bm={bm} nw={nw} {t*1e3:.1f}us {gbs(t):.0f}GB/s" for t, bm, nw in res[:4]),
          flush=True)


def tune_bwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dy = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    dx = torch.empty_like(x)
    rstd = torch.rand(ROWS, device="cuda", dtype=torch.float32)
    block_n = triton.next_power_of_2(n)
    res = []
    for bm in (1, 2):
        if bm * block_n > 16384 or bm * block_n < 1024:
            continue
        for nw in (4, 8, 16):
            if bm * block_n // (32 * nw) < 2:
                continue
            for prefetch in (False, True):
                for per_sm in (1, 2, 4):
                    g = min(SMS * per_sm, triton.cdiv(ROWS, bm))
                    part = torch.empty(g, n, device="cuda", dtype=torch.float32)

                    def fn():
                        rms_norm_bwd_kernel[(g,)](dy, x, w, rstd, dx, part, ROWS, n // 8, n // 8, n // 8, n // 8, 0.0,
                                                  True, True, CASTING=0, BLOCK_M=bm, BLOCK_N=block_n, ALIGN=8,
                                                  PREFETCH=prefetch, num_warps=nw)
                        part.sum(0).to(DT)
                    try:
                        t = bench(fn)
                    except Exception as e:  # noqa: BLE001
                        print(f"bwd n={n} bm={bm} nw={nw} failed: {str(e)[:80]}")
                        break
                    res.append((t, bm, nw, prefetch, per_sm))
    res.sort()
    gbs = lambda t: 3 * x.numel() * 2 / t / 1e6
    print(f"bwd n={n:6d}: best " + ", ".join(f"bm={bm} nw={nw} prefetch={pf} per_sm={p} {t*1e3:.1f}us {gbs(t):.0f}GB/s"
                                         for t, bm, nw, pf, p in res[:4]), flush=True)


if __name__ == "__main__":
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src))
    print(f"copy {2 * src.numel() / t / 1e6:.0f} GB/s", flush=True)
    del src, dst
    fwd_sizes = [int(a) for a in sys.argv[1:]] or [4096, 32768, 65536]
    bwd_sizes = [int(a) for a in sys.argv[1:]] or [4096, 2048, 8192, 16384]
    for n in bwd_sizes:
        tune_bwd(n)
    for n in fwd_sizes:
        tune_fwd(n)
