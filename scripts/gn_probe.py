"""GroupNorm experiments through the JIT (no build needed), bf16, timed as the benchmarks (benchmarks/harness.time_ms:
L2 flushed, stream held), next to torch.compile in the same process.

    python scripts/gn_probe.py [waves big16 split pipe chain regs split_group] [e.g. 16x1280x16]   # on the GPU box
    (default: regs chain; the parts are described in their docstrings, the first two below)

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
from triton_src._rows import pdl_start, prefetch_l2  # noqa: E402



def _asm2(body, bf16):
    """gn._pair_asm with two outputs ($0, $1): the pair is operand $2."""
    return tl.constexpr(gn._pair_asm(body.replace("$", "%"), bf16).value.replace("$1", "$2").replace("%", "$"))


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
    grp, size, count, cs, cm, mask, offs, v = gn._regs_group(X, N, CPG, G, ahead, BLOCK_C, BLOCK_HW)
    if STATS == 1:
        x0 = tl.load(X + grp * size).to(tl.float32)
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


@triton.jit
def bwd_sums_kernel(DY, X, MEAN, RSTD, PARTIAL, N, C, CPG, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                    PDL: tl.constexpr):
    """Split backward, pass 1: per (sample, channel) row of HW elements, PARTIAL[0, n, c] = sum dy * xh and
    PARTIAL[1, n, c] = sum dy (the layout the build's reduction reads). BLOCK_C rows per program, HW <= BLOCK_HW."""
    pdl_start(PDL)
    rows = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    hs = tl.arange(0, BLOCK_HW)
    rm = rows < N * C
    m = rm[:, None] & (hs < HW)[None, :]
    offs = rows.to(tl.int64)[:, None] * HW + hs[None, :]
    grp = (rows // C) * (C // CPG) + (rows % C) // CPG
    mean = tl.load(MEAN + grp, mask=rm, other=0.0)
    rstd = tl.load(RSTD + grp, mask=rm, other=0.0)
    dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
    xh = (tl.load(X + offs, mask=m, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
    tl.store(PARTIAL + rows, tl.sum(dy * xh, axis=1), mask=rm)
    tl.store(PARTIAL + N * C + rows, tl.sum(dy, axis=1), mask=rm)


@triton.jit
def bwd_dx_kernel(DY, X, W, MEAN, RSTD, PARTIAL, DX, N, C, CPG, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                  GROUP_P2: tl.constexpr, PDL: tl.constexpr):
    """Split backward, pass 2: dx of BLOCK_C rows of one group (BLOCK_C divides CPG), c1 / c2 from the group's
    CPG (<= GROUP_P2) channel sums of pass 1."""
    pdl_start(PDL)
    r0 = tl.program_id(0) * BLOCK_C
    n = r0 // C
    c0 = r0 % C
    g0 = (c0 // CPG) * CPG
    gs = tl.arange(0, GROUP_P2)
    gm = gs < CPG
    wg = tl.load(W + g0 + gs, mask=gm, other=0.0).to(tl.float32)
    dwg = tl.load(PARTIAL + n * C + g0 + gs, mask=gm, other=0.0)
    dbg = tl.load(PARTIAL + N * C + n * C + g0 + gs, mask=gm, other=0.0)
    count = (CPG * HW).to(tl.float32)
    c1 = tl.sum(wg * dwg, axis=0) / count
    c2 = tl.sum(wg * dbg, axis=0) / count
    grp = n * (C // CPG) + c0 // CPG
    mean = tl.load(MEAN + grp)
    rstd = tl.load(RSTD + grp)
    cs = c0 + tl.arange(0, BLOCK_C)
    hs = tl.arange(0, BLOCK_HW)
    m = (hs < HW)[None, :] & (cs < C)[:, None]
    offs = (r0 + tl.arange(0, BLOCK_C)).to(tl.int64)[:, None] * HW + hs[None, :]
    w = tl.load(W + cs).to(tl.float32)
    dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
    xh = (tl.load(X + offs, mask=m, other=0.0).to(tl.float32) - mean) * rstd
    dx = rstd * (dy * w[:, None] - c2 - xh * c1)
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=m)


@triton.jit
def _pipe_chunk(v, src, dst, W, B, more, k, ch0, mean, rstd, R: tl.constexpr, CH: tl.constexpr):
    """Store chunk k (R channel rows) of this group's y, then load chunk k of the next group into its registers."""
    rs = tl.arange(0, R)
    scale, shift = gn._channel_affine(W, B, ch0 + k * R + rs, rs < R, mean, rstd, True, True, R)
    tl.store(dst + k * CH, gn._pair_affine(v, scale[:, None], shift[:, None], True), eviction_policy="evict_first")
    return tl.load(src + k * CH, mask=more, other=0, eviction_policy="evict_first")


@triton.jit
def regs_pipe_kernel(X, W, B, Y, MEAN, RSTD, N, G, eps, AHEAD: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_HW: tl.constexpr):
    """The register kernel made persistent (full tiles, bf16): the group held as 8 chunks of BLOCK_C / 8 channel
    rows; once a group's statistics are known, each chunk's y is stored and the next group's chunk loaded into the
    same registers, so the next group's loads are in flight during this group's stores. AHEAD > 0: at each group's
    start, the group AHEAD rounds later is asked of L2."""
    PAIRS: tl.constexpr = BLOCK_HW // 2
    R: tl.constexpr = BLOCK_C // 8
    CH: tl.constexpr = R * PAIRS
    rs = tl.arange(0, R)
    ps = tl.arange(0, PAIRS)
    offs = rs[:, None] * PAIRS + ps[None, :]
    X32 = X.to(tl.pointer_type(tl.int32))
    Y32 = Y.to(tl.pointer_type(tl.int32))
    gsize = BLOCK_C * PAIRS
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_groups = N * G
    count = BLOCK_C * BLOCK_HW * 1.0
    src = X32 + tl.cast(pid, tl.int64) * gsize + offs
    ok = (offs >= 0) & (pid < n_groups)
    v0 = tl.load(src, mask=ok, other=0, eviction_policy="evict_first")
    v1 = tl.load(src + CH, mask=ok, other=0, eviction_policy="evict_first")
    v2 = tl.load(src + 2 * CH, mask=ok, other=0, eviction_policy="evict_first")
    v3 = tl.load(src + 3 * CH, mask=ok, other=0, eviction_policy="evict_first")
    v4 = tl.load(src + 4 * CH, mask=ok, other=0, eviction_policy="evict_first")
    v5 = tl.load(src + 5 * CH, mask=ok, other=0, eviction_policy="evict_first")
    v6 = tl.load(src + 6 * CH, mask=ok, other=0, eviction_policy="evict_first")
    v7 = tl.load(src + 7 * CH, mask=ok, other=0, eviction_policy="evict_first")
    for grp in range(pid, n_groups, nprog):
        if AHEAD > 0:
            pf = grp + AHEAD * nprog
            prefetch_l2((X + tl.cast(pf, tl.int64) * (BLOCK_C * BLOCK_HW)).to(tl.pointer_type(tl.int8)),
                        BLOCK_C * BLOCK_HW * 2, pf < n_groups, 128, BLOCK_C * BLOCK_HW * 2 // 128)
        t = (gn._pair_sum(v0, True) + gn._pair_sum(v1, True) + gn._pair_sum(v2, True) + gn._pair_sum(v3, True)
             + gn._pair_sum(v4, True) + gn._pair_sum(v5, True) + gn._pair_sum(v6, True) + gn._pair_sum(v7, True))
        mean = gn._flat_sum(t) / count
        q = (gn._pair_sq(v0, mean, True) + gn._pair_sq(v1, mean, True) + gn._pair_sq(v2, mean, True)
             + gn._pair_sq(v3, mean, True) + gn._pair_sq(v4, mean, True) + gn._pair_sq(v5, mean, True)
             + gn._pair_sq(v6, mean, True) + gn._pair_sq(v7, mean, True))
        rstd = 1.0 / tl.sqrt_rn(gn._flat_sum(q) / count + eps)
        tl.store(MEAN + grp, mean)
        tl.store(RSTD + grp, rstd)
        ch0 = (grp % G) * BLOCK_C
        nxt = grp + nprog
        dst = Y32 + tl.cast(grp, tl.int64) * gsize + offs
        src = X32 + tl.cast(nxt, tl.int64) * gsize + offs
        more = (offs >= 0) & (nxt < n_groups)
        v0 = _pipe_chunk(v0, src, dst, W, B, more, 0, ch0, mean, rstd, R, CH)
        v1 = _pipe_chunk(v1, src, dst, W, B, more, 1, ch0, mean, rstd, R, CH)
        v2 = _pipe_chunk(v2, src, dst, W, B, more, 2, ch0, mean, rstd, R, CH)
        v3 = _pipe_chunk(v3, src, dst, W, B, more, 3, ch0, mean, rstd, R, CH)
        v4 = _pipe_chunk(v4, src, dst, W, B, more, 4, ch0, mean, rstd, R, CH)
        v5 = _pipe_chunk(v5, src, dst, W, B, more, 5, ch0, mean, rstd, R, CH)
        v6 = _pipe_chunk(v6, src, dst, W, B, more, 6, ch0, mean, rstd, R, CH)
        v7 = _pipe_chunk(v7, src, dst, W, B, more, 7, ch0, mean, rstd, R, CH)


@triton.jit
def regs_split_kernel(X, W, B, Y, MEAN, RSTD, PART, FLAG, N, G, eps, ahead, SPLIT: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """The register kernel (full tiles, bf16) with each group split over SPLIT programs: program SPLIT * grp + k
    holds channel rows [k BLOCK_C, (k + 1) BLOCK_C) of group grp in registers, so that an SM holds parts of several
    groups (whose load, reduce and store phases then overlap) instead of one whole group. Each program stores the
    (mean, centred sum of squares) of its part in PART[grp], arrives at FLAG[grp] (release) and spins until the
    group's SPLIT arrivals are in (acquire); then every member merges the SPLIT parts in the same order (all
    normalize with identical statistics) and stores its rows' y. FLAG only grows (SPLIT per launch), so it needs
    no reset between launches or CUDA graph replays. A member spins on programs launched after it: this relies on
    the hardware dispatching programs in order (the last group's members are then the only ones that can wait on
    programs not yet resident), which is what H100/H200 do but CUDA does not promise. The part `ahead` programs
    later is asked of L2 (none at ahead 0)."""
    PAIRS: tl.constexpr = BLOCK_HW // 2
    pid = tl.program_id(0)
    grp = pid // SPLIT
    k = pid % SPLIT
    part_size = BLOCK_C * PAIRS  # int32 pairs
    cnt = BLOCK_C * BLOCK_HW * 1.0
    cs = tl.arange(0, BLOCK_C)
    ps = tl.arange(0, PAIRS)
    offs = cs[:, None] * PAIRS + ps[None, :]
    v = tl.load(X.to(tl.pointer_type(tl.int32)) + tl.cast(pid, tl.int64) * part_size + offs,
                eviction_policy="evict_first")
    nxt = pid + ahead
    prefetch_l2((X + tl.cast(nxt, tl.int64) * (BLOCK_C * BLOCK_HW)).to(tl.pointer_type(tl.int8)),
                BLOCK_C * BLOCK_HW * 2, (ahead > 0) & (nxt < N * G * SPLIT), 128, BLOCK_C * BLOCK_HW * 2 // 128)
    m = gn._flat_sum(gn._pair_sum(v, True)) / cnt
    q = gn._flat_sum(gn._pair_sq(v, m, True))
    slot = PART + grp * (2 * SPLIT)
    tl.store(slot + 2 * k, m)
    tl.store(slot + 2 * k + 1, q)
    tl.debug_barrier()
    old = tl.atomic_add(FLAG + grp, 1, sem="release")
    target = (old // SPLIT) * SPLIT + SPLIT
    cur = tl.atomic_add(FLAG + grp, 0, sem="acquire")
    while cur - target < 0:
        cur = tl.atomic_add(FLAG + grp, 0, sem="acquire")
    tl.debug_barrier()
    ks = tl.arange(0, SPLIT)
    ms = tl.load(slot + 2 * ks, cache_modifier=".cg")
    qs = tl.load(slot + 2 * ks + 1, cache_modifier=".cg")
    mean = tl.sum(ms, 0) / SPLIT
    d = ms - mean
    m2 = tl.sum(qs, 0) + cnt * tl.sum(d * d, 0)
    rstd = 1.0 / tl.sqrt_rn(m2 / (cnt * SPLIT) + eps)
    if k == 0:
        tl.store(MEAN + grp, mean)
        tl.store(RSTD + grp, rstd)
    ch = (grp % G) * (SPLIT * BLOCK_C) + k * BLOCK_C + cs
    scale, shift = gn._channel_affine(W, B, ch, cs < BLOCK_C, mean, rstd, True, True, BLOCK_C)
    tl.store(Y.to(tl.pointer_type(tl.int32)) + tl.cast(pid, tl.int64) * part_size + offs,
             gn._pair_affine(v, scale[:, None], shift[:, None], True), eviction_policy="evict_first")

def regs_case(label, n, sms, ceiling, far_group=False):
    """bf16 [n, 512, 4096] with 32 groups (16 x 4096 each): x (far_group: group 1 of sample 0 offset by 300 sigma),
    weight, bias, y, mean, rstd and the bytes a forward moves; prints a copy of x's time and returns those with the
    build's register kernel at 16 and 32 warps as (name, launch) candidates."""
    c, hw, g = 512, 4096, 32
    x = torch.randn(n, c, hw, device="cuda", dtype=torch.bfloat16)
    if far_group:
        x[0, 16:32] += 300
    w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
    b = 0.1 * torch.randn(c, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    nbytes = 2 * x.numel() * 2
    tcopy = harness.time_ms(lambda: y.copy_(x))
    print(f"{label} [{n}, {c}, {hw}] G={g}: copy of x {tcopy * 1e3:.2f} us "
          f"({nbytes / tcopy / 1e6 / ceiling * 100:.1f} % of the {ceiling:.0f} GB/s ceiling)", flush=True)
    cands = [(f"build regs kernel, {warps} warps", lambda warps=warps: gn.group_norm_fwd_regs_kernel[(n * g,)](
        x, w, b, y, mean, rstd, n, c, 16, g, 1e-5, True, True, True, sms // 2, BLOCK_C=16, BLOCK_HW=hw,
        num_warps=warps)) for warps in (16, 32)]
    return x, w, b, y, mean, rstd, nbytes, cands


def part_pipe(sms):
    """[32, 512, 64, 64] (groups of 16 x 4096): the build's register kernel (one program per group, the group half a
    wave later prefetched into L2) against regs_pipe_kernel (persistent, one program per SM)."""
    ceiling = harness.copy_ceiling_gbps()
    for n in (32, 33):
        hw, g = 4096, 32
        x, w, b, y, mean, rstd, nbytes, cands = regs_case("pipe", n, sms, ceiling)
        yref = F.group_norm(x.float(), g, w.float(), b.float(), 1e-5)
        for warps in (16, 32):
            for ahead in (0, 1, 2):
                cands.append((f"pipe {warps} warps, AHEAD={ahead}",
                              lambda warps=warps, ahead=ahead: regs_pipe_kernel[(min(n * g, sms),)](
                                  x, w, b, y, mean, rstd, n, g, 1e-5, AHEAD=ahead, BLOCK_C=16, BLOCK_HW=hw,
                                  num_warps=warps)))
        for rep in range(2):
            for name, fn in cands:
                if rep == 0:
                    y.fill_(float("nan"))
                    fn()
                    torch.cuda.synchronize()
                    err = (y.float() - yref).abs().max().item()
                else:
                    err = float("nan")
                t = harness.time_ms(fn)
                print(f"  {name:<34} {t * 1e3:7.2f} us {nbytes / t / 1e6 / ceiling * 100:5.1f} % of copy "
                      f"(y err {err:.3g})", flush=True)


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


def part_split_group(sms):
    """[32, 512, 64, 64] and [33, ...] (groups of 16 x 4096): the build's register kernel (one program of 16 or 32
    warps per group, one per SM) against regs_split_kernel, each group split over SPLIT = 2 or 4 programs of
    16 / SPLIT channel rows that exchange their parts' statistics through L2 (several programs per SM).
    Measured 2026-11-30: SPLIT = 2 took 82.2-89.0 us against the build's 76.4 (the SPLIT = 4 rows need a longer
    limit than 200 s, mostly JIT compiles); not kept."""
    ceiling = harness.copy_ceiling_gbps()
    props = torch.cuda.get_device_properties(0)
    for n in (32, 33):
        hw, g = 4096, 32
        # one group far from 0: the merge of the parts' means must stay exact
        x, w, b, y, mean, rstd, nbytes, cands = regs_case("split_group", n, sms, ceiling, far_group=True)
        rm, rr = ref_stats(x, g)
        yref = F.group_norm(x.double(), g, w.double(), b.double(), 1e-5)
        flag = torch.zeros(n * g, device="cuda", dtype=torch.int32)
        part = torch.empty(n * g * 8, device="cuda", dtype=torch.float32)
        for split, warps in ((2, 16), (2, 8), (4, 8), (4, 4)):
            for ahead in (0, sms, 2 * sms):
                args = (x, w, b, y, mean, rstd, part, flag, n, g, 1e-5, ahead)
                meta = dict(SPLIT=split, BLOCK_C=16 // split, BLOCK_HW=hw, num_warps=warps)
                kern = regs_split_kernel.warmup(*args, grid=(split,), **meta)
                kern._init_handles()
                per_sm = min(props.max_threads_per_multi_processor // (32 * warps),
                             props.regs_per_multiprocessor // ((kern.n_regs + 7) // 8 * 8 * 32 * warps), 32)
                cands.append((f"SPLIT={split} warps={warps} ahead={ahead} ({kern.n_regs} regs, {per_sm}/SM)",
                              lambda args=args, meta=meta, split=split:
                              regs_split_kernel[(n * g * split,)](*args, **meta)))
        for rep in range(2):
            for name, fn in cands:
                if rep == 0:
                    y.fill_(float("nan"))
                    mean.fill_(float("nan"))
                    fn()
                    torch.cuda.synchronize()
                    err = (y.double() - yref).abs().max().item()
                    em = ((mean.double() - rm).abs() * rr).max().item()
                    er = ((rstd.double() - rr).abs() / rr).max().item()
                    errs = f"y err {err:.3g}, mean err/sigma {em:.2e}, rstd rel err {er:.2e}"
                else:
                    errs = ""
                t = harness.time_ms(fn)
                print(f"  {name:<46} {t * 1e3:7.2f} us {nbytes / t / 1e6 / ceiling * 100:5.1f} % of copy {errs}",
                      flush=True)


def buffers(n, c, h, g):
    """bf16 [n, c, h * h] x and dy (randn), weight and bias, outputs, statistics and the [2, n, c] sums."""
    dt = torch.bfloat16
    hw = h * h
    x = torch.randn(n, c, hw, device="cuda", dtype=dt)
    dy = torch.randn_like(x)
    w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=dt)
    b = 0.1 * torch.randn(c, device="cuda", dtype=dt)
    stats = [torch.empty(n, g, device="cuda") for _ in range(2)]
    params = [torch.empty(c, device="cuda", dtype=dt) for _ in range(2)]
    return (hw, c // g, x, dy, w, b, torch.empty_like(x), torch.empty_like(x), *stats,
            torch.empty(2, n, c, device="cuda"), *params)


def part_chain(sms, n=8, c=1024, h=16, g=32, configs=None):
    """fwd + bwd + dweight/dbias reduction at [n, c, h, h], bf16, over tile configs (BLOCK_C, BLOCK_HW, warps,
    forward programs, backward programs), each without and with PDL; torch.compile's fwd+bwd in the same process."""
    hw, cpg, x, dy, w, b, y, dx, mean, rstd, partial, dw, db = buffers(n, c, h, g)
    groups = n * g
    configs = configs or ((16, 256, 8, groups, groups), (32, 256, 8, groups, groups), (32, 256, 16, groups, groups))

    def fwd(block_c, block_hw, warps, grid, pdl):
        gn.group_norm_fwd_kernel[(grid,)](x, w, b, y, mean, rstd, n, c, cpg, hw // 8, g, 1e-5, True, True,
                                          True, BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=8, PDL=pdl,
                                          num_warps=warps, launch_pdl=pdl)

    def chain(block_c, block_hw, warps, grid_f, grid_b, pdl):
        def run():
            fwd(block_c, block_hw, warps, grid_f, pdl)
            gn.group_norm_bwd_kernel[(grid_b,)](dy, x, w, mean, rstd, dx, partial, dw, db, n, c, cpg, hw // 8, g, True,
                                                True, False,
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


def divisor(cpg, limit):
    """The largest power of 2 <= limit dividing cpg (rows of one group per program)."""
    d = 1
    while d * 2 <= limit and cpg % (d * 2) == 0:
        d *= 2
    return d


def part_split(sms):
    """The backward alone (L2 flushed, as bench_group_norm.py's bwd) and fwd + bwd: the build's (tile or BIG) kernel
    against the split backward (pass 1: per-channel sums over many programs; pass 2: dx; then the build's dweight /
    dbias reduction), at shapes whose tensors fit L2."""
    shapes = ((16, 1280, 16, 32, (64, 256, 16, 132, 132)), (16, 320, 32, 32, (16, 1024, 16, 132, 132)),
              (8, 1024, 16, 32, (32, 256, 8, 256, 256)), (64, 128, 32, 32, (4, 1024, 8, 264, 528)))
    only = [a for a in sys.argv[2:] if a[0].isdigit()]  # e.g. "16x1280x16": those shapes only
    for n, c, h, g, build in shapes:
        if only and f"{n}x{c}x{h}" not in only:
            continue
        hw, cpg, x, dy, w, b, y, dx, mean, rstd, partial, dw, db = buffers(n, c, h, g)
        bc, bhw, warps, gf, gb = build
        pdl_b = bc * bhw > 4096

        def fwd():
            gn.group_norm_fwd_kernel[(gf,)](x, w, b, y, mean, rstd, n, c, cpg, hw // 8, g, 1e-5, True, True, True,
                                            BLOCK_C=bc, BLOCK_HW=bhw, ALIGN=8, PDL=pdl_b, num_warps=warps,
                                            launch_pdl=pdl_b)

        def reduce(pdl):
            gn.group_norm_reduce_kernel[(triton.cdiv(c, 128), 2)](partial, dw, db, n, c, BLOCK_N=32, BLOCK_C=128,
                                                                  PDL=pdl, num_warps=4, launch_pdl=pdl)

        def bwd_build():
            gn.group_norm_bwd_kernel[(gb,)](dy, x, w, mean, rstd, dx, partial, dw, db, n, c, cpg, hw // 8, g, True, True,
                                            False,
                                            BLOCK_C=bc, BLOCK_HW=bhw, ALIGN=8, PDL=pdl_b, num_warps=warps,
                                            launch_pdl=pdl_b)
            reduce(pdl_b)

        def bwd_split(rows, sw, dw_rows, dww, pdl):
            def run():
                bwd_sums_kernel[(triton.cdiv(n * c, rows),)](dy, x, mean, rstd, partial, n, c, cpg, hw, BLOCK_C=rows,
                                                              BLOCK_HW=hw, PDL=pdl, num_warps=sw, launch_pdl=pdl)
                bwd_dx_kernel[(n * c // dw_rows,)](dy, x, w, mean, rstd, partial, dx, n, c, cpg, hw, BLOCK_C=dw_rows,
                                                   BLOCK_HW=hw, GROUP_P2=triton.next_power_of_2(cpg), PDL=pdl,
                                                   num_warps=dww, launch_pdl=pdl)
                reduce(pdl)
            return run

        fwd()
        torch.cuda.synchronize()
        ref = None
        print(f"split [{n}, {c}, {h}, {h}] G={g} (build: {bc}x{bhw}, {warps} warps):", flush=True)
        cands = [("build", bwd_build)]
        for rows, sw in ((4096 // hw, 4), (8192 // hw, 8)):
            for dw_rows, dww in ((divisor(cpg, 4096 // hw), 4), (divisor(cpg, 8192 // hw), 8)):
                for pdl in (False, True):
                    cands.append((f"split sums {rows}r/{sw}w dx {dw_rows}r/{dww}w pdl={int(pdl)}",
                                  bwd_split(rows, sw, dw_rows, dww, pdl)))
        for rep in range(2):
            for name, bwd in cands:
                if rep == 0:
                    for t in (dx, dw, db):
                        t.fill_(float("nan"))
                    bwd()
                    torch.cuda.synchronize()
                    got = (dx.clone(), dw.clone(), db.clone())
                    if ref is None:
                        ref = got
                    err = max((a.float() - r.float()).abs().max().item() / r.float().abs().max().item()
                              for a, r in zip(got, ref))
                else:
                    err = float("nan")
                tb = harness.time_ms(bwd)
                tfull = harness.time_ms(lambda: (fwd(), bwd()))
                print(f"  {name:<46} bwd {tb * 1e3:6.2f} us, fwd+bwd {tfull * 1e3:6.2f} us (vs build {err:.1e})",
                      flush=True)
        xc = x.clone().requires_grad_()
        wc = w.clone().requires_grad_()
        bc_ = b.clone().requires_grad_()
        comp = torch.compile(lambda a, ww, bb: F.group_norm(a, g, ww, bb, 1e-5), dynamic=False)
        out = comp(xc, wc, bc_)
        out.backward(dy, retain_graph=True)
        tcb = harness.time_ms(lambda: out.backward(dy, retain_graph=True), grad_to_none=(xc, wc, bc_))
        tcf = harness.time_ms(lambda: comp(xc, wc, bc_).backward(dy), grad_to_none=(xc, wc, bc_))
        print(f"  torch.compile bwd {tcb * 1e3:6.2f} us, fwd+bwd {tcf * 1e3:6.2f} us", flush=True)


def main():
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    which = sys.argv[1:] or ["regs", "chain"]
    parts = {"waves": part_waves, "big16": part_big16, "split": part_split, "pipe": part_pipe, "chain": part_chain,
             "regs": part_regs, "split_group": part_split_group}
    for name, part in parts.items():
        if name in which:
            part(sms)


if __name__ == "__main__":
    main()
