"""Launch the fused cross-entropy training forward (cross_entropy_fwd_grad_kernel) a few times, for a profiler;
each configuration runs the general loops and the FAST ones. A/B switches: CE_STORE_CS=1 (gradient stores with
.cs), CE_FFMA=1 (exponent form); CE_PROGRAMS, CE_V, CE_LAUNCHES, CE_FAST_ONLY (see main).

    ncu --clock-control none -k regex:fwd_grad --section SpeedOfLight --section MemoryWorkloadAnalysis \
        python3 scripts/ce_profile.py [BLOCK_N WARPS PER_SM ...]      # triples; default 8192 16 1

4096 rows x 128256 classes, bf16, as benchmarks/bench_cross_entropy.py's anchor. Prints the median time of each
configuration (CUDA events, L2 flushed before each launch) so the run also works without a profiler.
"""
import os
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton_src.cross_entropy as ce  # noqa: E402

ROWS, V = 4096, int(os.environ.get("CE_V", "128256"))

if os.environ.get("CE_FFMA") == "1":
    # A/B of the exponent's form: one FFMA of x * log2(e) - shift * log2(e) (leaves the rounding of
    # shift * log2(e) in the target's own term) instead of the build's (x - shift) * log2(e).
    @triton.jit
    def _fast_exp_ffma(x, shift, ACCURATE: tl.constexpr):
        log2e = 1.4426950408889634
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x * log2e - shift * log2e],
                                         dtype=tl.float32, is_pure=True, pack=1)

    ce._fast_exp = _fast_exp_ffma


def main():
    args = [int(a) for a in sys.argv[1:]] or [8192, 16, 1]
    configs = [tuple(args[i:i + 3]) for i in range(0, len(args), 3)]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    x = torch.randn(ROWS, V, device="cuda", dtype=torch.bfloat16) * 3
    t = torch.randint(0, V, (ROWS,), device="cuda")  # no ignored rows (scripts/tune_cross_entropy.py ignores 1/8)
    stats = torch.tensor([ROWS, ROWS, V], device="cuda", dtype=torch.float32)
    w = torch.ones(1, device="cuda")
    ce_row, z_row, lse = (torch.empty(ROWS, device="cuda") for _ in range(3))
    dx = torch.empty_like(x)
    sync, slots = torch.zeros(1, device="cuda", dtype=torch.int32), torch.empty(1, device="cuda")  # no TAIL
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    fasts = (True,) if os.environ.get("CE_FAST_ONLY") == "1" else (False, True)
    ref_lse = torch.logsumexp(x.float(), -1)
    # CE_PROGRAMS="96 120": those grid sizes instead of per_sm * SMs (fewer rows in flight, less L2 held)
    grids = [int(g) for g in os.environ.get("CE_PROGRAMS", "").split()] or [None]
    for (block, warps, per_sm), fast, grid in [(c, f, g) for c in configs for f in fasts for g in grids]:
        programs = grid or min(ROWS, sms * per_sm)
        times = []
        for _ in range(int(os.environ.get("CE_LAUNCHES", "5"))):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            ce.cross_entropy_fwd_grad_kernel[(programs,)](
                x, t, w, stats, ce_row, z_row, lse, dx, sync, slots, ROWS, V // 8, V // 8, V // 8, -100, 0.0, 0.0,
                1.0, False,
                False, True, BLOCK_N=block, ALIGN=8, ACCURATE=False, FAST=fast, num_warps=warps)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        ms = statistics.median(times)
        err = (lse - ref_lse).abs().max().item()
        print(f"BLOCK_N={block} warps={warps} programs={programs} FAST={int(fast)}: "
              f"{ms:.4f} ms (lse err {err:.1e}), "
              f"{2 * x.numel() * 2 / ms / 1e6:.0f} GB/s "
              f"(logits read once, gradient written once)", flush=True)


if __name__ == "__main__":
    main()
