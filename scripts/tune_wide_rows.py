"""Persistent row kernels that load the next row while the current one is reduced (Triton JIT, on the GPU box).

    python scripts/tune_wide_rows.py [OP ...] [--hidden 16384,32768]

OP: softmax, softmax_bwd (persistent prototypes: early loads, cache hints), layer_norm (the build's forward: one
row per program, persistent with / without REWIDEN, against torch.compile), sparsemax (prototypes with one, two or
three block reductions per step), sparsemax_warps (the build's persistent sparsemax by warps and programs per SM),
sparsemax_vec (the build's forward with steps on the vectors' maxima or on the row, by warps / programs per SM),
sparsemax_looped (the build's looped forward for rows > 32768 with and without VEC, by chunk and warps),
softmax_small (the one-row forward on 4 rows by warps),
layer_norm_looped (the build's looped forward by chunk / warps / stages), softmax_mid (forward tiles and cache
operators at mid widths, e.g. --hidden 1024,4096,8192); default: all.

A one-row program on a wide row (16384-32768 elements, one resident program per SM) waits for its row, reduces
it (block-wide barriers) and stores, with no other program on the SM to overlap: ~76 % of copy at 32768. Here a
grid of SM-count programs walks the rows; with PREFETCH=1 the next row's load is issued before the current row's
reductions (registers: the raw 16-bit row, half of the fp32 one), with PREFETCH=2 Triton's pipeliner stages the
row through shared memory (tl.range num_stages=2). Each variant is checked against PyTorch and timed like the
benchmarks (do_bench flushes L2), next to the build's kernels run through the JIT. The LayerNorm prototype these
results record (benchmarks/results/h200.md, 2026-11-29: hoisted weight/bias, eviction hints, shared-memory
pipelining) is in this script as of commit 2650b94; the build's kernel has its persistent form since.
"""
import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src._rows import bf16_to_fp32, load_row  # noqa: E402
from triton_src.layer_norm import _pair_add, layer_norm_fwd_kernel, layer_norm_fwd_looped_kernel  # noqa: E402
from triton_src.softmax import _exp, softmax_bwd_kernel, softmax_fwd_kernel  # noqa: E402
from triton_src.sparsemax import (_sparsemax_row, _step, sparsemax_fwd_kernel,  # noqa: E402
                                  sparsemax_fwd_looped_kernel)

ROWS = 8192
DT = torch.bfloat16
SMS = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 4


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=60, return_mode="median")


@triton.jit
def softmax_fwd_pf_kernel(X, Y, n_rows, nprog, n_cols, stride_x, stride_y, BLOCK_N: tl.constexpr,
                          PREFETCH: tl.constexpr,
                          STAGES: tl.constexpr, STORE_CM: tl.constexpr = "", LOAD_EV: tl.constexpr = "",
                          LOAD_CM: tl.constexpr = ""):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    if PREFETCH == 1:
        nxt = load_row(X, pid, n_rows, stride_x, cols, cm, -float("inf"))
    for r in tl.range(pid, n_rows, nprog, num_stages=STAGES):
        r64 = tl.cast(r, tl.int64)
        if PREFETCH == 1:
            x = nxt
            nxt = load_row(X, r64 + nprog, n_rows, stride_x, cols, cm, -float("inf"))
        else:
            x = tl.load(X + r64 * stride_x + cols, mask=cm, other=-float("inf"), eviction_policy=LOAD_EV,
                        cache_modifier=LOAD_CM)
        xf = x.to(tl.float32)
        m = tl.max(xf, axis=0)
        e = _exp(xf - m, False)
        inv = tl.math.div_rn(1.0, tl.sum(e, axis=0))
        tl.store(Y + r64 * stride_y + cols, (e * inv).to(Y.dtype.element_ty), mask=cm, cache_modifier=STORE_CM)


