"""Softmax kernels over the last dimension and the specializations built ahead of time.

y = exp(x - max(x)) / sum(exp(x - max(x))) in fp32, stored in x's dtype (torch.softmax(x, -1)).
Backward from the saved output: dx = y * (dy - sum(dy * y)).

Rows are a [rows, n_cols] view with one row stride and a contiguous last dimension. Single-block kernels
hold BLOCK_M rows of BLOCK_N >= n_cols elements in registers (one read, one write); rows longer than the
largest tile use the looped kernels: an online softmax (running max and rescaled sum, one read) followed by
a second read that writes y. Aligned variants are promised 16-byte aligned pointers and n_cols, strides that
are multiples of ALIGN elements (passed divided by ALIGN so that Triton proves it and emits 16-byte access).
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._rows import bf16_to_fp32, load_row, pdl_start

# Single blocks up to 32768 both ways (H200, 8192x32768 bf16: the backward 0.385 ms in one block against 0.632
# looped; Liger-Kernel's single block 0.373).
CPP_CONSTANTS = {
    "FWD_MAX_BLOCK_N": 32768,
    "BWD_MAX_BLOCK_N": 32768,
    "MIN_BLOCK_N": 128,
    "LOOP_BLOCK_N": 4096,
    "PERSISTENT_BLOCK_N": 32768,  # 16-bit forward variants at this block stride over the rows (PERSISTENT)
    "REWIDEN_MIN_BLOCK_N": 16384,  # bf16 backward variants from this block re-widen from 16-bit registers
}


@triton.jit
def _exp(v, ACCURATE: tl.constexpr):
    # tl.exp is ex2.approx of v * log2(e): the product's rounding alone costs ~10 ulps at |v| ~ 30, far above
    # torch.softmax's fp32 error. libdevice's expf is within 2 ulps; 16-bit outputs round that away anyway.
    if ACCURATE:
        return libdevice.exp(v)
    else:
        return tl.exp(v)


@triton.jit
def _softmax_row(x, Y, row, cols, cm, stride_y, ACCURATE: tl.constexpr):
    xf = x.to(tl.float32)
    m = tl.max(xf, axis=0)
    e = _exp(xf - m, ACCURATE)
    inv = tl.math.div_rn(1.0, tl.sum(e, axis=0))
    tl.store(Y + row * stride_y + cols, (e * inv).to(Y.dtype.element_ty), mask=cm)


@triton.jit
def softmax_fwd_kernel(X, Y, n_rows, n_cols_v, stride_x_v, stride_y_v, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, ACCURATE: tl.constexpr,
                       PERSISTENT: tl.constexpr = False, PDL: tl.constexpr = False):
    pdl_start(PDL)
    n_cols = n_cols_v * ALIGN
    if PERSISTENT:
        # One row per step, programs striding over the rows (grid: the resident programs), each row's load
        # issued before the previous row is reduced: a 32768-element row is the only program on its SM, and
        # without the early load the SM idles through every row's reductions. H200, 8192 x 32768 bf16
        # (scripts/tune_wide_rows.py): 277.5 us (93 % of copy) against 332.5 for one program per row.
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        cols = tl.arange(0, BLOCK_N)
        cm = cols < n_cols
        stride_x = stride_x_v * ALIGN
        nxt = load_row(X, pid, n_rows, stride_x, cols, cm, -float("inf"))
        for r in range(pid, n_rows, nprog):
            row = tl.cast(r, tl.int64)
            x = nxt
            nxt = load_row(X, row + nprog, n_rows, stride_x, cols, cm, -float("inf"))
            _softmax_row(x, Y, row, cols, cm, stride_y_v * ALIGN, ACCURATE)
        return
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: no wrap at 2^31 rows
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = tl.load(X + rows[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=mask, other=-float("inf"))
    xf = x.to(tl.float32)
    m = tl.max(xf, axis=1)
    e = _exp(xf - m[:, None], ACCURATE)
    inv = tl.math.div_rn(tl.full([BLOCK_M], 1.0, tl.float32), tl.sum(e, axis=1))  # one rounding per row
    y = e * inv[:, None]
    tl.store(Y + rows[:, None] * (stride_y_v * ALIGN) + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def softmax_fwd_looped_kernel(X, Y, n_rows, n_cols_v, stride_x_v, stride_y_v, BLOCK_N: tl.constexpr,
                              ALIGN: tl.constexpr, ACCURATE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    # Online softmax per lane: m is the lane's running max, d its sum of exp(x - m). A lane that has seen
    # only -inf keeps m = -inf and d = 0 (exp(-inf - -inf) would be NaN).
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    d = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        xf = tl.load(x_row + c, mask=c < n_cols, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, xf)
        finite = m_new != -float("inf")
        d = tl.where(finite, d * _exp(m - m_new, ACCURATE) + _exp(xf - m_new, ACCURATE), 0.0)
        m = m_new
    m_row = tl.max(m, axis=0)
    d_row = tl.sum(tl.where(m != -float("inf"), d * _exp(m - m_row, ACCURATE), 0.0), axis=0)
    inv = tl.math.div_rn(1.0, d_row)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        xf = tl.load(x_row + c, mask=cm, other=-float("inf")).to(tl.float32)
        tl.store(y_row + c, (_exp(xf - m_row, ACCURATE) * inv).to(Y.dtype.element_ty), mask=cm)


@triton.jit
def softmax_bwd_kernel(DY, Y, DX, n_rows, n_cols_v, stride_dy_v, stride_y_v, stride_dx_v, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, REWIDEN: tl.constexpr = False,
                       PDL: tl.constexpr = False):
    pdl_start(PDL)
    n_cols = n_cols_v * ALIGN
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: no wrap at 2^31 rows
    cols = tl.arange(0, BLOCK_N)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    rows2d = rows[:, None]
    dy_raw = tl.load(DY + rows2d * (stride_dy_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
    y_raw = tl.load(Y + rows2d * (stride_y_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
    dot = tl.sum(dy_raw.to(tl.float32) * y_raw.to(tl.float32), axis=1)
    if REWIDEN:
        # bf16 -> fp32 again from the 16-bit registers, by a shift (exact; common-subexpression elimination does
        # not merge it with the conversion above), so the fp32 copies die at the sum: H200, 8192 rows bf16
        # (scripts/tune_wide_rows.py): 191.5 us against 195.3 at 16384, 374.8 against 379.8 at 32768.
        dx = bf16_to_fp32(y_raw) * (bf16_to_fp32(dy_raw) - dot[:, None])
    else:
        dx = y_raw.to(tl.float32) * (dy_raw.to(tl.float32) - dot[:, None])
    tl.store(DX + rows2d * (stride_dx_v * ALIGN) + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def softmax_bwd_looped_kernel(DY, Y, DX, n_rows, n_cols_v, stride_dy_v, stride_y_v, stride_dx_v,
                              BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    dy_row = DY + row * (stride_dy_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    dx_row = DX + row * (stride_dx_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        dy = tl.load(dy_row + c, mask=cm, other=0.0).to(tl.float32)
        y = tl.load(y_row + c, mask=cm, other=0.0).to(tl.float32)
        acc += dy * y
    dot = tl.sum(acc, axis=0)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        dy = tl.load(dy_row + c, mask=cm, other=0.0).to(tl.float32)
        y = tl.load(y_row + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(dx_row + c, (y * (dy - dot)).to(DX.dtype.element_ty), mask=cm)


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
    # Rows shorter than 1024 are batched so that a program moves at least 1024 elements (as rms_norm).
    return max(1, 1024 // block_n)


def _warps(tile_elems):
    # 4 warps up to 4096 elements per program, then one warp per 1024 elements (exp and two reductions per
    # element: like rms_norm's forward, whose table peaks at 16-32 warps for the largest tiles).
    return min(32, max(4, tile_elems // 1024))


# Forward tiles measured otherwise (H200, 8192 rows bf16, scripts/tune_wide_rows.py softmax_mid): 1024 x 2 warps
# 13.2 us against 14.3 at 4 warps; 8192 x 4 warps 69.6 us against 70.4 at 8.
_FWD_WARPS = {1024: 2, 8192: 4}


def _sig(names, dtype):
    return {n: (f"*{dtype}" if n.isupper() else ("i64" if n.startswith("stride") else "i32")) for n in names}


_FWD_ARGS = ("X", "Y", "n_rows", "n_cols_v", "stride_x_v", "stride_y_v")
_BWD_ARGS = ("DY", "Y", "DX", "n_rows", "n_cols_v", "stride_dy_v", "stride_y_v", "stride_dx_v")


def _specs():
    fwd = KernelSpec(softmax_fwd_kernel)
    fwd_loop = KernelSpec(softmax_fwd_looped_kernel)
    bwd = KernelSpec(softmax_bwd_kernel)
    bwd_loop = KernelSpec(softmax_bwd_looped_kernel)
    loop_n = CPP_CONSTANTS["LOOP_BLOCK_N"]
    for dt in ("fp32", "bf16", "fp16"):
        accurate = {"ACCURATE": dt == "fp32"}
        for spec, args, max_block, extra in ((fwd, _FWD_ARGS, CPP_CONSTANTS["FWD_MAX_BLOCK_N"], accurate),
                                             (bwd, _BWD_ARGS, CPP_CONSTANTS["BWD_MAX_BLOCK_N"], {})):
            for block_n in _blocks(max_block):
                block_m = _rows_per_program(block_n)
                warps = _warps(block_m * block_n)
                if spec is fwd:
                    # 16-bit rows of 32768: persistent with the next row loaded early, 16 warps (64 fp32 values and
                    # the next row's 64 16-bit ones per thread); fp32 rows would spill with the next row held.
                    persistent = dt != "fp32" and block_n == CPP_CONSTANTS["PERSISTENT_BLOCK_N"]
                    extra = {**accurate, "PERSISTENT": persistent}
                    warps = 16 if persistent else _FWD_WARPS.get(block_n, warps) if block_m == 1 else warps
                else:
                    extra = {"REWIDEN": dt == "bf16" and block_n >= CPP_CONSTANTS["REWIDEN_MIN_BLOCK_N"]}
                # PDL: launched as programmatic dependents (pdl_start), so that the backward's programs are launched
                # while the forward's last ones run. H200, 8192 rows bf16, fwd+bwd (scripts/pdl_chain_probe.py, JIT):
                # 1024 wide 24.8 us against 25.0-26.2; 4096 86.8 against 89.3; 8192 163.7-165.0 against 166.3.
                spec.variants.append(Variant(
                    key={"x_dtype": dt, "block_n": block_n}, signature=_sig(args, dt),
                    constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(dt), **extra, "PDL": True},
                    num_warps=warps, aligned=True, launch_pdl=True))
        for spec, args, extra in ((fwd_loop, _FWD_ARGS, accurate), (bwd_loop, _BWD_ARGS, {})):
            for aligned in (False, True):
                spec.variants.append(Variant(
                    key={"x_dtype": dt, "aligned": aligned}, signature=_sig(args, dt),
                    constexprs={"BLOCK_N": loop_n, "ALIGN": _align(dt) if aligned else 1, **extra},
                    num_warps=8, aligned=aligned))
    return [fwd, fwd_loop, bwd, bwd_loop]


KERNELS = _specs()
