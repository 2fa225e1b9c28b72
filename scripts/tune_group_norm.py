"""Sweep the persistent group_norm kernels' grid size with Triton's JIT (same source as the AOT build), timed like
the benchmarks (do_bench flushes L2), outputs checked against PyTorch.

    python scripts/tune_group_norm.py [N C H W G] [--tiles] [--regs [--only]] [--tma [--only]] [--floor] [--spec]
                                      [--fp16] [--hold]
                                      # on the GPU box; default 32 512 64 64 32, bf16

--regs times the build's group_norm_fwd_regs_kernel (16-bit groups held in registers, read once, the group `ahead`
programs later prefetched into L2) over warps and `ahead`, with fp32 and x-dtype parameters (--only: nothing else).
H200 bf16 [32, 512, 64, 64], 2026-11-30: 76.0-76.1 us at 32 warps and ahead 66 (half the SMs), 76.5-77.7 at 16,
92-93 with the group itself "prefetched" (ahead 0); a copy of x 67-68. Prototypes measured on the way and dropped
(results/h200.md, runs of 2026-11-30 03:35): the two-pass tiles walked as one stream of loads across pass and group
boundaries (115.7 us), the same register kernel with a reduction per axis (95.2) or one shifted reduction (87.8),
staggered first-wave programs (79.6-81 against 81.5 without the prefetch), the two-pass tiles with the same L2
prefetch (103-200). --hold times as the benchmarks do (the stream held before each call); it changed nothing here.

--tma times the Gluon prototype in scripts/gluon_group_norm_tma.py (the group staged in shared memory by TMA; not
in the build). --floor times, as the benchmarks do, a copy of x, the register kernel with and without statistics
and with its integer arguments unspecialized (as the build compiled it before the cpg16 variants), the TMA
prototype and the op itself: H200 2026-11-30, copy 67.2 us (93.6 % of the 2 GiB copy), register kernel 76.5, without
statistics 73.1, unspecialized 79.8, TMA 79.3 (71.4 without statistics), the op 76.4. --spec: the tile kernels with
and without CPG promised a multiple of 16 (<= 0.5 us, not built).

--tiles also times other tile shapes and warps at one program per group; --big times larger tiles (8192-32768
elements, 16-32 warps) at one and two programs per SM, whose groups in flight fit in L2 for the second read;
--split times group_norm_fwd_split_kernel (a prototype, not in the build: each group's tiles spread over programs
that exchange partial statistics, x read once; cooperative launch) over tiles, warps and programs per SM, the
counters' zeroing included in the time. H200 bf16, 2026-11-30: best 106.8 us at [32, 512, 64, 64] ([2, 4096] tiles,
8 warps, 3 programs per SM, the most a cooperative launch takes at 98 registers) against the build's 105-106;
130.5 at [16, 256, 128, 128] against 112.5. The time falls almost in proportion to the programs per SM (2 x 4096
tiles: 198 / 129 / 107 us at 1 / 2 / 3 per SM): each round waits for the slowest of a group's P loads and an L2
round trip, and only the next tile is in flight meanwhile. AHEAD = 1 (publish the next tile before waiting)
needs 120-173 registers, one program per SM: 194-333 us. Triton 3.6 cannot reduce across the CTAs of a cluster
(num_ctas > 1 with tl.sum over the split axis fails in the CTA planner / ReduceOpToLLVM), which rules out the
hardware cluster barrier from plain Triton.

The launcher (csrc/ops/group_norm.cpp, group_programs) takes as many programs as are resident, at most one per
group; smaller grids keep the groups in flight within L2 for the second read (slower on the H200, 2026-11-29).
"""
import itertools
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import harness  # noqa: E402
import triton_src.group_norm as gn  # noqa: E402
from triton_src._rows import prefetch_l2  # noqa: E402