@triton.jit
def softmax_bwd_pf_kernel(DY, Yp, DX, n_rows, nprog, n_cols, stride, BLOCK_N: tl.constexpr, PREFETCH: tl.constexpr,
                          STAGES: tl.constexpr, LOWREG: tl.constexpr = False, STORE_CM: tl.constexpr = "",
                          LOAD_EV: tl.constexpr = ""):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    if PREFETCH == 1:
        ndy = load_row(DY, pid, n_rows, stride, cols, cm, 0.0)
        ny = load_row(Yp, pid, n_rows, stride, cols, cm, 0.0)
    for r in tl.range(pid, n_rows, nprog, num_stages=STAGES):
        off = tl.cast(r, tl.int64) * stride + cols
        if PREFETCH == 1:
            dy = ndy
            y = ny
            ndy = load_row(DY, tl.cast(r, tl.int64) + nprog, n_rows, stride, cols, cm, 0.0)
            ny = load_row(Yp, tl.cast(r, tl.int64) + nprog, n_rows, stride, cols, cm, 0.0)
        else:
            dy = tl.load(DY + off, mask=cm, other=0.0, eviction_policy=LOAD_EV)
            y = tl.load(Yp + off, mask=cm, other=0.0, eviction_policy=LOAD_EV)
        dyf = dy.to(tl.float32)
        yf = y.to(tl.float32)
        dot = tl.sum(dyf * yf, axis=0)
        if LOWREG:
            dyf = bf16_to_fp32(dy)
            yf = bf16_to_fp32(y)
        tl.store(DX + off, (yf * (dyf - dot)).to(DX.dtype.element_ty), mask=cm, cache_modifier=STORE_CM)


@triton.jit
def sparsemax_fwd_pf_kernel(X, Y, n_rows, nprog, n_cols, stride_x, stride_y, BLOCK_N: tl.constexpr,
                            PREFETCH: tl.constexpr, FUSE: tl.constexpr, MAX_ITERS: tl.constexpr):
    # FUSE 0: three block reductions per step (k, s; then f at the Newton-bisection midpoint; the build's one-row
    # kernel); FUSE 1: (k, s) as one reduction, then f (two rounds); FUSE 2: the build's persistent step, f at the
    # bracket's middle so that (k, s, f) are one reduction.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    if PREFETCH == 1:
        nxt = load_row(X, pid, n_rows, stride_x, cols, cm, -float("inf"))
    for r in tl.range(pid, n_rows, nprog, num_stages=1):
        r64 = tl.cast(r, tl.int64)
        if PREFETCH == 1:
            x = nxt
            nxt = load_row(X, r64 + nprog, n_rows, stride_x, cols, cm, -float("inf"))
        else:
            x = tl.load(X + r64 * stride_x + cols, mask=cm, other=-float("inf"))
        if FUSE == 2:
            _sparsemax_row(x, Y, r64, cols, cm, stride_y, MAX_ITERS)
        else:
            xf = x.to(tl.float32)
            hi = tl.max(xf, axis=0)
            lo = hi - 1.0
            tau = lo
            active = hi == hi
            it = 0
            while active & (it < MAX_ITERS):
                in_s = xf >= lo
                if FUSE == 1:
                    k, s = tl.reduce((in_s.to(tl.float32), tl.where(in_s, xf, 0.0)), 0, _pair_add)
                else:
                    k = tl.sum(in_s.to(tl.float32), axis=0)
                    s = tl.sum(tl.where(in_s, xf, 0.0), axis=0)
                mid = 0.5 * (tl.maximum((s - 1.0) / k, lo) + hi)
                f_mid = tl.sum(tl.maximum(xf - mid, 0.0), axis=0)
                lo, hi, tau, active = _step(lo, hi, tau, active, k, s, f_mid, mid)
                it += 1
            tl.store(Y + r64 * stride_y + cols, tl.maximum(xf - tau, 0.0).to(Y.dtype.element_ty), mask=cm)


def report(name, n, res, bytes_moved):
    res.sort()
    copy_gbs = COPY[n]
    lines = [f"  {t*1e3:8.1f} us {bytes_moved / t / 1e6:6.0f} GB/s {100 * bytes_moved / t / 1e6 / copy_gbs:4.0f} %  {c}"
             for t, c in res]
    print(f"{name} n={n} (copy {copy_gbs:.0f} GB/s):\n" + "\n".join(lines), flush=True)


COPY = {}


