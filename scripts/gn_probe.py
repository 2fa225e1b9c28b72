"""GroupNorm experiments through the JIT (no build needed), bf16, timed as the benchmarks (benchmarks/harness.time_ms:
L2 flushed, stream held), next to torch.compile in the same process.

    python scripts/gn_probe.py            # on the GPU box

1. The register kernel ([32, 512, 64, 64]: groups of 16 x 4096 held in registers) with its statistics done three
   ways: two reductions (the build's: the mean, then the centred sum of squares), one reduction of the sums of
   x - x0 and (x - x0)^2 with x0 the group's first element, and one reduction of per-pair (mean, M2, count) merged
   with Chan's formula. Errors against a float64 reference, also on a group whose first element is its only
   non-zero (the worst case for the x0 shift).
2. The fwd + bwd + dweight/dbias chain at [8, 1024, 16, 16] (groups of 32 x 256): the build's tile kernels with and
   without programmatic dependent launch (every kernel begins with pdl_start), and with one [32, 256] tile per group
   (each group read once), against torch.compile's fwd+bwd.
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

_UNPACK2 = {True: "shl.b32 a, $2, 16; and.b32 b, $2, 0xffff0000;",
            False: "mov.b32 {l, h}, $2; cvt.f32.f16 a, l; cvt.f32.f16 b, h;"}


def _asm2(body, bf16):
    return tl.constexpr("{ .reg .f32 a, b; .reg .b16 l, h; " + _UNPACK2[bf16] + " " + body + " }")


# (sum, sum of squares) of the pair less the shift $3
_SHIFTED = "sub.f32 a, a, $3; sub.f32 b, b, $3; add.f32 $0, a, b; mul.f32 a, a, a; fma.rn.f32 $1, b, b, a;"
# (mean, M2) of the pair
_PAIR_M = "add.f32 $0, a, b; mul.f32 $0, $0, 0f3F000000; sub.f32 a, a, b; mul.f32 a, a, a; mul.f32 $1, a, 0f3F000000;"
SHIFTED_BF16 = _asm2(_SHIFTED, True)
PAIR_M_BF16 = _asm2(_PAIR_M, True)


@triton.jit
def _add2(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _chan(ma, qa, na, mb, qb, nb):
    n = na + nb
    r = tl.fdiv(nb, tl.maximum(n, 1.0))
    d = mb - ma
    return ma + d * r, qa + qb + d * d * na * r, n


@triton.jit
def regs_stats_kernel(X, W, B, Y, MEAN, RSTD, N, C, CPG, G, eps, ahead, BLOCK_C: tl.constexpr,
                      BLOCK_HW: tl.constexpr, STATS: tl.constexpr):
    """gn.group_norm_fwd_regs_kernel (bf16, weight and bias) with STATS 0: its two reductions, 1: one reduction of
    shifted sums (shift x0), 2: one Chan reduction of per-pair (mean, M2, count)."""
    PAIRS: tl.constexpr = BLOCK_HW // 2
    grp = tl.program_id(0)
    size = tl.cast(CPG, tl.int64) * BLOCK_HW
    count = (CPG * BLOCK_HW).to(tl.float32)
    cs = tl.arange(0, BLOCK_C)
    ps = tl.arange(0, PAIRS)
    cm = cs < CPG
    mask = cm[:, None] & (ps < PAIRS)[None, :]
    offs = cs[:, None] * PAIRS + ps[None, :]
    base = X + grp * size
    v = tl.load(base.to(tl.pointer_type(tl.int32)) + offs, mask=mask, other=0, eviction_policy="evict_first")
    if STATS == 1:
        x0 = tl.load(base).to(tl.float32)
    nxt = grp + ahead
    prefetch_l2((X + tl.cast(nxt, tl.int64) * size).to(tl.pointer_type(tl.int8)), size * 2, nxt < N * G, 128,
                BLOCK_C * BLOCK_HW * 2 // 128)
    if STATS == 0:
        mean = gn._flat_sum(gn._pair_sum(v, True)) / count
        rstd = 1.0 / tl.sqrt_rn(gn._flat_sum(tl.where(mask, gn._pair_sq(v, mean, True), 0.0)) / count + eps)
    elif STATS == 1:
        s, q = tl.inline_asm_elementwise(SHIFTED_BF16, "=r,=r,r,r", [v, tl.zeros(v.shape, dtype=tl.float32) + x0],
                                         dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        s = tl.reshape(tl.where(mask, s, 0.0), [s.numel], can_reorder=True)
        q = tl.reshape(tl.where(mask, q, 0.0), [q.numel], can_reorder=True)
        s, q = tl.reduce((s, q), 0, _add2)
        md = s / count
        mean = x0 + md
        rstd = 1.0 / tl.sqrt_rn(tl.maximum(q / count - md * md, 0.0) + eps)
    else:
        m, q = tl.inline_asm_elementwise(PAIR_M_BF16, "=r,=r,r", [v], dtype=(tl.float32, tl.float32), is_pure=True,
                                         pack=1)
        n = tl.where(mask, 2.0, 0.0)
        m = tl.reshape(tl.where(mask, m, 0.0), [m.numel], can_reorder=True)
        q = tl.reshape(tl.where(mask, q, 0.0), [q.numel], can_reorder=True)
        n = tl.reshape(n, [n.numel], can_reorder=True)
        mean, m2, _n = tl.reduce((m, q, n), 0, _chan)
        rstd = 1.0 / tl.sqrt_rn(m2 / count + eps)
    tl.store(MEAN + grp, mean)
    tl.store(RSTD + grp, rstd)
    scale, shift = gn._channel_affine(W, B, (grp % G) * CPG + cs, cm, mean, rstd, True, True, BLOCK_C)
    tl.store((Y + grp * size).to(tl.pointer_type(tl.int32)) + offs,
             gn._pair_affine(v, scale[:, None], shift[:, None], True), mask=mask, eviction_policy="evict_first")


def ref_stats(x, g):
    xg = x.double().reshape(x.shape[0], g, -1)
    mean = xg.mean(-1)
    return mean, (xg.var(-1, unbiased=False) + 1e-5).rsqrt()


def part_regs(sms):
    n, c, hw, g = 32, 512, 4096, 32
    cpg = c // g
    x = torch.randn(n, c, hw, device="cuda", dtype=torch.bfloat16)
    w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
    b = 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
    # worst case for the x0 shift: group (0, 1) zero but its first element; group (0, 2) offset by 300 sigma
    x[0, cpg:2 * cpg] = 0
    x[0, cpg, 0] = 50.0
    x[0, 2 * cpg:3 * cpg] += 300
    y = torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    rm, rr = ref_stats(x, g)
    ceiling = harness.copy_ceiling_gbps()
    nbytes = 2 * x.numel() * 2
    print(f"regs [{n}, {c}, {hw}] G={g}: copy ceiling {ceiling:.0f} GB/s", flush=True)
    print(f"  copy of x: {harness.time_ms(lambda: y.copy_(x)) * 1e3:.2f} us", flush=True)
    for rep in range(2):
        for stats in (0, 1, 2):
            for warps in (32,) if rep else (32, 16):
                def fwd():
                    regs_stats_kernel[(n * g,)](x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, sms // 2, BLOCK_C=16,
                                                BLOCK_HW=hw, STATS=stats, num_warps=warps)
                y.fill_(float("nan"))
                fwd()
                torch.cuda.synchronize()
                yref = F.group_norm(x.double(), g, w.double(), b.double(), 1e-5)
                ey = (y.double() - yref).abs().max().item()
                em = ((mean.double() - rm).abs() / rr.reciprocal()).max().item()
                er = ((rstd.double() - rr).abs() / rr).max().item()
                er_hot = ((rstd[0, 1].double() - rr[0, 1]).abs() / rr[0, 1]).item()
                t = harness.time_ms(fwd)
                print(f"  STATS={stats} warps={warps}: {t * 1e3:7.2f} us {nbytes / t / 1e6 / ceiling * 100:5.1f} % "
                      f"of copy | y err {ey:.3g}, mean err/sigma {em:.2e}, rstd rel err {er:.2e} "
                      f"(one-hot group {er_hot:.2e})", flush=True)


def part_chain(sms, n=8, c=1024, h=16, g=32, configs=None):
    """fwd + bwd + dweight/dbias reduction at [n, c, h, h], bf16, over tile configs (BLOCK_C, BLOCK_HW, warps,
    forward programs, backward programs), each without and with PDL; torch.compile's fwd+bwd in the same process."""
    hw = h * h
    cpg = c // g
    dt = torch.bfloat16
    x = torch.randn(n, c, hw, device="cuda", dtype=dt)
    dy = torch.randn_like(x)
    w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=dt)
    b = 0.1 * torch.randn(c, device="cuda", dtype=dt)
    y, dx = torch.empty_like(x), torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    partial = torch.empty(2, n, c, device="cuda")
    dw, db = torch.empty(c, device="cuda", dtype=dt), torch.empty(c, device="cuda", dtype=dt)
    groups = n * g
    configs = configs or ((16, 256, 8, groups, groups), (32, 256, 8, groups, groups), (32, 256, 16, groups, groups))

    def fwd(block_c, block_hw, warps, grid, pdl):
        gn.group_norm_fwd_kernel[(grid,)](x, w, b, y, mean, rstd, n, c, cpg, hw // 8, g, 1e-5, True, True,
                                          True, BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=8, PDL=pdl,
                                          num_warps=warps, launch_pdl=pdl)

    def chain(block_c, block_hw, warps, grid_f, grid_b, pdl):
        def run():
            fwd(block_c, block_hw, warps, grid_f, pdl)
            gn.group_norm_bwd_kernel[(grid_b,)](dy, x, w, mean, rstd, dx, partial, n, c, cpg, hw // 8, g, True, True,
                                                BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=8, PDL=pdl,
                                                num_warps=warps, launch_pdl=pdl)
            gn.group_norm_reduce_kernel[(triton.cdiv(c, 128), 2)](partial, dw, db, n, c, BLOCK_N=32, BLOCK_C=128,
                                                                  PDL=pdl, num_warps=4, launch_pdl=pdl)
        return run

    xr = x.double().requires_grad_()
    wr = w.double().requires_grad_()
    br = b.double().requires_grad_()
    F.group_norm(xr, g, wr, br, 1e-5).backward(dy.double())
    yref = F.group_norm(x.double(), g, w.double(), b.double(), 1e-5)

    xc = x.clone().requires_grad_()
    wc = w.clone().requires_grad_()
    bc = b.clone().requires_grad_()
    comp = torch.compile(lambda a, ww, bb: F.group_norm(a, g, ww, bb, 1e-5), dynamic=False)
    comp_fwd = torch.compile(lambda a, ww, bb: F.group_norm(a, g, ww, bb, 1e-5), dynamic=False)

    def compiled():
        comp(xc, wc, bc).backward(dy)
    compiled()
    with torch.no_grad():
        comp_fwd(x, w, b)
    print(f"chain [{n}, {c}, {h}, {h}] G={g} fwd+bwd+reduce:", flush=True)
    for rep in range(2):
        for block_c, block_hw, warps, grid_f, grid_b in configs:
            for pdl in (False, True):
                run = chain(block_c, block_hw, warps, grid_f, grid_b, pdl)
                for t in (y, dx, dw, db):
                    t.fill_(float("nan"))
                run()
                torch.cuda.synchronize()
                err = max((y.double() - yref).abs().max().item(), (dx.double() - xr.grad).abs().max().item(),
                          (dw.double() - wr.grad).abs().max().item() / wr.grad.abs().max().item(),
                          (db.double() - br.grad).abs().max().item() / br.grad.abs().max().item())
                tf = harness.time_ms(lambda: fwd(block_c, block_hw, warps, grid_f, False))
                print(f"  tile {block_c}x{block_hw} warps={warps} grids {grid_f}/{grid_b} pdl={int(pdl)}: "
                      f"{harness.time_ms(run) * 1e3:6.2f} us (fwd alone {tf * 1e3:5.2f}; err {err:.2e})", flush=True)
        tc = harness.time_ms(compiled, grad_to_none=(xc, wc, bc))
        with torch.no_grad():
            tcf = harness.time_ms(lambda: comp_fwd(x, w, b))
        print(f"  torch.compile fwd+bwd: {tc * 1e3:6.2f} us, fwd {tcf * 1e3:6.2f} us", flush=True)


