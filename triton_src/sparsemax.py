"""Sparsemax kernels over the last dimension (Martins & Astudillo, 2016) and the specializations built.

y = max(x - tau, 0) with tau the threshold that makes y sum to 1: the Euclidean projection of x onto the
probability simplex. tau solves f(tau) = sum(max(x - tau, 0)) = 1, f convex, piecewise linear, decreasing.
No sort: starting from lo = max(x) - 1 (f(lo) >= 1), each step takes the Newton point of f from the left,
    tau = (sum of x over S - 1) / |S|,  S = {x >= lo},
which never passes the root and is exact once S is the support; each step also bisects a bracket [lo, hi]
(f(mid) >= 1 raises lo, else lowers hi), which bounds the number of steps on adversarial inputs. A row
stops when the Newton point no longer moves (then tau is the exact fp32 threshold of its support), after
at most MAX_ITERS steps. Rows stop after 1-8 steps (randn rows of 1024-262144 elements scaled by 0.01-100,
emulated in fp32 with torch ops). tau stays in fp32 (Liger-Kernel rounds it to x's dtype first; the fp32 one is closer
to the float64 projection).

Candidates: tau >= max(x) - 1, so only x >= max - 1 enter a step. One-row programs (rows of 1024 and up) hold
each 16-byte vector of the row in one thread; when no vector holds two candidates the steps run on the vectors'
maxima, 1/8 of a 16-bit row (H200, 8192 x 32768 bf16 of 2 * randn: 295 us against 486; rows where a vector holds
two, e.g. 0.2 * randn, run the steps on the whole row, ~7 % slower than without the check).

Backward from the saved output: dx = mask * (dy - mean of dy over the support), mask = y > 0.
Single-block kernels hold BLOCK_M rows in registers; longer rows use looped kernels that read the row once
per step from memory (L2 for the first rows in flight), or, aligned and without two candidates in a vector, the
vectors' maxima that the first pass wrote into the row's output (1/8 of a 16-bit row).
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._rows import load_row

# The backward holds rows of up to 32768 in one block (H200, 8192x32768 bf16: 0.374 ms against the looped kernel's
# 0.631); the forward's one-row-per-program block at 32768 (32 warps, three block reductions per step) was slower
# than the looped one (0.745 against 0.663 ms); its persistent form (one reduction per step, the next row loaded
# early) is faster than both, so the forward's single block goes to 32768 too.
CPP_CONSTANTS = {
    "FWD_MAX_BLOCK_N": 32768,
    "PERSISTENT_MIN_BLOCK_N": 16384,
    "BWD_MAX_BLOCK_N": 32768,
    "MIN_BLOCK_N": 128,
    "LOOP_BLOCK_N": 4096,
    # the looped forward's chunk (8 warps): H200 8192 x 65536 bf16 (scripts/tune_wide_rows.py sparsemax_looped),
    # 2 * randn rows 933 us against 996 at 4096 (steps on the maxima; on the row 1355 against 1692), 0.2 * randn
    # rows (every row falls back to the steps on the row) 2538 against 3401 (without VEC 2096 against 2768)
    "FWD_LOOP_BLOCK_N": 8192,
    "MAX_ITERS": 64,
}


@triton.jit
def _step(lo, hi, tau, active, k, s, f_mid, mid):
    """One safeguarded step per row, from sum/count of x over {x >= lo} and f at the bisection point."""
    new_tau = (s - 1.0) / k
    moved = new_tau > lo
    tau = tl.where(active, new_tau, tau)
    above = f_mid >= 1.0
    new_lo = tl.maximum(new_tau, lo)
    new_lo = tl.where(above, tl.maximum(new_lo, mid), new_lo)
    new_hi = tl.where(above, hi, mid)
    lo = tl.where(active, new_lo, lo)
    hi = tl.where(active, new_hi, hi)
    return lo, hi, tau, active & moved


@triton.jit
def _sums3(k0, s0, f0, k1, s1, f1):
    return k0 + k1, s0 + s1, f0 + f1


@triton.jit
def _sums3_min(k0, s0, f0, m0, k1, s1, f1, m1):
    return k0 + k1, s0 + s1, f0 + f1, tl.minimum(m0, m1)


@triton.jit
def _newton(v, lo, hi, tau, active, DONE: tl.constexpr, MAX_ITERS: tl.constexpr, SUPPORT_EXIT: tl.constexpr = False):
    """The threshold of fp32 values v (1-D, -inf where unused) from the state after DONE steps: each step is one
    block-wide reduction of (|S|, sum over S, f at the bracket's middle), as the looped kernel's step, instead of
    three. SUPPORT_EXIT: the reduction also takes the least x of S, and the row stops as soon as that exceeds the
    step's Newton point tau: then sum over x > tau of (x - tau) = 1, so tau is the threshold (the same value the
    next step would find again from the same S), one step earlier than waiting for tau to stop moving."""
    it = tl.full([], DONE, tl.int32)
    while active & (it < MAX_ITERS):
        mid = 0.5 * (lo + hi)
        in_s = v >= lo
        sums = (in_s.to(tl.float32), tl.where(in_s, v, 0.0), tl.maximum(v - mid, 0.0))
        if SUPPORT_EXIT:
            k, s, f_mid, least = tl.reduce(sums + (tl.where(in_s, v, float("inf")),), 0, _sums3_min)
        else:
            k, s, f_mid = tl.reduce(sums, 0, _sums3)
        lo, hi, tau, active = _step(lo, hi, tau, active, k, s, f_mid, mid)
        if SUPPORT_EXIT:
            active = active & (least <= tau)
        it += 1
    return tau


@triton.jit
def _sparsemax_row(x, Y, row, cols, cm, stride_y, MAX_ITERS: tl.constexpr, VEC: tl.constexpr = 0,
                   SUPPORT_EXIT: tl.constexpr = False):
    """One row (x as loaded, -inf past n_cols; x, cols, cm 1-D, or [BLOCK_N // VEC, VEC] with VEC > 0), written
    to row `row` of Y.

    Every step's set S and bracket lie in [max - 1, max]: only the candidates x >= max - 1 take part. With VEC,
    each thread holds its VEC-element vectors whole; when no vector holds two candidates (randn rows of 32768
    have a dozen candidates in 4096 vectors), the candidates are exactly the vectors' maxima that are >= max - 1,
    and the steps run on the maxima (1/VEC of the row) instead of the row; otherwise on the row. (Counting the
    candidates within the first step instead of a reduction of its own measured the same at 32768 and slower at
    16384, where it took 175 registers against 128: H200 bf16, sparsemax_vec sweep.) SUPPORT_EXIT: the steps on
    the maxima stop as soon as S is known to be the support (see _newton)."""
    xf = x.to(tl.float32)
    if VEC > 0:
        vmax = tl.max(xf, axis=1)  # within each thread
        hi = tl.max(vmax, axis=0)
        lo = hi - 1.0
        hits = tl.sum((xf >= lo).to(tl.int32), axis=1)  # within each thread
        if tl.max(hits, axis=0) <= 1:
            tau = _newton(vmax, lo, hi, lo, hi == hi, 0, MAX_ITERS, SUPPORT_EXIT)
        else:
            tau = _newton(tl.reshape(xf, [xf.shape[0] * xf.shape[1]], can_reorder=True), lo, hi, lo, hi == hi, 0,
                          MAX_ITERS)
    else:
        hi = tl.max(xf, axis=0)
        tau = _newton(xf, hi - 1.0, hi, hi - 1.0, hi == hi, 0, MAX_ITERS)
    tl.store(Y + row * stride_y + cols, tl.maximum(xf - tau, 0.0).to(Y.dtype.element_ty), mask=cm)


@triton.jit
def sparsemax_fwd_kernel(X, Y, n_rows, n_cols_v, stride_x_v, stride_y_v, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, MAX_ITERS: tl.constexpr,
                         PERSISTENT: tl.constexpr = False, PREFETCH: tl.constexpr = False, VEC: tl.constexpr = 0,
                         SUPPORT_EXIT: tl.constexpr = False):
    n_cols = n_cols_v * ALIGN
    if VEC > 0:  # a row as [BLOCK_N // VEC, VEC], each vector in one thread (see _sparsemax_row)
        cols = tl.arange(0, BLOCK_N // VEC)[:, None] * VEC + tl.arange(0, VEC)[None, :]
    else:
        cols = tl.arange(0, BLOCK_N)
    if PERSISTENT:
        # Rows of 16384-32768: programs stride over the rows (grid: the resident programs), one reduction per
        # step, and with PREFETCH the next row's load issued before this row's steps. H200, 8192 rows bf16
        # (scripts/tune_wide_rows.py, before VEC): 579.5 us at 32768 against 800.4 for the looped kernel, 315.5 us
        # at 16384 against 418.7 for three reductions per step and one program per row. With VEC, 8 warps
        # (16-bit rows): 153 us at 16384 against 212 for 16 warps (sparsemax_vec sweep). At 32768 (255 registers,
        # one resident program per SM) grids of 1, 2 and 4 programs per SM measure within 2 %, in either order
        # from run to run. The next row staged through shared memory by Triton's pipeliner (2-3 stages, no
        # PREFETCH) and the output widened again from the 16-bit row (layer_norm's REWIDEN) measured slower: 320
        # and 352 us against 294 (sweep sparsemax_stages as of commit 094e054).
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        cm = cols < n_cols
        stride_x = stride_x_v * ALIGN
        if PREFETCH:
            nxt = load_row(X, pid, n_rows, stride_x, cols, cm, -float("inf"))
        for r in range(pid, n_rows, nprog):
            row = tl.cast(r, tl.int64)
            if PREFETCH:
                x = nxt
                nxt = load_row(X, row + nprog, n_rows, stride_x, cols, cm, -float("inf"))
            else:
                x = tl.load(X + row * stride_x + cols, mask=cm, other=-float("inf"))
            _sparsemax_row(x, Y, row, cols, cm, stride_y_v * ALIGN, MAX_ITERS, VEC, SUPPORT_EXIT)
        return
    if VEC > 0:  # one row per program (BLOCK_M == 1)
        row = tl.program_id(0).to(tl.int64)
        cm = cols < n_cols
        x = tl.load(X + row * (stride_x_v * ALIGN) + cols, mask=cm, other=-float("inf"))
        _sparsemax_row(x, Y, row, cols, cm, stride_y_v * ALIGN, MAX_ITERS, VEC, SUPPORT_EXIT)
        return
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: no wrap at 2^31 rows
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    xf = tl.load(X + rows[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    # Padding columns are -inf (never in S, zero in f); rows past the end are zeros (they stop at once).
    xf = tl.where(col_mask[None, :], xf, -float("inf"))
    hi = tl.max(xf, axis=1)
    lo = hi - 1.0
    tau = lo
    active = rows >= 0
    it = 0
    while (tl.sum(active.to(tl.int32), axis=0) > 0) & (it < MAX_ITERS):
        in_s = xf >= lo[:, None]
        k = tl.sum(in_s.to(tl.float32), axis=1)
        s = tl.sum(tl.where(in_s, xf, 0.0), axis=1)
        mid = 0.5 * (tl.maximum((s - 1.0) / k, lo) + hi)
        f_mid = tl.sum(tl.maximum(xf - mid[:, None], 0.0), axis=1)
        lo, hi, tau, active = _step(lo, hi, tau, active, k, s, f_mid, mid)
        it += 1
    y = tl.maximum(xf - tau[:, None], 0.0)
    tl.store(Y + rows[:, None] * (stride_y_v * ALIGN) + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _newton_looped(ptr, n, lo, hi, BLOCK_N: tl.constexpr, MAX_ITERS: tl.constexpr):
    """_newton over the n values at ptr (any float dtype), read from memory once per step."""
    cols = tl.arange(0, BLOCK_N)
    tau = lo
    active = hi == hi
    it = 0
    while active & (it < MAX_ITERS):
        # One pass per step: the Newton point is not known before it, so f is evaluated at the bracket's middle.
        mid = 0.5 * (lo + hi)
        k_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        s_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        f_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, n, BLOCK_N):
            c = start + cols
            xf = tl.load(ptr + c, mask=c < n, other=-float("inf")).to(tl.float32)
            in_s = xf >= lo
            k_acc += in_s.to(tl.float32)
            s_acc += tl.where(in_s, xf, 0.0)
            f_acc += tl.maximum(xf - mid, 0.0)
        lo, hi, tau, active = _step(lo, hi, tau, active, tl.sum(k_acc, axis=0), tl.sum(s_acc, axis=0),
                                    tl.sum(f_acc, axis=0), mid)
        it += 1
    return tau


@triton.jit
def sparsemax_fwd_looped_kernel(X, Y, n_rows, n_cols_v, stride_x_v, stride_y_v, BLOCK_N: tl.constexpr,
                                ALIGN: tl.constexpr, MAX_ITERS: tl.constexpr, VEC: tl.constexpr = 0):
    # With VEC (aligned rows), the first pass also writes each VEC-element vector's maximum into the start of
    # the row's output (x's dtype: exact) and finds the largest second-largest entry of a vector (a tie counts
    # twice). When that is below max - 1, no vector holds two candidates and the steps read the maxima, 1/VEC of
    # the row, from L2, instead of the row; the last pass overwrites them.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    if VEC > 0:
        vcols = tl.arange(0, BLOCK_N // VEC)
        cols2 = vcols[:, None] * VEC + tl.arange(0, VEC)[None, :]
        n_vec = n_cols // VEC
        top = tl.full([BLOCK_N // VEC], -float("inf"), tl.float32)
        second = tl.full([BLOCK_N // VEC], -float("inf"), tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols2
            xf = tl.load(x_row + c, mask=c < n_cols, other=-float("inf")).to(tl.float32)
            vmax = tl.max(xf, axis=1)  # within each thread
            ties = tl.sum((xf == vmax[:, None]).to(tl.int32), axis=1)
            below = tl.max(tl.where(xf < vmax[:, None], xf, -float("inf")), axis=1)
            second = tl.maximum(second, tl.where(ties > 1, vmax, below))
            top = tl.maximum(top, vmax)
            v = start // VEC + vcols
            tl.store(y_row + v, vmax.to(Y.dtype.element_ty), mask=v < n_vec)
        hi = tl.max(top, axis=0)
        tl.debug_barrier()  # the maxima are read by other threads of the program
        if tl.max(second, axis=0) < hi - 1.0:
            tau = _newton_looped(y_row, n_vec, hi - 1.0, hi, BLOCK_N, MAX_ITERS)
        else:
            tau = _newton_looped(x_row, n_cols, hi - 1.0, hi, BLOCK_N, MAX_ITERS)
        tl.debug_barrier()  # every maximum is read before the output overwrites it
    else:
        cols = tl.arange(0, BLOCK_N)
        m = tl.full([BLOCK_N], -float("inf"), tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            m = tl.maximum(m, tl.load(x_row + c, mask=c < n_cols, other=-float("inf")).to(tl.float32))
        hi = tl.max(m, axis=0)
        tau = _newton_looped(x_row, n_cols, hi - 1.0, hi, BLOCK_N, MAX_ITERS)
    cols = tl.arange(0, BLOCK_N)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        xf = tl.load(x_row + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(y_row + c, tl.maximum(xf - tau, 0.0).to(Y.dtype.element_ty), mask=cm)


@triton.jit
def sparsemax_bwd_kernel(DY, Y, DX, n_rows, n_cols_v, stride_dy_v, stride_y_v, stride_dx_v, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: no wrap at 2^31 rows
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows2d = rows[:, None]
    dy = tl.load(DY + rows2d * (stride_dy_v * ALIGN) + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.load(Y + rows2d * (stride_y_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
    supp = y > 0
    k = tl.sum(supp.to(tl.float32), axis=1)
    mean = tl.sum(tl.where(supp, dy, 0.0), axis=1) / tl.maximum(k, 1.0)
    dx = tl.where(supp, dy - mean[:, None], 0.0)
    tl.store(DX + rows2d * (stride_dx_v * ALIGN) + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def sparsemax_bwd_looped_kernel(DY, Y, DX, n_rows, n_cols_v, stride_dy_v, stride_y_v, stride_dx_v,
                                BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    dy_row = DY + row * (stride_dy_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    dx_row = DX + row * (stride_dx_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    k_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    s_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        supp = tl.load(y_row + c, mask=cm, other=0.0) > 0
        k_acc += supp.to(tl.float32)
        s_acc += tl.where(supp, tl.load(dy_row + c, mask=cm, other=0.0).to(tl.float32), 0.0)
    mean = tl.sum(s_acc, axis=0) / tl.maximum(tl.sum(k_acc, axis=0), 1.0)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        supp = tl.load(y_row + c, mask=cm, other=0.0) > 0
        dy = tl.load(dy_row + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(dx_row + c, tl.where(supp, dy - mean, 0.0).to(DX.dtype.element_ty), mask=cm)


# ---------------------------------------------------------------------------------------------------
# Specializations


def _align(dtype):
    return 16 // ELEMENT_SIZE[dtype]


def _blocks(max_block):
    b = CPP_CONSTANTS["MIN_BLOCK_N"]
    while b <= max_block:
        yield b
        b *= 2


def _rows_per_program(block_n):
    return max(1, 1024 // block_n)


def _warps(tile_elems):
    # The forward reduces the tile 3 times per step: more warps per row for long rows. Not yet tuned.
    return min(32, max(4, tile_elems // 1024))


def _sig(names, dtype):
    return {n: (f"*{dtype}" if n.isupper() else ("i64" if n.startswith("stride") else "i32")) for n in names}


_FWD_ARGS = ("X", "Y", "n_rows", "n_cols_v", "stride_x_v", "stride_y_v")
_BWD_ARGS = ("DY", "Y", "DX", "n_rows", "n_cols_v", "stride_dy_v", "stride_y_v", "stride_dx_v")


def _specs():
    fwd = KernelSpec(sparsemax_fwd_kernel)
    fwd_loop = KernelSpec(sparsemax_fwd_looped_kernel)
    bwd = KernelSpec(sparsemax_bwd_kernel)
    bwd_loop = KernelSpec(sparsemax_bwd_looped_kernel)
    loop_n = CPP_CONSTANTS["LOOP_BLOCK_N"]
    iters = {"MAX_ITERS": CPP_CONSTANTS["MAX_ITERS"]}
    for dt in ("fp32", "bf16", "fp16"):
        for spec, args, max_block, extra in ((fwd, _FWD_ARGS, CPP_CONSTANTS["FWD_MAX_BLOCK_N"], iters),
                                             (bwd, _BWD_ARGS, CPP_CONSTANTS["BWD_MAX_BLOCK_N"], {})):
            for block_n in _blocks(max_block):
                block_m = _rows_per_program(block_n)
                warps = _warps(block_m * block_n)
                if spec is fwd:
                    # persistent from 16384 (8 warps for 16-bit rows, 16 for fp32 ones); the next row held early
                    # where it fits beside the current one (not fp32 rows of 32768: 128 fp32 registers per thread)
                    persistent = block_n >= CPP_CONSTANTS["PERSISTENT_MIN_BLOCK_N"]
                    # SUPPORT_EXIT (steps on the vectors' maxima only) for 16-bit rows of 32768 (H200 bf16, 8192
                    # rows of 2 * randn, scripts/tune_wide_rows.py sparsemax_exit, JIT: 290.3 us against 294.0; at
                    # 16384 217 against 155 and at 4096 39.4 against 38.6: the fourth reduced value costs more there)
                    extra = {**iters, "PERSISTENT": persistent,
                             "PREFETCH": persistent and (dt != "fp32" or block_n <= 16384),
                             "VEC": _align(dt) if block_m == 1 else 0,
                             "SUPPORT_EXIT": block_n == 32768 and dt != "fp32"}
                    # one row per program below: 4 warps to 8192 (H200 bf16 8192 x 8192: 72 us against 76 for 8)
                    warps = (16 if dt == "fp32" else 8) if persistent else (warps if dt == "fp32" else min(warps, 4))
                spec.variants.append(Variant(
                    key={"x_dtype": dt, "block_n": block_n}, signature=_sig(args, dt),
                    constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(dt), **extra},
                    num_warps=warps, aligned=True))
        for spec, args, extra in ((fwd_loop, _FWD_ARGS, iters), (bwd_loop, _BWD_ARGS, {})):
            for aligned in (False, True):
                if spec is fwd_loop:
                    extra = {**iters, "VEC": _align(dt) if aligned else 0}
                spec.variants.append(Variant(
                    key={"x_dtype": dt, "aligned": aligned}, signature=_sig(args, dt),
                    constexprs={"BLOCK_N": CPP_CONSTANTS["FWD_LOOP_BLOCK_N"] if spec is fwd_loop else loop_n,
                                "ALIGN": _align(dt) if aligned else 1, **extra},
                    num_warps=8, aligned=aligned))
    return [fwd, fwd_loop, bwd, bwd_loop]


KERNELS = _specs()