@triton.jit
def _tile32_at(t, n_hw, CPG, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """_tile_at with 32-bit offsets within the group (groups of < 2^31 elements; the caller adds the group's
    64-bit base once): half the registers of 64-bit offsets per element."""
    cs = (t // n_hw).to(tl.int32) * BLOCK_C + tl.arange(0, BLOCK_C)
    hs = (t % n_hw).to(tl.int32) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    mask = (cs < CPG)[:, None] & (hs < HW)[None, :]
    return cs[:, None] * HW + hs[None, :], mask, cs


@triton.jit
def _split_publish(xr, item, P, n_hw, CPG, HW, PART, COUNT, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                   EVEN: tl.constexpr):
    """Work item `item`'s tile (xr, in x's dtype): its (mean, M2) into PART[group, tile], then one more arrival
    counted in COUNT[group] (release: the stores are visible to whoever sees the count)."""
    grp = tl.cast(item, tl.int64) // P
    t = tl.cast(item, tl.int64) % P
    _o, mask, _c = _tile32_at(t, n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
    x = xr.to(tl.float32)
    if EVEN:
        m_t = tl.sum(tl.sum(x, axis=1), axis=0) / (BLOCK_C * BLOCK_HW)
        d = x - m_t
    else:
        m_t = tl.sum(tl.sum(x, axis=1), axis=0) / tl.sum(tl.sum(mask.to(tl.float32), axis=1), axis=0)
        d = tl.where(mask, x - m_t, 0.0)
    slot = PART + (grp * P + t) * 2
    tl.store(slot, m_t)
    tl.store(slot + 1, tl.sum(tl.sum(d * d, axis=1), axis=0))
    tl.debug_barrier()  # every thread's part of the stores before the release below
    tl.atomic_add(COUNT + grp, 1, sem="release", scope="gpu")


@triton.jit
def _split_finish(xr, item, P, n_hw, CPG, HW, G, size, count, eps, p_n, W, B, Y, MEAN, RSTD, PART, COUNT,
                  has_weight, has_bias, store_stats, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                  BLOCK_P: tl.constexpr, EVEN: tl.constexpr):
    """Waits until the P tiles of item's group are published, combines their partials in tile order (Chan et al.),
    and writes item's tile of y."""
    grp = tl.cast(item, tl.int64) // P
    t = tl.cast(item, tl.int64) % P
    arrived = tl.atomic_add(COUNT + grp, 0, sem="acquire", scope="gpu")
    while arrived < P:
        arrived = tl.atomic_add(COUNT + grp, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()
    ps = tl.arange(0, BLOCK_P)
    part = PART + (grp * P + ps) * 2
    m_p = tl.load(part, mask=ps < P, other=0.0, volatile=True)
    m2_p = tl.load(part + 1, mask=ps < P, other=0.0, volatile=True)
    mean = tl.sum(p_n * m_p, axis=0) / count
    dm = m_p - mean
    rstd = 1.0 / tl.sqrt_rn(tl.sum(m2_p + p_n * dm * dm, axis=0) / count + eps)
    if store_stats & (t == 0):
        tl.store(MEAN + grp, mean)
        tl.store(RSTD + grp, rstd)
    offs, mask, cs = _tile32_at(t, n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
    scale, shift_c = gn._channel_affine(W, B, (grp % G) * CPG + cs, cs < CPG, mean, rstd, has_weight, has_bias,
                                        BLOCK_C)
    y = xr.to(tl.float32) * scale[:, None] + shift_c[:, None]
    if EVEN:
        tl.store(Y + grp * size + offs, y.to(Y.dtype.element_ty))
    else:
        tl.store(Y + grp * size + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _split_load(X, item, n_items, P, n_hw, CPG, HW, size, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
                EVEN: tl.constexpr):
    it = tl.cast(item, tl.int64)
    offs, mask, _c = _tile32_at(it % P, n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
    if EVEN:  # every tile full: the only mask is the item's (past the last item: tile 0 of a clamped group)
        return tl.load(X + tl.minimum(it // P, n_items // P - 1) * size + offs)
    return tl.load(X + (it // P) * size + offs, mask=mask & (it < n_items), other=0.0)


@triton.jit
def group_norm_fwd_split_kernel(X, W, B, Y, MEAN, RSTD, PART, COUNT, N, C, CPG, HW_v, G, eps, has_weight, has_bias,
                                store_stats, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_P: tl.constexpr,
                                ALIGN: tl.constexpr, AHEAD: tl.constexpr, EVEN: tl.constexpr):
    """Groups of several tiles, each read once: a group's P tiles go to P programs of one round, which hold their
    tile in registers, publish its (mean, M2) in PART[group, tile], count themselves in COUNT[group] (zeroed by
    the launcher), wait for the group's count to reach P, and combine the P partials in a fixed order (every
    program gets the same statistics, run after run). Work item i is tile i % P of group i // P; program p takes
    items p, p + programs, ... With programs a multiple of P, a group's tiles fall in one round, and with a
    cooperative launch (all programs resident) no program waits on one that cannot run.
    AHEAD = 1: a program publishes its next item before waiting on the current one (the exchange's latency
    overlaps the next tile's; a program never waits before publishing, so the waits cannot form a cycle).
    EVEN: every tile is full (CPG % BLOCK_C == HW % BLOCK_HW == 0): no element masks."""
    HW = (HW_v * ALIGN).to(tl.int32)  # groups < 2^31 elements (the launcher takes this kernel for <= 64 tiles)
    n_hw = tl.cdiv(HW, BLOCK_HW)
    P = tl.cdiv(CPG, BLOCK_C) * n_hw
    size = tl.cast(CPG, tl.int64) * HW
    n_items = N * G * P
    count = (CPG * HW).to(tl.float32)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    # the P tiles' element counts (the last channel block and the last spatial block may be partial)
    ps = tl.arange(0, BLOCK_P)
    p_rows = tl.minimum(CPG - (ps // n_hw) * BLOCK_C, BLOCK_C)
    p_cols = tl.minimum(HW - (ps % n_hw) * BLOCK_HW, BLOCK_HW)
    p_n = tl.where(ps < P, (p_rows * p_cols).to(tl.float32), 0.0)
    cur = _split_load(X, pid, n_items, P, n_hw, CPG, HW, size, BLOCK_C, BLOCK_HW, EVEN)
    if AHEAD:
        if pid < n_items:
            _split_publish(cur, pid, P, n_hw, CPG, HW, PART, COUNT, BLOCK_C, BLOCK_HW, EVEN)
        nxt = _split_load(X, pid + nprog, n_items, P, n_hw, CPG, HW, size, BLOCK_C, BLOCK_HW, EVEN)
        for item in range(pid, n_items, nprog):
            ahead = nxt
            nxt = _split_load(X, item + 2 * nprog, n_items, P, n_hw, CPG, HW, size, BLOCK_C, BLOCK_HW, EVEN)
            if item + nprog < n_items:
                _split_publish(ahead, item + nprog, P, n_hw, CPG, HW, PART, COUNT, BLOCK_C, BLOCK_HW, EVEN)
            _split_finish(cur, item, P, n_hw, CPG, HW, G, size, count, eps, p_n, W, B, Y, MEAN, RSTD, PART, COUNT,
                          has_weight, has_bias, store_stats, BLOCK_C, BLOCK_HW, BLOCK_P, EVEN)
            cur = ahead
    else:
        for item in range(pid, n_items, nprog):
            x = cur
            cur = _split_load(X, item + nprog, n_items, P, n_hw, CPG, HW, size, BLOCK_C, BLOCK_HW, EVEN)
            _split_publish(x, item, P, n_hw, CPG, HW, PART, COUNT, BLOCK_C, BLOCK_HW, EVEN)
            _split_finish(x, item, P, n_hw, CPG, HW, G, size, count, eps, p_n, W, B, Y, MEAN, RSTD, PART, COUNT,
                          has_weight, has_bias, store_stats, BLOCK_C, BLOCK_HW, BLOCK_P, EVEN)


@triton.jit
def _regs_no_stats_kernel(X, W, B, Y, CPG, G, n_groups, ahead, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """group_norm_fwd_regs_kernel less its statistics (mean 0, rstd 1): the same loads, L2 prefetch, affine and
    stores, to time what the two reductions cost."""
    IS_BF16: tl.constexpr = X.dtype.element_ty == tl.bfloat16
    PAIRS: tl.constexpr = BLOCK_HW // 2
    grp = tl.program_id(0)
    size = tl.cast(CPG, tl.int64) * BLOCK_HW
    cs = tl.arange(0, BLOCK_C)
    ps = tl.arange(0, PAIRS)
    cm = cs < CPG
    mask = cm[:, None] & (ps < PAIRS)[None, :]
    offs = cs[:, None] * PAIRS + ps[None, :]
    v = tl.load((X + grp * size).to(tl.pointer_type(tl.int32)) + offs, mask=mask, other=0,
                eviction_policy="evict_first")
    nxt = grp + ahead
    prefetch_l2((X + tl.cast(nxt, tl.int64) * size).to(tl.pointer_type(tl.int8)), size * 2, nxt < n_groups, 128,
                BLOCK_C * BLOCK_HW * 2 // 128)
    scale, shift = gn._channel_affine(W, B, (grp % G) * CPG + cs, cm, 0.0, 1.0, True, True, BLOCK_C)
    tl.store((Y + grp * size).to(tl.pointer_type(tl.int32)) + offs,
             gn._pair_affine(v, scale[:, None], shift[:, None], IS_BF16), mask=mask, eviction_policy="evict_first")


def floor(n, c, hw, g, dt, sms):
    """Everything timed as the benchmarks time it (harness.time_ms: L2 flushed, stream held): a copy of x, the
    register kernel with and without its statistics (JIT), the Gluon TMA prototype with and without them, and
    liger_aot.ops.group_norm itself (x with and without requires_grad), on bench_group_norm.py's data."""
    import liger_aot
    import gluon_group_norm_tma as gt
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    cpg = c // g
    x = torch.randn(n, c, hw, device="cuda", dtype=dt)
    w = 1 + 0.1 * torch.randn(c, device="cuda", dtype=dt)
    b = 0.1 * torch.randn(c, device="cuda", dtype=dt)
    y = torch.empty_like(x)
    mean, rstd = torch.empty(n, g, device="cuda"), torch.empty(n, g, device="cuda")
    ceiling = harness.copy_ceiling_gbps()
    nbytes = 2 * x.numel() * x.element_size()
    tile = next((t for t in gn.REG_TILES if t >= cpg * hw), None)
    warps = gn.REG_WARPS[tile]
    xg = x.clone().requires_grad_(True)
    # the JIT's kernel as the AOT build compiles it: no divisibility-by-16 facts about the integer arguments
    regs_plain = triton.jit(gn.group_norm_fwd_regs_kernel.fn, do_not_specialize=["N", "C", "CPG", "G", "ahead"])
    runs = {
        "copy of x (y.copy_(x))": lambda: y.copy_(x),
        "regs kernel (JIT)": lambda: gn.group_norm_fwd_regs_kernel[(n * g,)](
            x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, True, True, True, sms // 2, BLOCK_C=tile // hw, BLOCK_HW=hw,
            num_warps=warps),
        "regs kernel, no statistics": lambda: _regs_no_stats_kernel[(n * g,)](
            x, w, b, y, cpg, g, n * g, sms // 2, BLOCK_C=tile // hw, BLOCK_HW=hw, num_warps=warps),
        "regs kernel, y allocated per call": lambda: gn.group_norm_fwd_regs_kernel[(n * g,)](
            x, w, b, torch.empty_like(x), mean, rstd, n, c, cpg, g, 1e-5, True, True, True, sms // 2,
            BLOCK_C=tile // hw, BLOCK_HW=hw, num_warps=warps),
        "TMA kernel (JIT), one pass": lambda: gt.group_norm_fwd_tma_kernel[(min(n * g, sms),)](
            x, w, b, y, mean, rstd, n * g, x.numel() // 256, g, cpg, cpg * hw // 256, hw // 256, 1e-5, True, True,
            True, SLOTS=13, num_warps=8),
        "TMA kernel (JIT), two passes": lambda: gt.group_norm_fwd_tma_kernel[(min(n * g, sms),)](
            x, w, b, y, mean, rstd, n * g, x.numel() // 256, g, cpg, cpg * hw // 256, hw // 256, 1e-5, True, True,
            True, SLOTS=13, ONE_PASS=False, num_warps=8),
        "TMA kernel, no statistics": lambda: gt.group_norm_fwd_tma_kernel[(min(n * g, sms),)](
            x, w, b, y, mean, rstd, n * g, x.numel() // 256, g, cpg, cpg * hw // 256, hw // 256, 1e-5, True, True,
            True, SLOTS=13, AB_STATS=False, num_warps=8),
        "regs kernel (JIT), integers not specialized": lambda: regs_plain[(n * g,)](
            x, w, b, y, mean, rstd, n, c, cpg, g, 1e-5, True, True, True, sms // 2, BLOCK_C=tile // hw, BLOCK_HW=hw,
            num_warps=warps),
        "torch.ops.liger.group_norm": lambda: torch.ops.liger.group_norm(x, g, w, b, 1e-5),
        "liger_aot.ops.group_norm": lambda: liger_aot.ops.group_norm(x, g, w, b, 1e-5),
        "liger_aot.ops.group_norm, x.requires_grad": lambda: liger_aot.ops.group_norm(xg, g, w, b, 1e-5),
    }
    print(f"floor [{n}, {c}, {hw}] G={g}: copy ceiling {ceiling:.0f} GB/s (2 GiB copy)")
    for _ in range(2):
        for name, fn in runs.items():
            ms = harness.time_ms(fn)
            print(f"  {name:<44} {ms * 1e3:7.2f} us  {nbytes / ms / 1e6 / ceiling * 100:5.1f} % of copy", flush=True)


def spec_check(x, dy, w, b, y, dx, mean, rstd, partial, n, c, hw, g, block_hw, bc, warps, sms):
    """The tile kernels (group_norm_fwd_kernel, group_norm_bwd_kernel) as the build compiles them (integer arguments
    not specialized) against the same with CPG promised a multiple of 16, timed as the benchmarks (harness.time_ms):
    is a cpg16 build variant worth it for them, as it was for the register kernel? (main's tensors; weight and bias
    in x's dtype, as in the benchmarks.)"""
    cpg = c // g
    w, b = w.to(x.dtype), b.to(x.dtype)
    one_tile = cpg <= bc and hw <= block_hw
    ints = ["N", "C", "CPG", "HW_v", "G"]
    print(f"spec [{n}, {c}, {hw}] G={g}: tile {bc}x{block_hw}, {warps} warps, CPG {cpg}", flush=True)
    for label, plain in (("unspecialized (as built)", ints), ("CPG % 16 promised", [i for i in ints if i != "CPG"])):
        fwd_k = triton.jit(gn.group_norm_fwd_kernel.fn, do_not_specialize=plain)
        bwd_k = triton.jit(gn.group_norm_bwd_kernel.fn, do_not_specialize=plain)
        pf = min(n * g, sms * (gn.CPP_CONSTANTS["ONE_TILE_FWD_PER_SM"] if one_tile else 2))
        pb = min(n * g, sms * (gn.CPP_CONSTANTS["ONE_TILE_BWD_PER_SM"] if one_tile else 2))

        def fwd():
            fwd_k[(pf,)](x, w, b, y, mean, rstd, n, c, cpg, hw // 8, g, 1e-5, True, True, True, BLOCK_C=bc,
                         BLOCK_HW=block_hw, ALIGN=8, num_warps=warps)

        def bwd():
            bwd_k[(pb,)](dy, x, w, mean, rstd, dx, partial, partial, partial, n, c, cpg, hw // 8, g, True, True,
                         False, BLOCK_C=bc, BLOCK_HW=block_hw, ALIGN=8, num_warps=warps)
        fwd()
        bwd()
        print(f"  {label:<26} fwd {harness.time_ms(fwd) * 1e3:7.2f} us  bwd {harness.time_ms(bwd) * 1e3:7.2f} us",
              flush=True)


def bench(fn):
    """Median ms; --hold times as the benchmarks do (harness.time_ms: the stream held ~1 ms before each call)."""
    if "--hold" in sys.argv:
        return harness.time_ms(fn)
    return tt.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main():
    n, c, h, w_, g = [int(a) for a in sys.argv[1:6] if not a.startswith("--")] or [32, 512, 64, 64, 32]
    dt = torch.float16 if "--fp16" in sys.argv else torch.bfloat16
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
    if "--split" in sys.argv:
        split_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms)
    if "--spec" in sys.argv:
        spec_check(x, dy, w, b, y, dx, mean, rstd, partial, n, c, hw, g, block_hw, bc, warps, sms)
        return
    if "--floor" in sys.argv:
        floor(n, c, hw, g, dt, sms)
        return
    if "--tma" in sys.argv:
        tma_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms)
        if "--only" in sys.argv and "--regs" not in sys.argv:
            return
    if "--regs" in sys.argv:
        regs_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms)
        if "--only" in sys.argv:
            return
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
            gn.group_norm_bwd_kernel[(programs,)](dy, x, w, mean, rstd, dx, partial, partial, partial, n, c, c // g,
                                                  hw // 8, g, True, True, False, BLOCK_C=bc, BLOCK_HW=block_hw,
                                                  ALIGN=8, num_warps=warps)

        fwd()
        err = (y.float() - ref).abs().max().item()
        tf, tb = bench(fwd), bench(bwd)
        print(f"tile {bc}x{block_hw} nw={warps} programs={programs:5}: fwd {tf * 1e3:7.1f} us ({copy / tf * 100:3.0f} % of copy), "
              f"bwd {tb * 1e3:7.1f} us ({1.5 * copy / tb * 100:3.0f} % of a 3-tensor copy), y err {err:.3g}",
              flush=True)


def split_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms):
    """group_norm_fwd_split_kernel at each tile shape / warps / programs per SM that fits a cooperative launch."""
    cpg = c // g
    res = []
    for (bc, bhw, warps), ahead in itertools.product(
            ((1, 4096, 4), (2, 4096, 8), (4, 4096, 16), (1, 8192, 8), (2, 2048, 4), (4, 2048, 8), (1, 2048, 4)),
            (0, 1)):
        if bc > cpg or bhw > hw:
            continue
        p = triton.cdiv(cpg, bc) * triton.cdiv(hw, bhw)
        if p < 2 or p > 64:
            continue
        part = torch.empty(n * g * p * 2, device="cuda")
        counts = torch.zeros(n * g, device="cuda", dtype=torch.int32)
        for per_sm in (1, 2, 3, 4, 6, 8):
            programs = min(sms * per_sm // p * p, n * g * p)
            if programs < p:
                continue

            def fwd():
                counts.zero_()
                group_norm_fwd_split_kernel[(programs,)](
                    x, w, b, y, mean, rstd, part, counts, n, c, cpg, hw // 8, g, 1e-5, True, True, True, BLOCK_C=bc,
                    BLOCK_HW=bhw, BLOCK_P=triton.next_power_of_2(p), ALIGN=8, AHEAD=ahead,
                    EVEN=cpg % bc == 0 and hw % bhw == 0, num_warps=warps, launch_cooperative_grid=True)
            try:
                y.fill_(float("nan"))
                fwd()
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001  (a grid too large for a cooperative launch)
                print(f"  split {bc}x{bhw} nw={warps} ahead={ahead} programs={programs}: {str(e)[:60]}", flush=True)
                break
            err = (y.float() - ref).abs().max().item()
            t = bench(fwd)
            res.append((t, f"split tile {bc}x{bhw} (P={p}) nw={warps} ahead={ahead} programs={programs} ({per_sm}/SM): "
                           f"fwd {t * 1e3:7.1f} us ({copy / t * 100:3.0f} % of copy), y err {err:.3g}"))
            print(res[-1][1], flush=True)
    zero = bench(lambda: torch.zeros(n * g, device="cuda", dtype=torch.int32))
    print(f"best split: " + " | ".join(r[1] for r in sorted(res)[:5]) + f"; zeroing alone {zero * 1e3:.1f} us",
          flush=True)


def regs_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms):
    """gn.group_norm_fwd_regs_kernel (the build's, one program per group held in registers) over warps and the
    prefetch distance, against the same kernel without the prefetch (ahead = 0 prefetches the group itself)."""
    cpg = c // g
    tile = next((t for t in gn.REG_TILES if t >= cpg * hw), None)
    if hw not in gn.REG_HW or tile is None:
        print(f"regs: not applicable (HW {hw}, group of {cpg * hw} elements)")
        return
    for wb in ((w, b), (w.to(x.dtype), b.to(x.dtype))):
        for warps, ahead in ((16, 0), (16, sms // 4), (16, sms // 2), (16, 3 * sms // 4), (16, sms), (8, sms // 2),
                             (32, sms // 2), (32, sms)):

            def fwd():
                gn.group_norm_fwd_regs_kernel[(n * g,)](x, wb[0], wb[1], y, mean, rstd, n, c, cpg, g, 1e-5, True, True,
                                                        True, ahead, BLOCK_C=tile // hw, BLOCK_HW=hw, num_warps=warps)
            y.fill_(float("nan"))
            fwd()
            err = (y.float() - ref).abs().max().item()
            t = bench(fwd)
            print(f"regs tile {tile // hw}x{hw} nw={warps} ahead={ahead} params {str(wb[0].dtype)[6:]}: fwd "
                  f"{t * 1e3:7.1f} us ({copy / t * 100:3.0f} % of copy), y err {err:.3g}", flush=True)


def tma_sweep(x, w, b, y, mean, rstd, ref, n, c, hw, g, copy, sms):
    """scripts/gluon_group_norm_tma.py's Gluon kernel (a prototype: the group staged in shared memory by TMA, one
    program per SM) over warps, ring slots and the statistics' form, with fp32 and x-dtype parameters; its mean
    and rstd checked too."""
    import gluon_group_norm_tma as gt
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    cpg = c // g
    rows_per_group = cpg * hw // gt.COLS.value
    if hw % gt.COLS.value or not gt.MIN_GROUP <= cpg * hw <= gt.MAX_GROUP:
        print(f"tma: not applicable (HW {hw}, group of {cpg * hw} elements)")
        return
    xd = x.double().view(n, g, -1)
    ref_mean = xd.mean(-1).float()
    ref_rstd = (xd.var(-1, unbiased=False) + 1e-5).rsqrt().float()
    for wb in ((w, b), (w.to(x.dtype), b.to(x.dtype))):
        for warps, slots, one_pass, stats in ((8, 13, True, True), (8, 13, False, True), (8, 13, True, False),
                                              (16, 13, True, True), (4, 13, True, True), (8, 11, True, True)):

            def fwd():
                gt.group_norm_fwd_tma_kernel[(min(n * g, sms),)](
                    x, wb[0], wb[1], y, mean, rstd, n * g, x.numel() // gt.COLS.value, g, cpg, rows_per_group,
                    hw // gt.COLS.value, 1e-5, True, True, True, SLOTS=slots, ONE_PASS=one_pass, AB_STATS=stats,
                    num_warps=warps)
            y.fill_(float("nan"))
            mean.fill_(float("nan"))
            fwd()
            err = (y.float() - ref).abs().max().item()
            serr = max((mean - ref_mean).abs().max().item(), ((rstd - ref_rstd) / ref_rstd).abs().max().item())
            t = bench(fwd)
            form = (" one pass" if one_pass else " two passes") + ("" if stats else " NO STATS")
            print(f"tma nw={warps} slots={slots}{form} params {str(wb[0].dtype)[6:]}: fwd {t * 1e3:7.1f} us "
                  f"({copy / t * 100:3.0f} % of copy), y err {err:.3g}, stats err {serr:.3g}", flush=True)


if __name__ == "__main__":
    main()
