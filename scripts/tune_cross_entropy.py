"""Sweep launch configurations of the fused cross-entropy training forward (cross_entropy_fwd_grad_kernel) with
Triton's JIT (same source as the AOT build), timed like the benchmarks (do_bench flushes L2), and check it.

    python scripts/tune_cross_entropy.py [vocab ...]     # on the GPU box; default 128256; 4096 rows, bf16

Prints ms and GB/s (2 bytes moved per logit byte: read once from memory, gradient written once) for
BLOCK_N x num_warps x programs per SM, best first. The AOT build uses BLOCK_N 8192 with ROW_BLOCKS[8192] = 16
warps (triton_src/cross_entropy.py) and kFwdGradWarpsPerSm / warps = 1 program per SM (csrc/ops/cross_entropy.cpp).
"""
import sys
from pathlib import Path

import torch
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton_src.cross_entropy as ce  # noqa: E402

ROWS = 4096
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main():
    vocabs = [int(v) for v in sys.argv[1:]] or [128256]
    for V in vocabs:
        x = torch.randn(ROWS, V, device="cuda", dtype=torch.bfloat16) * 3
        t = torch.randint(0, V, (ROWS,), device="cuda")
        t[::8] = -100
        valid = t != -100
        stats = torch.stack([valid.sum().float(), valid.sum().float(), torch.tensor(float(V), device="cuda")])
        w = torch.ones(1, device="cuda")
        ce_row, z_row, lse = (torch.empty(ROWS, device="cuda") for _ in range(3))
        dx = torch.empty_like(x)
        sync, slots = torch.zeros(1, device="cuda", dtype=torch.int32), torch.empty(1, device="cuda")  # no TAIL
        align = 8 if V % 8 == 0 else 1
        ref_lse = torch.logsumexp(x.float(), -1)
        p = torch.softmax(x[:64].float(), -1)
        p[torch.arange(64, device="cuda"), t[:64].clamp(min=0)] -= 1
        ref_g = torch.where(valid[:64, None], p / valid.sum(), 0.0)
        results = []
        copy_ms = bench(lambda: dx.copy_(x))
        for block, warps, fast in [(b, w, f) for b, w in ((4096, 8), (8192, 8), (8192, 16), (8192, 32), (16384, 16),
                                                          (16384, 32), (2048, 4), (4096, 4)) for f in (False, True)]:
            for per_sm in (1, 2, 4):
                if per_sm * warps > 64:
                    continue
                programs = min(ROWS, SMS * per_sm)

                def run():
                    ce.cross_entropy_fwd_grad_kernel[(programs,)](
                        x, t, w, stats, ce_row, z_row, lse, dx, sync, slots, ROWS, V // align, V // align, V // align,
                        -100, 0.0, 0.0, 1.0, False, False, True, BLOCK_N=block, ALIGN=align, ACCURATE=False,
                        FAST=fast, num_warps=warps)

                run()
                lse_err = (torch.where(valid, lse - ref_lse, 0.0)).abs().max().item()
                g_err = (dx[:64].float() - ref_g).abs().max().item() / ref_g.abs().max().item()
                ms = bench(run)
                results.append((ms, block, warps, per_sm, fast, lse_err, g_err))
                print(f"V={V} BLOCK_N={block:5} warps={warps:2} per_sm={per_sm} FAST={int(fast)}: {ms:.4f} ms "
                      f"{2 * x.numel() * 2 / ms / 1e6:6.0f} GB/s  lse err {lse_err:.2e} grad rel err {g_err:.2e}",
                      flush=True)
        print(f"\nV={V}: copy of the logits {copy_ms:.4f} ms ({2 * x.numel() * 2 / copy_ms / 1e6:.0f} GB/s); best:")
        for ms, block, warps, per_sm, fast, lse_err, g_err in sorted(results)[:8]:
            print(f"  {ms:.4f} ms  BLOCK_N={block} warps={warps} per_sm={per_sm} FAST={int(fast)}")


if __name__ == "__main__":
    main()