def copy_rate(n):
    a = torch.randn(ROWS, n, device="cuda", dtype=DT)
    b = torch.empty_like(a)
    t = bench(lambda: b.copy_(a))
    COPY[n] = 2 * a.numel() * 2 / t / 1e6


def grids():
    return ((SMS, "1/SM"), (2 * SMS, "2/SM"))


MODS = (("", ""), (".cs", ""), ("", "evict_first"), (".cs", "evict_first"))


def checker(res, out, describe):
    """check(fn, label): poisons out, runs fn, appends (median time, label with describe()'s error summary)."""
    def check(fn, label):
        out.fill_(float("nan"))
        fn()
        res.append((bench(fn), f"{label} ({describe()})"))
    return check


def run_softmax(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT) * 3
    y = torch.empty_like(x)
    ref = torch.softmax(x.float(), -1)
    bn = triton.next_power_of_2(n)
    res = []
    check = checker(res, y, lambda: f"err {(y.float() - ref).abs().max().item():.2g}")
    for nw in (16, 32):
        check(lambda: softmax_fwd_kernel[(ROWS,)](x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=1, BLOCK_N=bn, ALIGN=8,
                                                  ACCURATE=False, num_warps=nw), f"build kernel nw={nw}")
    for pf, grids_ in ((0, ((ROWS, "row/program"), (2 * SMS, "2/SM"))), (1, ((SMS, "1/SM"), (2 * SMS, "2/SM")))):
        for nw in (16, 32):
            for g, gl in grids_:
                for st, ev in MODS:
                    check(lambda: softmax_fwd_pf_kernel[(g,)](x, y, ROWS, g, n, n, n, BLOCK_N=bn, PREFETCH=pf, STAGES=1,
                                                              STORE_CM=st, LOAD_EV=ev, num_warps=nw),
                          f"persistent pf={pf} nw={nw} {gl} store{st or '-'} load {ev or '-'}")
    report("softmax fwd", n, res, 2 * x.numel() * 2)


def run_softmax_bwd(n):
    y = torch.softmax(torch.randn(ROWS, n, device="cuda", dtype=torch.float32) * 3, -1).to(DT)
    dy = torch.randn_like(y)
    dx = torch.empty_like(y)
    yf, dyf = y.float(), dy.float()
    ref = yf * (dyf - (dyf * yf).sum(-1, keepdim=True))
    bn = triton.next_power_of_2(n)
    res = []
    check = checker(res, dx, lambda: f"rel err {((dx.float() - ref).abs().max() / ref.abs().max()).item():.2g}")

    for nw in (16, 32):
        check(lambda: softmax_bwd_kernel[(ROWS,)](dy, y, dx, ROWS, n // 8, n // 8, n // 8, n // 8, BLOCK_M=1,
                                                  BLOCK_N=bn, ALIGN=8, num_warps=nw), f"build kernel nw={nw}")
    for pf, grids_ in ((0, ((ROWS, "row/program"), (2 * SMS, "2/SM"))), (1, ((SMS, "1/SM"), (2 * SMS, "2/SM")))):
        for nw in (16, 32):
            for g, gl in grids_:
                for lowreg in (False, True):
                    for st, ev in MODS:
                        check(lambda: softmax_bwd_pf_kernel[(g,)](dy, y, dx, ROWS, g, n, n, BLOCK_N=bn, PREFETCH=pf,
                                                                  STAGES=1, LOWREG=lowreg, STORE_CM=st, LOAD_EV=ev,
                                                                  num_warps=nw),
                              f"persistent pf={pf} nw={nw} {gl} lowreg={lowreg} store{st or '-'} load {ev or '-'}")
    report("softmax bwd", n, res, 3 * y.numel() * 2)


def layer_norm_case(n):
    """x (8192 x n bf16, mean 0.5), weight, bias and the forward's outputs y, mean, rstd."""
    x = torch.randn(ROWS, n, device="cuda", dtype=DT) + 0.5
    w, b = torch.rand(n, device="cuda", dtype=DT), torch.randn(n, device="cuda", dtype=DT)
    mean = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    return x, w, b, torch.empty_like(x), mean, torch.empty_like(mean)


