"""KL divergence kernels (F.kl_div semantics) and the specializations built ahead of time.

input x holds log-probabilities, target y probabilities (log-probabilities with LOG_TARGET):
    loss = y * (log(max(y, eps)) - x)        (LOG_TARGET: exp(y) * (y - x))
    dloss/dx = -y                             (LOG_TARGET: -exp(y))
One program per row of a [rows, n_cols] view, looped over BLOCK_N columns (vocabularies up to 256000 and
beyond), fp32 math. ELEMENTWISE (reduction "none") stores the loss per element in x's dtype; otherwise each
row writes its fp32 sum to PARTIAL and kl_div_sum_kernel reduces them. Aligned variants are promised
16-byte aligned pointers and n_cols, strides that are multiples of ALIGN (passed divided by ALIGN).
"""
import triton
import triton.language as tl

from build_tools.spec import KernelSpec, Variant
from triton_src._losses import SUM_BLOCK, align, exp_, log_, loss_sum, loss_sum_signature, sig

CPP_CONSTANTS = {"BLOCK_N": 2048, "SUM_BLOCK": SUM_BLOCK}



@triton.jit
def kl_div_sum_kernel(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale,
                      BLOCK: tl.constexpr):
    loss_sum(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale, BLOCK)

@triton.jit
def kl_div_fwd_kernel(X, Y, LOSS, PARTIAL, n_cols_v, stride_x_v, stride_y_v, eps, BLOCK_N: tl.constexpr,
                      ALIGN: tl.constexpr, LOG_TARGET: tl.constexpr, ELEMENTWISE: tl.constexpr,
                      ACCURATE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    if not ACCURATE:
        # the 16-bit variants' log flushes a denormal eps to 0: log(0) = -inf, and y = 0 would give 0 * -inf
        eps = tl.maximum(eps, 1.1754943508222875e-38)
    row = tl.program_id(0).to(tl.int64)  # int64: row offsets beyond 2^31 elements
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    loss_row = LOSS + row * (n_cols_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        x = tl.load(x_row + c, mask=cm, other=0.0).to(tl.float32)
        y = tl.load(y_row + c, mask=cm, other=0.0).to(tl.float32)
        if LOG_TARGET:
            loss = exp_(y, ACCURATE) * (y - x)
        else:
            loss = y * (log_(tl.maximum(y, eps), ACCURATE) - x)
        if ELEMENTWISE:
            tl.store(loss_row + c, loss.to(LOSS.dtype.element_ty), mask=cm)
        else:
            acc += tl.where(cm, loss, 0.0)
    if not ELEMENTWISE:
        tl.store(PARTIAL + row, tl.sum(acc, axis=0))


@triton.jit
def kl_div_bwd_kernel(G, Y, DX, n_cols_v, stride_g_v, stride_y_v, scale, BLOCK_N: tl.constexpr,
                      ALIGN: tl.constexpr, LOG_TARGET: tl.constexpr, ELEMENTWISE: tl.constexpr,
                      ACCURATE: tl.constexpr):
    # dx = -g * scale * y (LOG_TARGET: -g * scale * exp(y)); g is the incoming gradient per element
    # (ELEMENTWISE) or the fp32 scalar G[0] for the reductions, scale 1, 1/numel or 1/batch.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    y_row = Y + row * (stride_y_v * ALIGN)
    dx_row = DX + row * (n_cols_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    if not ELEMENTWISE:
        g_scalar = tl.load(G).to(tl.float32) * scale
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        y = tl.load(y_row + c, mask=cm, other=0.0).to(tl.float32)
        if LOG_TARGET:
            y = exp_(y, ACCURATE)
        if ELEMENTWISE:
            g = tl.load(G + row * (stride_g_v * ALIGN) + c, mask=cm, other=0.0).to(tl.float32) * scale
        else:
            g = g_scalar
        tl.store(dx_row + c, (-g * y).to(DX.dtype.element_ty), mask=cm)



_FWD_ARGS = ("X", "Y", "LOSS", "PARTIAL", "n_cols_v", "stride_x_v", "stride_y_v", "eps")
_BWD_ARGS = ("G", "Y", "DX", "n_cols_v", "stride_g_v", "stride_y_v", "scale")


def _specs():
    fwd, bwd, total = KernelSpec(kl_div_fwd_kernel), KernelSpec(kl_div_bwd_kernel), KernelSpec(kl_div_sum_kernel)
    for dt in ("fp32", "bf16", "fp16"):
        total.variants.append(Variant(key={"out_dtype": dt}, signature=loss_sum_signature(dt),
                                      constexprs={"BLOCK": SUM_BLOCK}, num_warps=4))
        for aligned in (False, True):
            for log_target in (False, True):
                for elementwise in (False, True):
                    consts = {"BLOCK_N": CPP_CONSTANTS["BLOCK_N"], "ALIGN": align(dt) if aligned else 1,
                              "LOG_TARGET": log_target, "ELEMENTWISE": elementwise, "ACCURATE": dt == "fp32"}
                    key = {"x_dtype": dt, "aligned": aligned, "log_target": log_target, "elementwise": elementwise}
                    fwd.variants.append(Variant(
                        key=key, signature=sig(_FWD_ARGS, {"*": dt, "PARTIAL": "*fp32", "eps": "fp32"}),
                        constexprs=consts, num_warps=8, aligned=aligned))
                    bwd.variants.append(Variant(
                        key=key, signature=sig(_BWD_ARGS, {"*": dt, "G": f"*{dt}" if elementwise else "*fp32",
                                                            "scale": "fp32"}),
                        constexprs=consts, num_warps=8, aligned=aligned))
    return [fwd, bwd, total]


KERNELS = _specs()
