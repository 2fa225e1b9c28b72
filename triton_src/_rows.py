"""@triton.jit helpers shared by the row kernels (softmax, layer_norm, sparsemax) for rows held in registers.

Persistent row kernels stride over the rows and load the next row before reducing the current one: load_row
reads a row (or nothing, past the last row) for that early load. bf16_to_fp32 widens bf16 again from the 16-bit
registers a row was loaded into, so that a kernel can let the row's fp32 copy die at its reduction and still
write from it afterwards (registers for the next row). prefetch_l2 asks L2 for memory that a later load will read
(group_norm's next groups, cross_entropy's next chunks) without holding it in registers. pdl_start begins a
kernel launched as a programmatic dependent.
"""
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def pdl_start(PDL: tl.constexpr, LAST_PROGRAMS: tl.constexpr = 0):
    """The first thing a kernel built with Variant.launch_pdl does: wait for the kernel before it in the stream (it
    may have started while that one ran; every read and write of this kernel comes after the wait), then let the
    kernel after this one be launched early in turn (its own wait orders it after this one). LAST_PROGRAMS > 0: only
    the grid's last LAST_PROGRAMS programs do, for large grids of short programs, where launch_dependents in every
    program slowed the kernel itself (the flat kernels: _activations.PDL_LAST_PROGRAMS)."""
    if PDL:
        gdc_wait()
        if LAST_PROGRAMS == 0:
            gdc_launch_dependents()
        else:
            if tl.program_id(0) >= tl.num_programs(0) - LAST_PROGRAMS:
                gdc_launch_dependents()


@triton.jit
def load_row(X, row, n_rows, stride, cols, col_mask, other):
    """Row `row` of X (row stride `stride`) at `cols`, `other` past the row's end and for rows >= n_rows."""
    return tl.load(X + row.to(tl.int64) * stride + cols, mask=col_mask & (row < n_rows), other=other)


@triton.jit
def bf16_to_fp32(v):
    # Exact (bf16 is fp32's upper half), and common-subexpression elimination does not merge it with an earlier
    # v.to(tl.float32), which would keep that fp32 copy alive instead.
    return (v.to(tl.int16, bitcast=True).to(tl.int32) << 16).to(tl.float32, bitcast=True)


PREFETCH_L2 = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2::evict_last [$1]; "
                           "mov.u32 $0, 0; }")


@triton.jit
def prefetch_l2(base, nbytes, valid, STEP: tl.constexpr, N: tl.constexpr):
    """Asks L2 for nbytes from base (an int8 pointer) when valid: N addresses STEP bytes apart, kept with evict_last;
    no registers hold the data. One address per thread and STEP 32 (a sector each) where a chunk has fewer 128-byte
    lines than the program has threads: cross-entropy's 32 KB chunks at 32 warps ran 9 % slower with 128-byte steps
    (four threads per address) than without a prefetch."""
    ls = tl.arange(0, N)
    m = (ls * STEP < nbytes) & valid
    tl.inline_asm_elementwise(PREFETCH_L2, "=r,l,r", [base + ls * STEP, m.to(tl.int32)], dtype=tl.int32,
                              is_pure=False, pack=1)