def run_layer_norm(n):
    """The build's forward (weight and bias): one row per program, and persistent with / without REWIDEN."""
    x, w, b, y, mean, rstd = layer_norm_case(n)
    ref = torch.nn.functional.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
    bn = triton.next_power_of_2(n)
    res = []
    check = checker(res, y, lambda: f"err {(y.float() - ref).abs().max().item():.2g}")
    forms = [(ROWS, False, False, "row/program")] + [(g, True, rw, f"persistent rewiden={rw} {gl}")
                                                      for g, gl in grids() for rw in (False, True)]
    for nw in (8, 16, 32):
        for g, persistent, rewiden, label in forms:
            check(lambda: layer_norm_fwd_kernel[(g,)](x, w, b, y, mean, rstd, ROWS, n // 8, n // 8, n // 8, 1e-5, True,
                                                      True, True, BLOCK_M=1, BLOCK_N=bn, ALIGN=8, AFFINE=True,
                                                      PERSISTENT=persistent, REWIDEN=rewiden, num_warps=nw),
                  f"build {label} nw={nw}")
    compiled = torch.compile(lambda x, w, b: torch.nn.functional.layer_norm(x, (n,), w, b, 1e-5), dynamic=False)
    res.append((bench(lambda: compiled(x, w, b)), "torch.compile"))
    report("layer_norm fwd", n, res, 2 * x.numel() * 2)


