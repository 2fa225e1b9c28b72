"""GroupNorm's register kernel with its statistics on the tensor cores (JIT, no build): bf16/fp16 [n, 512, 64, 64]
(groups of 16 x 4096), timed as the benchmarks, against the build's register kernel and a copy of x. H200,
2026-12-01: 77.2 us at 32 warps (80.2 at 16) against the register kernel's 76.4; the mma work (8 products an
element) costs what the saved instructions and reduction gave back. Not kept.

    python scripts/gn_mma_probe.py            # on the GPU box

The build's kernel spends ~11 instructions per int32 pair on its two statistics passes (unpack, add; unpack, subtract,
square, accumulate) and two block reductions. Here one mma.sync m16n8k16 (bf16 in, fp32 accumulate) per 8 pairs
of a warp's registers sums them (B all ones: every column of D is a row sum, so a warp's D sums to 4x its
elements), and two more give the squares: with B = rows 0-7 (then 8-15) of the same A fragment transposed,
D's diagonal holds each row's sum of squares. Products of 16-bit values are exact in fp32. One block reduction of
(sum, sum of squares) follows; var = E[x^2] - mean^2, exact enough while mean^2 <= 3 var (the error of E[x^2] is
amplified by (var + mean^2) / var <= 4); a group whose mean is larger than that takes the build's exact centred
pass instead.
"""
import torch
import triton
import triton.language as tl

import gn_cases
from gn_cases import gn


def _mma(d, a, b, c, bf16):
    kind = "bf16" if bf16 else "f16"
    return (f"mma.sync.aligned.m16n8k16.row.col.f32.{kind}.{kind}.f32 {{{d}0, {d}1, {d}2, {d}3}}, "
            f"{{{a}}}, {{{b}}}, {{{c}}};")


def _stats_asm(bf16):
    """pack=8: $16-$23 the int32 pairs; $0 the sum (x4) of their 16 values' warp, $8 the sum of squares; the
    other outputs 0."""
    one = "0x3F803F80" if bf16 else "0x3C003C00"
    a1, a2 = "$16, $17, $18, $19", "$20, $21, $22, $23"
    zero = "z, z, z, z"
    lines = [
        "{", ".reg .b32 one; .reg .f32 z, c<4>, e<4>, f<4>; .reg .u32 ln, g, t; .reg .pred p0, p1;",
        f"mov.b32 one, {one};", "mov.f32 z, 0f00000000;",
        _mma("c", a1, "one, one", zero, bf16),
        _mma("c", a2, "one, one", "c0, c1, c2, c3", bf16),
        _mma("e", a1, "$16, $18", zero, bf16),
        _mma("e", a2, "$20, $22", "e0, e1, e2, e3", bf16),
        _mma("f", a1, "$17, $19", zero, bf16),
        _mma("f", a2, "$21, $23", "f0, f1, f2, f3", bf16),
        "add.f32 $0, c0, c2;",
        "mov.u32 ln, %laneid;", "shr.u32 g, ln, 2;", "and.b32 t, ln, 3;", "shl.b32 t, t, 1;", "sub.u32 g, g, t;",
        "setp.eq.u32 p0, g, 0;", "setp.eq.u32 p1, g, 1;",
        "add.f32 e0, e0, f2;", "add.f32 e1, e1, f3;", "selp.f32 e1, e1, z, p1;", "selp.f32 $8, e0, e1, p0;",
    ]
    lines += [f"mov.f32 ${i}, z;" for i in list(range(1, 8)) + list(range(9, 16))]
    lines.append("}")
    return tl.constexpr("\n".join(lines))


STATS_BF16, STATS_F16 = _stats_asm(True), _stats_asm(False)
STATS_CONSTRAINTS = tl.constexpr("=r," * 16 + ",".join(["r"] * 8))


@triton.jit
def _add2(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def regs_mma_kernel(X, W, B, Y, MEAN, RSTD, N, C, CPG, G, eps, ahead, BLOCK_C: tl.constexpr,
                    BLOCK_HW: tl.constexpr, EXACT: tl.constexpr):
    IS_BF16: tl.constexpr = X.dtype.element_ty == tl.bfloat16
    asm: tl.constexpr = STATS_BF16 if IS_BF16 else STATS_F16
    grp, size, count, cs, cm, mask, offs, v = gn._regs_group(X, N, CPG, G, ahead, BLOCK_C, BLOCK_HW)
    s, q = tl.inline_asm_elementwise(asm, STATS_CONSTRAINTS, [v], dtype=(tl.float32, tl.float32),
                                     is_pure=True, pack=8)
    s, q = tl.reduce((tl.reshape(s, [s.numel], can_reorder=True), tl.reshape(q, [q.numel], can_reorder=True)), 0,
                     _add2)
    mean = s * 0.25 / count
    var = q / count - mean * mean
    if EXACT or (mean * mean > 3.0 * var):
        var = gn._flat_sum(tl.where(mask, gn._pair_sq(v, mean, IS_BF16), 0.0)) / count
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    tl.store(MEAN + grp, mean)
    tl.store(RSTD + grp, rstd)
    scale, shift = gn._channel_affine(W, B, (grp % G) * CPG + cs, cm, mean, rstd, True, True, BLOCK_C)
    tl.store((Y + grp * size).to(tl.pointer_type(tl.int32)) + offs,
             gn._pair_affine(v, scale[:, None], shift[:, None], IS_BF16), mask=mask, eviction_policy="evict_first")


def _near_threshold(x):
    # group 2 of sample 0 at mean ~ 1 sigma (the fast path), group 4 at 1.7 sigma (near the threshold)
    x[0, 2 * gn_cases.CPG:3 * gn_cases.CPG] += 1.0
    x[0, 4 * gn_cases.CPG:5 * gn_cases.CPG] += 1.7


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    ceiling = gn_cases.harness.copy_ceiling_gbps()
    g, cpg = gn_cases.G, gn_cases.CPG
    for dt in (torch.bfloat16, torch.float16):
        for n in (32, 33):
            k = gn_cases.make_case(n, dt, ceiling, tweak=_near_threshold)
            cands = [gn_cases.build_regs(k, sms)]
            for wp in (16, 32):
                for exact in (False, True):
                    cands.append((f"mma {wp} warps{' exact' if exact else ''}",
                                  lambda wp=wp, exact=exact: regs_mma_kernel[(n * g,)](
                                      k.x, k.w, k.b, k.y, k.mean, k.rstd, n, gn_cases.C, cpg, g, 1e-5, sms // 2,
                                      BLOCK_C=cpg, BLOCK_HW=gn_cases.HW, EXACT=exact, num_warps=wp)))
            gn_cases.run(k, cands, width=22)


if __name__ == "__main__":
    main()