def part_big16(sms):
    """Groups of 8193-16384 elements (SD-style [16, 320, 32, 32] and [16, 1280, 16, 16], 32 groups): the build's
    [4096 / B, B] tiles (each group read twice) against one [16384 / B, B] tile (read once)."""
    for n, c, h, block_hw in ((16, 320, 32, 1024), (16, 1280, 16, 256)):
        groups = n * 32
        small = min(64, 4096 // block_hw)
        big = 16384 // block_hw
        part_chain(sms, n, c, h, 32, (
            (small, block_hw, 8, groups, groups),
            (big, block_hw, 16, min(groups, 2 * sms), min(groups, 4 * sms)),
            (big, block_hw, 16, min(groups, sms), min(groups, sms)),
            (big, block_hw, 16, min(groups, 2 * sms), min(groups, 2 * sms)),
            (big, block_hw, 8, min(groups, 2 * sms), min(groups, 2 * sms)),
            (big, block_hw, 32, min(groups, sms), min(groups, sms))))


def part_waves(sms):
    """Is the register kernel's gap to a copy its last, partial wave? [N, 512, 64, 64] with 32 groups (one program
    per group and per SM): N = 29 is 7.03 waves of 132, 32 is 7.76 (the benchmark), 33 is 8 exactly."""
    c, hw, g = 512, 4096, 32
    print(f"waves: register kernel (STATS=0) at [N, {c}, 64, 64] G={g}, {sms} SMs", flush=True)
    for n in (29, 31, 32, 33, 36):
        x = torch.randn(n, c, hw, device="cuda", dtype=torch.bfloat16)
        w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
        b = 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
        tc = harness.time_ms(lambda: y.copy_(x))
        line = [f"N={n} ({n * g / sms:.2f} waves): copy {tc * 1e3:6.2f} us"]
        for warps in (16, 32):
            t = harness.time_ms(lambda: regs_stats_kernel[(n * g,)](
                x, w, b, y, mean, rstd, n, c, c // g, g, 1e-5, sms // 2, BLOCK_C=16, BLOCK_HW=hw, STATS=0,
                num_warps=warps))
            line.append(f"{warps} warps {t * 1e3:6.2f} us = {t / tc:.3f} x copy, {t * 1e6 / (n * g):.4f} ns/group")
        print("  " + " | ".join(line), flush=True)
        del x, y


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    which = sys.argv[1:] or ["regs", "chain"]
    if "waves" in which:
        part_waves(sms)
    if "big16" in which:
        part_big16(sms)
    if "chain" in which:
        part_chain(sms)
    if "regs" in which:
        part_regs(sms)


if __name__ == "__main__":
    main()
