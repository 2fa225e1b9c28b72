"""Sweep the persistent group_norm kernels' grid size with Triton's JIT (same source as the AOT build), timed like
the benchmarks (do_bench flushes L2), outputs checked against PyTorch.

    python scripts/tune_group_norm.py [N C H W G] [--tiles]   # on the GPU box; default 32 512 64 64 32, bf16

--tiles also times other tile shapes and warps at one program per group; --big times larger tiles (8192-32768
elements, 16-32 warps) at one and two programs per SM, whose groups in flight fit in L2 for the second read.

The launcher (csrc/ops/group_norm.cpp, group_programs) takes as many programs as are resident, at most one per
group; smaller grids keep the groups in flight within L2 for the second read (slower on the H200, 2026-11-29).
"""
import sys
from pathlib import Path

import torch
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton_src.group_norm as gn  # noqa: E402


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main():
    n, c, h, w_, g = [int(a) for a in sys.argv[1:6] if not a.startswith("--")] or [32, 512, 64, 64, 32]
    dt = torch.bfloat16
    hw = h * w_
    x = torch.randn(n, c, hw, device="cuda", dtype=dt) * 2 + 1
    dy = torch.randn_like(x)
    w, b = torch.rand(c, device="cuda") + 0.5, torch.randn(c, device="cuda")
    y, dx = torch.empty_like(x), torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    partial = torch.empty(2, n, c, device="cuda")
    block_hw = next(bh for bh in gn.HW_BLOCKS if bh >= hw or bh == gn.HW_BLOCKS[-1])
    bc = gn.block_c(block_hw)
    warps = gn._warps(bc * block_hw)
    ref = torch.nn.functional.group_norm(x.float(), g, w, b, 1e-5)
    copy = bench(lambda: y.copy_(x))
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    group_kb = c // g * hw * x.element_size() / 1024
    print(f"[{n}, {c}, {h}, {w_}] G={g} bf16: groups of {group_kb:.0f} KB, tile {bc}x{block_hw}, {warps} warps; "
          f"copy of x {copy * 1e3:.1f} us", flush=True)
    tiles = [(bc, block_hw, warps)]
    if len(sys.argv) > 6 or "--tiles" in sys.argv:
        tiles += [(bc2, bhw2, w2) for bc2, bhw2, w2 in ((1, 4096, 16), (2, 4096, 16), (1, 2048, 4), (1, 2048, 8),
                                                         (2, 2048, 8), (4, 1024, 8), (1, 1024, 4))
                  if bhw2 <= max(block_hw, 1024) and (bc2, bhw2, w2) != (bc, block_hw, warps)]
    runs = [(p, t) for p in sorted({sms, 2 * sms, 4 * sms, 8 * sms, n * g}) for t in tiles[:1]]
    runs += [(n * g, t) for t in tiles[1:]]
    if "--big" in sys.argv:
        runs += [(p, t) for t in ((2, 4096, 16), (4, 4096, 16), (4, 4096, 32), (8, 4096, 32)) if t[0] <= c // g
                 for p in (sms, 2 * sms)]
    for programs, (bc, block_hw, warps) in runs:
        programs = min(programs, n * g)

        def fwd():
            gn.group_norm_fwd_kernel[(programs,)](x, w, b, y, mean, rstd, n, c, c // g, hw // 8, g, 1e-5, True, True,
                                                  True, BLOCK_C=bc, BLOCK_HW=block_hw, ALIGN=8, num_warps=warps)

        def bwd():
            gn.group_norm_bwd_kernel[(programs,)](dy, x, w, mean, rstd, dx, partial, n, c, c // g, hw // 8, g, True,
                                                  True, BLOCK_C=bc, BLOCK_HW=block_hw, ALIGN=8, num_warps=warps)

        fwd()
        err = (y.float() - ref).abs().max().item()
        tf, tb = bench(fwd), bench(bwd)
        print(f"tile {bc}x{block_hw} nw={warps} programs={programs:5}: fwd {tf * 1e3:7.1f} us ({copy / tf * 100:3.0f} % of copy), "
              f"bwd {tb * 1e3:7.1f} us ({1.5 * copy / tb * 100:3.0f} % of a 3-tensor copy), y err {err:.3g}",
              flush=True)


if __name__ == "__main__":
    main()
