"""GroupNorm's register kernel with the L2 prefetch of the group `ahead` programs later issued at STEP bytes
(128: the build's, one address per 128-byte line; 64 and 32: two or four addresses a line), bf16 and fp16
[n, 512, 64, 64], timed as the benchmarks (JIT, no build). Nsight Compute showed the build's loads missing L2 on
62 % of their sectors (lts__t_sectors_srcunit_tex_op_read_lookup_miss) although DRAM reads x once.

    python scripts/gn_prefetch_probe.py          # on the GPU box

H200, 2026-12-01: STEP 32 0.6 us faster than STEP 128 in this copy of the kernel, which itself timed 80.7 us
against the build's 76.2 (the same code apart from the runtime flags); further ahead slower (198 programs: 88.9).
Not kept.
"""
import torch
import triton
import triton.language as tl

import gn_cases
from gn_cases import gn
from triton_src._rows import prefetch_l2


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
    ceiling = gn_cases.harness.copy_ceiling_gbps()
    g, cpg = gn_cases.G, gn_cases.CPG
    for dt, ns in ((torch.bfloat16, (32, 33, 16)), (torch.float16, (32,))):
        for n in ns:
            k = gn_cases.make_case(n, dt, ceiling, far=False)
            cands = [gn_cases.build_regs(k, sms)]
            for step in (128, 64, 32):
                for ahead in (sms // 2, 3 * sms // 4, sms, 3 * sms // 2):
                    cands.append((f"STEP {step} ahead {ahead}", lambda step=step, ahead=ahead: regs_step_kernel[
                        (n * g,)](k.x, k.w, k.b, k.y, k.mean, k.rstd, n, gn_cases.C, cpg, g, 1e-5, ahead,
                                  BLOCK_C=cpg, BLOCK_HW=gn_cases.HW, STEP=step, num_warps=32)))
            gn_cases.run(k, cands, width=30)


if __name__ == "__main__":
    main()