def run_sparsemax(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    bn = triton.next_power_of_2(n)
    want = torch.empty_like(x)
    sparsemax_fwd_looped_kernel[(ROWS,)](x, want, ROWS, n // 8, n // 8, n // 8, BLOCK_N=4096, ALIGN=8, MAX_ITERS=64,
                                         num_warps=8)
    res = []
    check = checker(res, y, lambda: f"vs looped {(y.float() - want.float()).abs().max().item():.2g}, "
                                    f"|sum-1| {(y.float().sum(-1) - 1).abs().max().item():.2g}")

    res.append((bench(lambda: sparsemax_fwd_looped_kernel[(ROWS,)](x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_N=4096,
                                                                   ALIGN=8, MAX_ITERS=64, num_warps=8)),
                "build looped kernel"))
    for nw in (16, 32):
        check(lambda: sparsemax_fwd_kernel[(ROWS,)](x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=1, BLOCK_N=bn,
                                                    ALIGN=8, MAX_ITERS=64, num_warps=nw), f"build single block nw={nw}")
    for fuse in (0, 1, 2):
        for pf in (0, 1):
            for nw in (16, 32):
                for g, gl in grids():
                    try:
                        check(lambda: sparsemax_fwd_pf_kernel[(g,)](x, y, ROWS, g, n, n, n, BLOCK_N=bn, PREFETCH=pf,
                                                                    FUSE=fuse, MAX_ITERS=64, num_warps=nw),
                              f"persistent fuse={fuse} pf={pf} nw={nw} {gl}")
                    except Exception as e:  # noqa: BLE001
                        print(f"  sparsemax fuse={fuse} pf={pf} nw={nw} {gl}: {str(e)[:120]}")
    report("sparsemax fwd", n, res, 2 * x.numel() * 2)


def run_sparsemax_warps(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    bn = triton.next_power_of_2(n)
    res = []
    for nw in (4, 8, 16, 32):
        if bn // (32 * nw) > 64:
            continue
        for per_sm in (1, 2, 3, 4):
            g = per_sm * SMS
            res.append((bench(lambda: sparsemax_fwd_kernel[(g,)](x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=1,
                                                                 BLOCK_N=bn, ALIGN=8, MAX_ITERS=64, PERSISTENT=True,
                                                                 PREFETCH=True, num_warps=nw)),
                        f"build persistent nw={nw} {per_sm}/SM"))
    report("sparsemax fwd (warps)", n, res, 2 * x.numel() * 2)


def sparsemax_case(n, scale):
    """A 8192 x n bf16 input of scale * randn, its output buffer, and check() (see checker) against the build's
    looped kernel, with the list the timings go to."""
    x = scale * torch.randn(ROWS, n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    want = torch.empty_like(x)
    sparsemax_fwd_looped_kernel[(ROWS,)](x, want, ROWS, n // 8, n // 8, n // 8, BLOCK_N=4096, ALIGN=8, MAX_ITERS=64,
                                         num_warps=8)
    res = []
    return x, y, res, checker(res, y, lambda: f"vs looped {(y.float() - want.float()).abs().max().item():.2g}")


def run_sparsemax_vec(n):
    """The build's forward with and without VEC (steps on the vectors' maxima) by warps and programs per SM, on
    the benchmark's rows (2 * randn: a few candidates) and on dense ones (0.2 * randn:
    hundreds of candidates, every row falls back to the steps on the whole row)."""
    bn = triton.next_power_of_2(n)
    persistent = bn >= 16384
    for scale in (2.0, 0.2):
        x, y, res, check = sparsemax_case(n, scale)
        configs = (((8, 1), (8, 2), (8, 4), (16, 1), (16, 2)) if persistent
                   else tuple((nw, 0) for nw in (4, 8, 16) if 1 <= bn // (32 * nw) <= 64))
        for vec in (0, 8):
            for nw, per_sm in configs:
                g = per_sm * SMS if persistent else ROWS
                label = f"vec={vec} nw={nw}" + (f" {per_sm}/SM" if persistent else "")
                try:
                    check(lambda: sparsemax_fwd_kernel[(g,)](
                        x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=1, BLOCK_N=bn, ALIGN=8, MAX_ITERS=64,
                        PERSISTENT=persistent, PREFETCH=persistent, VEC=vec, num_warps=nw), label)
                except Exception as e:  # noqa: BLE001
                    print(f"  {label}: {str(e)[:160]}")
        report(f"sparsemax fwd (VEC, {scale} * randn)", n, res, 2 * x.numel() * 2)


def run_sparsemax_exit(n):
    """The build's forward (its launcher's configuration for n) with each row stopping once S's least element exceeds
    the Newton point (SUPPORT_EXIT, one step earlier) or once the point stops moving, and with no steps at all
    (MAX_ITERS=0: wrong output, the kernel's time without its steps), on 2 * randn and 0.2 * randn rows."""
    bn = triton.next_power_of_2(n)
    persistent = bn >= 16384
    grid = (1 if bn >= 32768 else 2) * SMS if persistent else ROWS
    nw = 8 if persistent else 4
    for scale in (2.0, 0.2):
        x, y, res, check = sparsemax_case(n, scale)
        for rep in range(2):
            for iters, exit_ in ((64, False), (64, True), (0, False)):
                check(lambda: sparsemax_fwd_kernel[(grid,)](
                    x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=1, BLOCK_N=bn, ALIGN=8, MAX_ITERS=iters,
                    PERSISTENT=persistent, PREFETCH=persistent, VEC=8, SUPPORT_EXIT=exit_, num_warps=nw),
                    f"MAX_ITERS={iters} SUPPORT_EXIT={int(exit_)} run {rep}")
        report(f"sparsemax fwd (exit, {scale} * randn, grid {grid}, {nw} warps)", n, res, 2 * x.numel() * 2)


def run_softmax_mid(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT) * 3
    y = torch.empty_like(x)
    res = []
    for bm in (1, 2):
        for nw in (2, 4, 8, 16):
            if bm * n // (32 * nw) < 4:
                continue
            res.append((bench(lambda: softmax_fwd_kernel[(ROWS // bm,)](x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_M=bm,
                                                                         BLOCK_N=n, ALIGN=8, ACCURATE=False,
                                                                         num_warps=nw)), f"build bm={bm} nw={nw}"))
    for nw in (4, 8, 16):
        for st, ev in MODS:
            for lcm in ("", ".ca", ".cg"):
                if ev and lcm:
                    continue  # ptxas: an eviction priority does not combine with a cache operator
                res.append((bench(lambda: softmax_fwd_pf_kernel[(ROWS,)](x, y, ROWS, ROWS, n, n, n, BLOCK_N=n,
                                                                         PREFETCH=0, STAGES=1, STORE_CM=st,
                                                                         LOAD_EV=ev, LOAD_CM=lcm, num_warps=nw)),
                            f"row/program nw={nw} store {st or '-'} load {ev or '-'} {lcm or '-'}"))
    try:
        from liger_kernel.ops.softmax import _softmax_forward
        res.append((bench(lambda: _softmax_forward(x)), "Liger-Kernel"))
    except Exception as e:  # noqa: BLE001
        print(f"Liger-Kernel: {str(e)[:100]}")
    report("softmax fwd (mid)", n, res, 2 * x.numel() * 2)


def run_layer_norm_looped(n):
    """The build's looped (two-read, per-lane Welford) LayerNorm forward by chunk, warps and pipelining stages."""
    x, w, b, y, mean, rstd = layer_norm_case(n)
    res = []
    for bn in (512, 1024, 2048, 4096, 8192):
        for nw in (2, 4, 8, 16):
            if bn // (32 * nw) < 2 or bn // (32 * nw) > 64:
                continue
            for st in (1, 2, 3, 4):
                res.append((bench(lambda: layer_norm_fwd_looped_kernel[(ROWS,)](
                    x, w, b, y, mean, rstd, ROWS, n // 8, n // 8, n // 8, 1e-5, True, True, True, BLOCK_N=bn, ALIGN=8,
                    num_warps=nw, num_stages=st)), f"looped BLOCK_N={bn} nw={nw} stages={st}"))
    report("layer_norm fwd (looped)", n, res, 2 * x.numel() * 2)


def run_sparsemax_looped(n):
    """The build's looped forward (rows > 32768) with and without VEC (first pass writes the vectors' maxima into
    the output row, steps read them when no vector holds two candidates) by chunk and warps, on 2 * randn and
    0.2 * randn rows."""
    for scale in (2.0, 0.2):
        x, y, res, check = sparsemax_case(n, scale)
        for vec in (0, 8):
            for bn, nw in ((2048, 4), (4096, 8), (8192, 8), (8192, 16)):
                label = f"looped vec={vec} BLOCK_N={bn} nw={nw}"
                check(lambda: sparsemax_fwd_looped_kernel[(ROWS,)](
                    x, y, ROWS, n // 8, n // 8, n // 8, BLOCK_N=bn, ALIGN=8, MAX_ITERS=64, VEC=vec, num_warps=nw),
                      label)
        report(f"sparsemax looped fwd ({scale} * randn)", n, res, 2 * x.numel() * 2)


def run_softmax_small(n):
    """The build's one-row softmax forward on 4 rows (latency, not bandwidth) by warps, timed as the benchmarks
    time small cases (benchmarks/harness.py: a hold kernel before each call, so no launch gap is timed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import harness  # noqa: E402
    x = torch.randn(4, n, device="cuda", dtype=DT) * 3
    y = torch.empty_like(x)
    res = []
    for nw in (2, 4, 8, 16, 32):
        if n // (32 * nw) < 1:
            continue
        fn = lambda: softmax_fwd_kernel[(4,)](x, y, 4, n // 8, n // 8, n // 8, BLOCK_M=1, BLOCK_N=n, ALIGN=8,  # noqa
                                              ACCURATE=False, num_warps=nw)
        fn()
        err = (y.float() - x.float().softmax(-1)).abs().max().item()
        res.append((harness.time_ms(fn), f"4 rows nw={nw} (max err {err:.2g})"))
    report("softmax fwd (4 rows)", n, res, 2 * x.numel() * 2)


RUNS = {"softmax": run_softmax, "softmax_bwd": run_softmax_bwd, "layer_norm": run_layer_norm,
        "sparsemax": run_sparsemax, "sparsemax_warps": run_sparsemax_warps,
        "sparsemax_vec": run_sparsemax_vec, "sparsemax_looped": run_sparsemax_looped, "softmax_small": run_softmax_small, "layer_norm_looped": run_layer_norm_looped,
        "softmax_mid": run_softmax_mid, "sparsemax_exit": run_sparsemax_exit}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("ops", nargs="*", default=list(RUNS))
    ap.add_argument("--hidden", default="16384,32768")
    args = ap.parse_args()
    for n in (int(h) for h in args.hidden.split(",")):
        copy_rate(n)
        for op in args.ops:
            RUNS[op](n)
