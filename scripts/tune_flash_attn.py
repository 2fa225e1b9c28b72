"""Sweep tile configurations of the flash_attn kernels with Triton's JIT (same source as the AOT build), timed
like the benchmarks (do_bench, median). Prints TFLOP/s and shared memory per config; the AOT table is TILES in
triton_src/flash_attn.py (every variant is built for every arch: a tile above ~99 KB of shared memory cannot
serve sm_80-on-8.6/8.9 or sm_120 parts).

    python scripts/tune_flash_attn.py [fwd|dkdv|dq ...] [--d 128] [--s 8192] [--full]    # on the GPU box
        [--bm 32,64 --bn 64,128 --warps 4,8 --stages 1,2,3]                               # a subset of tiles
"""
import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src import flash_attn as fa  # noqa: E402

SMEM_ALL_ARCHS = 99 * 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kernels", nargs="*", default=["fwd", "dkdv", "dq"])
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--s", type=int, default=8192)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--full", action="store_true", help="not causal")
    p.add_argument("--softcap", type=float, default=0.0)
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    p.add_argument("--bm", type=ints, default=(32, 64, 128))
    p.add_argument("--bn", type=ints, default=(32, 64, 128))
    p.add_argument("--warps", type=ints, default=(4, 8))
    p.add_argument("--stages", type=ints, default=(1, 2, 3, 4))
    args = p.parse_args()
    d, s, h = args.d, args.s, args.heads
    b = max(1, 16384 // s)
    causal = not args.full
    bd = triton.next_power_of_2(d)
    q, k, v, do = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    o = torch.empty_like(q)
    lse = torch.empty(b, h, s, device="cuda", dtype=torch.float32)
    delta = torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cu = torch.zeros(1, dtype=torch.int32, device="cuda")
    scale = d ** -0.5
    wr = 0 if causal else -1
    st = lambda t: (t.stride(0) // 8, t.stride(1) // 8, t.stride(2) // 8)  # noqa: E731
    flops = 4 * b * h * s * s * d / (2 if causal else 1)
    common = dict(HEAD_D=d, BLOCK_D=bd, HAS_SOFTCAP=args.softcap > 0, ALIGN=8)

    def fwd(bm, bn, w, ns):
        return lambda: fa.flash_attn_fwd_kernel[(triton.cdiv(s, bm), h, b)](
            q, k, v, o, lse, cu, cu, s, s, False, 1, *st(q), *st(k), *st(v), *st(o), h * s, s, scale, args.softcap,
            -1, wr, BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=ns, **common)

    def dkdv(bm, bn, w, ns):
        return lambda: fa.flash_attn_bwd_dkdv_kernel[(triton.cdiv(s, bn), h, b)](
            q, k, v, do, lse, delta, dk, dv, cu, cu, s, s, False, 1, *st(q), *st(k), *st(v), *st(do), *st(dk),
            *st(dv), h * s, s, scale, args.softcap, -1, wr, BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=ns,
            **common)

    def dqk(bm, bn, w, ns):
        return lambda: fa.flash_attn_bwd_dq_kernel[(triton.cdiv(s, bm), h, b)](
            q, k, v, do, lse, delta, dq, cu, cu, s, s, False, 1, *st(q), *st(k), *st(v), *st(do), *st(dq),
            h * s, s, scale, args.softcap, -1, wr, BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=ns, **common)

    fwd(128, 64, 8, 2)()  # a valid LSE for the backward kernels
    fa.flash_attn_bwd_preprocess_kernel[(triton.cdiv(s, 64), h, b)](
        o, do, delta, cu, s, False, *st(o), *st(do), h * s, s, HEAD_D=d, BLOCK_D=bd, BLOCK_M=64, ALIGN=8)
    makers = {"fwd": (fwd, 1.0), "dkdv": (dkdv, 2.0), "dq": (dqk, 1.5)}  # share of the forward's FLOPs
    current = {kind: fa.TILES[kind][bd] for kind in makers}
    for kind in args.kernels:
        make, share = makers[kind]
        results = []
        for bm in args.bm:
            for bn in args.bn:
                for w in args.warps:
                    for ns in args.stages:
                        try:
                            fn = make(bm, bn, w, ns)
                            compiled = fn()  # Triton's run() returns the compiled kernel
                            torch.cuda.synchronize()
                            ms = tt.do_bench(fn, warmup=10, rep=50, return_mode="median")
                        except Exception as e:  # out of resources: skip the config
                            print(f"  {kind} {bm}x{bn} w{w} s{ns}: {type(e).__name__}", flush=True)
                            continue
                        smem = getattr(getattr(compiled, "metadata", None), "shared", -1)
                        tflops = flops * share / ms / 1e9
                        tags = (" (current)" if (bm, bn, w, ns) == current[kind] else "") + \
                            (" [Hopper only]" if smem > SMEM_ALL_ARCHS else "")
                        print(f"  {kind} {bm}x{bn} w{w} s{ns}: {ms:.3f} ms {tflops:.0f} TFLOP/s, "
                              f"{smem // 1024} KB{tags}", flush=True)
                        results.append((tflops, bm, bn, w, ns, smem))
        results.sort(reverse=True)
        print(f"{kind} d{d} s{s} {'causal' if causal else 'full'}: best "
              + "; ".join(f"{bm}x{bn} w{w} s{ns} {t:.0f} ({m // 1024} KB)" for t, bm, bn, w, ns, m in results[:6]),
              flush=True)


if __name__ == "__main__":
    main()
