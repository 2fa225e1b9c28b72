"""GroupNorm's register kernel with the L2 prefetch of the group `ahead` programs later issued at STEP bytes
(128: the build's, one address per 128-byte line; 64 and 32: two or four addresses a line), bf16 and fp16
[n, 512, 64, 64], timed as the benchmarks (JIT, no build). Nsight Compute showed the build's loads missing L2 on
62 % of their sectors (lts__t_sectors_srcunit_tex_op_read_lookup_miss) although DRAM reads x once.

    python scripts/gn_prefetch_probe.py          # on the GPU box
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
import triton_src.group_norm as gn  # noqa: E402
from triton_src._rows import prefetch_l2  # noqa: E402


@triton.jit
def regs_step_kernel(X, W, B, Y, MEAN, RSTD, N, C, CPG, G, eps, ahead, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr, STEP: tl.constexpr):
    IS_BF16: tl.constexpr = X.dtype.element_ty == tl.bfloat16
    PAIRS: tl.constexpr = BLOCK_HW // 2
    grp = tl.program_id(0)
    size = tl.cast(CPG, tl.int64) * BLOCK_HW
    count = (CPG * BLOCK_HW).to(tl.float32)
    cs = tl.arange(0, BLOCK_C)
    ps = tl.arange(0, PAIRS)
    cm = cs < CPG
    mask = cm[:, None] & (ps < PAIRS)[None, :]
    offs = cs[:, None] * PAIRS + ps[None, :]
    v = tl.load((X + grp * size).to(tl.pointer_type(tl.int32)) + offs, mask=mask, other=0,
                eviction_policy="evict_first")
    nxt = grp + ahead
    prefetch_l2((X + tl.cast(nxt, tl.int64) * size).to(tl.pointer_type(tl.int8)), size * 2, nxt < N * G, STEP,
                BLOCK_C * BLOCK_HW * 2 // STEP)
    mean = gn._flat_sum(gn._pair_sum(v, IS_BF16)) / count
    rstd = 1.0 / tl.sqrt_rn(gn._flat_sum(tl.where(mask, gn._pair_sq(v, mean, IS_BF16), 0.0)) / count + eps)
    tl.store(MEAN + grp, mean)
    tl.store(RSTD + grp, rstd)
    scale, shift = gn._channel_affine(W, B, (grp % G) * CPG + cs, cm, mean, rstd, True, True, BLOCK_C)
    tl.store((Y + grp * size).to(tl.pointer_type(tl.int32)) + offs,
             gn._pair_affine(v, scale[:, None], shift[:, None], IS_BF16), mask=mask, eviction_policy="evict_first")


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = harness.copy_ceiling_gbps()
    c, hw, g = 512, 4096, 32
    cpg = c // g
    for dt, ns in ((torch.bfloat16, (32, 33, 16)), (torch.float16, (32,))):
        for n in ns:
            x = torch.randn(n, c, hw, device="cuda", dtype=dt)
            w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=dt)
            b = 0.1 * torch.randn(c, device="cuda", dtype=dt)
            y = torch.empty_like(x)
            mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
            yref = F.group_norm(x.double(), g, w.double(), b.double(), 1e-5)
            nbytes = 2 * x.numel() * x.element_size()
            tcopy = harness.time_ms(lambda: y.copy_(x))
            print(f"{dt} [{n}, {c}, {hw}]: copy {tcopy * 1e3:.2f} us "
                  f"({nbytes / tcopy / 1e6 / ceiling * 100:.1f} % of {ceiling:.0f} GB/s)", flush=True)
            cands = [("build (STEP 128, ahead sms/2)", lambda: gn.group_norm_fwd_regs_kernel[(n * g,)](
                x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, True, True, True, sms // 2, BLOCK_C=16,
                BLOCK_HW=hw, num_warps=32))]
            for step in (128, 64, 32):
                for ahead in (sms // 2, 3 * sms // 4, sms, 3 * sms // 2):
                    cands.append((f"STEP {step} ahead {ahead}", lambda step=step, ahead=ahead: regs_step_kernel[
                        (n * g,)](x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, ahead, BLOCK_C=16, BLOCK_HW=hw,
                                  STEP=step, num_warps=32)))
            for rep in range(2):
                for name, fn in cands:
                    err = ""
                    if rep == 0:
                        y.fill_(float("nan"))
                        fn()
                        torch.cuda.synchronize()
                        err = f"y err {(y.double() - yref).abs().max().item():.3g}"
                    t = harness.time_ms(fn)
                    print(f"  {name:<30} {t * 1e3:7.2f} us {nbytes / t / 1e6 / ceiling * 100:5.1f} % of copy {err}",
                          flush=True)


if __name__ == "__main__":
    main()
