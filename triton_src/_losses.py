"""Pieces shared by the distillation losses (kl_div, jsd, tvd, fused_linear_jsd).

Each loss kernel writes one fp32 partial sum per row; loss_sum (run by <op>_sum_kernel) adds them up in one
program (a fixed order: the result is deterministic), counts the rows whose label is not ignore_index on the
device (no host synchronization) and writes

    out[0] = sum(partials) * mult,    mult = scale / (max(count, 1) if use_count else 1)
    mult_out[0] = mult                (fp32; the backward kernels scale their gradient by it)

so that "mean over non-ignored tokens" never needs the count on the host.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice

SUM_BLOCK = 1024


@triton.jit
def loss_sum(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale, BLOCK: tl.constexpr):
    # The body of each op's <op>_sum_kernel (kernel names must be unique across ops: the cubin tables and
    # build_info are keyed by kernel name).
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int64)
    for start in range(0, n_rows, BLOCK):
        r = start + offs
        m = r < n_rows
        acc += tl.load(PARTIAL + r, mask=m, other=0.0)
        # LABELS may be a null pointer when has_labels is 0: the mask keeps it from being read.
        lab = tl.load(LABELS + r, mask=m & (has_labels != 0), other=0)
        keep = m & ((has_labels == 0) | (lab != ignore_index))
        cnt += keep.to(tl.int64)
    total = tl.sum(acc, axis=0)
    count = tl.sum(cnt, axis=0)
    denom = tl.where(use_count != 0, tl.maximum(count, 1).to(tl.float32), 1.0)
    mult = scale / denom
    tl.store(OUT, (total * mult).to(OUT.dtype.element_ty))
    tl.store(MULT, mult)


@triton.jit
def inv_count_kernel(LABELS, MULT, n_rows, ignore_index, has_labels, BLOCK: tl.constexpr):
    # MULT[0] = 1 / max(non-ignored rows, 1), before the chunks of fused_linear_jsd scale their gradients by it.
    offs = tl.arange(0, BLOCK)
    cnt = tl.zeros([BLOCK], dtype=tl.int64)
    for start in range(0, n_rows, BLOCK):
        r = start + offs
        m = r < n_rows
        lab = tl.load(LABELS + r, mask=m & (has_labels != 0), other=0)
        cnt += (m & ((has_labels == 0) | (lab != ignore_index))).to(tl.int64)
    tl.store(MULT, 1.0 / tl.maximum(tl.sum(cnt, axis=0), 1).to(tl.float32))


@triton.jit
def row_live(LABELS, row, ignore_index, has_labels):
    """0 when this row's label is ignore_index, else 1 (LABELS is not read when has_labels is 0)."""
    lab = tl.load(LABELS + row, mask=has_labels != 0, other=0)
    return 1 - ((has_labels != 0) & (lab == ignore_index)).to(tl.int32)


LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def exp_(v, ACCURATE: tl.constexpr):
    # libdevice for fp32 inputs (within 2 ulps, like eager); for 16-bit inputs, whose own rounding is far
    # coarser, the bare ex2.approx.ftz (2 ulps of fp32; overflows to inf and flushes below 2^-126 to 0 as
    # exp does in 16 bits), without tl.exp's denormal fix-ups.
    if ACCURATE:
        return libdevice.exp(v)
    else:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [v * LOG2E], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def log_(v, ACCURATE: tl.constexpr):
    # 16-bit inputs: lg2.approx.ftz (absolute error ~2^-22 near 1, relative elsewhere) times ln 2. tl.log
    # compiled to a ~20-instruction polynomial, which made kl_div's bf16 forward issue-bound (74 % of the
    # copy rate on an H200: a 16-bit two-input read leaves ~31 instructions per element at HBM rate).
    if ACCURATE:
        return libdevice.log(v)
    else:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=f,f", [v], dtype=tl.float32,
                                         is_pure=True, pack=1) * LN2


def loss_sum_signature(out_dtype):
    return {"PARTIAL": "*fp32", "LABELS": "*i64", "OUT": f"*{out_dtype}", "MULT": "*fp32", "n_rows": "i32",
            "ignore_index": "i64", "has_labels": "i32", "use_count": "i32", "scale": "fp32"}


def inv_count_signature():
    return {"LABELS": "*i64", "MULT": "*fp32", "n_rows": "i32", "ignore_index": "i64", "has_labels": "i32"}


def sig(names, types):
    """Signature from argument names: upper case are pointers (types[name] or the data dtype under "*"),
    stride* are i64, the rest i32 unless types names them."""
    out = {}
    for n in names:
        if n in types:
            out[n] = types[n]
        elif n.isupper():
            out[n] = f"*{types['*']}"
        elif n.startswith("stride"):
            out[n] = "i64"
        else:
            out[n] = "i32"
    return out


def align(dtype):
    return 16 // {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]
