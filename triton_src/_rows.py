"""@triton.jit helpers shared by the row kernels (softmax, layer_norm, sparsemax) for rows held in registers.

Persistent row kernels stride over the rows and load the next row before reducing the current one: load_row
reads a row (or nothing, past the last row) for that early load. bf16_to_fp32 widens bf16 again from the 16-bit
registers a row was loaded into, so that a kernel can let the row's fp32 copy die at its reduction and still
write from it afterwards (registers for the next row).
"""
import triton
import triton.language as tl


@triton.jit
def load_row(X, row, n_rows, stride, cols, col_mask, other):
    """Row `row` of X (row stride `stride`) at `cols`, `other` past the row's end and for rows >= n_rows."""
    return tl.load(X + row.to(tl.int64) * stride + cols, mask=col_mask & (row < n_rows), other=other)


@triton.jit
def bf16_to_fp32(v):
    # Exact (bf16 is fp32's upper half), and common-subexpression elimination does not merge it with an earlier
    # v.to(tl.float32), which would keep that fp32 copy alive instead.
    return (v.to(tl.int16, bitcast=True).to(tl.int32) << 16).to(tl.float32, bitcast=True)
