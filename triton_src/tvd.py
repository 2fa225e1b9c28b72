"""Total variation distance kernels (Liger-Kernel's LigerTVDLoss) and the specializations built ahead of time.

p and q are probabilities, per row of a [rows, n_cols] view: loss = 0.5 * |p - q|, dloss/dp = 0.5 if p > q
else -0.5 (and dloss/dq = -dloss/dp). Rows whose shift label is ignore_index contribute 0 and get 0 gradient.
ELEMENTWISE (reduction "none") stores the fp32 loss per element; otherwise each row writes its fp32 sum to
PARTIAL and tvd_sum_kernel reduces them (sum; mean: / (count * V); batchmean: / count, with count
the non-ignored rows, taken on the device). The backward scales by G (per element, or G[0] * MULT[0]).
"""
import triton
import triton.language as tl

from build_tools.spec import KernelSpec, Variant
from triton_src._losses import SUM_BLOCK, align, loss_sum, loss_sum_signature, row_live, sig

CPP_CONSTANTS = {"BLOCK_N": 2048, "SUM_BLOCK": SUM_BLOCK}



@triton.jit
def tvd_sum_kernel(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale,
                   BLOCK: tl.constexpr):
    loss_sum(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale, BLOCK)

@triton.jit
def tvd_fwd_kernel(P, Q, LABELS, LOSS, PARTIAL, n_cols_v, stride_p_v, stride_q_v, ignore_index, has_labels,
                   BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, ELEMENTWISE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row, ignore_index, has_labels)
    p_row = P + row * (stride_p_v * ALIGN)
    q_row = Q + row * (stride_q_v * ALIGN)
    loss_row = LOSS + row * (n_cols_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_iter = n_cols * live  # an ignored row reads nothing (and writes zeros for "none")
    if ELEMENTWISE:
        n_iter = n_cols
    for start in range(0, n_iter, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        lm = cm & (live != 0)
        p = tl.load(p_row + c, mask=lm, other=0.0).to(tl.float32)
        q = tl.load(q_row + c, mask=lm, other=0.0).to(tl.float32)
        loss = 0.5 * tl.abs(p - q)
        if ELEMENTWISE:
            tl.store(loss_row + c, loss, mask=cm)
        else:
            acc += loss
    if not ELEMENTWISE:
        tl.store(PARTIAL + row, tl.sum(acc, axis=0))


@triton.jit
def tvd_bwd_kernel(G, MULT, P, Q, LABELS, DP, n_cols_v, stride_g_v, stride_p_v, stride_q_v, ignore_index,
                   has_labels, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, ELEMENTWISE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row, ignore_index, has_labels)
    p_row = P + row * (stride_p_v * ALIGN)
    q_row = Q + row * (stride_q_v * ALIGN)
    dp_row = DP + row * (n_cols_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    if not ELEMENTWISE:
        g_scalar = tl.load(G) * tl.load(MULT)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        lm = cm & (live != 0)
        p = tl.load(p_row + c, mask=lm, other=0.0).to(tl.float32)
        q = tl.load(q_row + c, mask=lm, other=0.0).to(tl.float32)
        if ELEMENTWISE:
            g = tl.load(G + row * (stride_g_v * ALIGN) + c, mask=lm, other=0.0)
        else:
            g = g_scalar
        dp = tl.where(p > q, 0.5, -0.5) * g
        tl.store(dp_row + c, tl.where(lm, dp, 0.0).to(DP.dtype.element_ty), mask=cm)


_FWD_ARGS = ("P", "Q", "LABELS", "LOSS", "PARTIAL", "n_cols_v", "stride_p_v", "stride_q_v", "ignore_index",
             "has_labels")
_BWD_ARGS = ("G", "MULT", "P", "Q", "LABELS", "DP", "n_cols_v", "stride_g_v", "stride_p_v", "stride_q_v",
             "ignore_index", "has_labels")
_TYPES = {"LABELS": "*i64", "LOSS": "*fp32", "PARTIAL": "*fp32", "G": "*fp32", "MULT": "*fp32",
          "ignore_index": "i64"}


def _specs():
    fwd, bwd, total = KernelSpec(tvd_fwd_kernel), KernelSpec(tvd_bwd_kernel), KernelSpec(tvd_sum_kernel)
    total.variants.append(Variant(key={"out_dtype": "fp32"}, signature=loss_sum_signature("fp32"),
                                  constexprs={"BLOCK": SUM_BLOCK}, num_warps=4))
    for dt in ("fp32", "bf16", "fp16"):
        for aligned in (False, True):
            for elementwise in (False, True):
                key = {"x_dtype": dt, "aligned": aligned, "elementwise": elementwise}
                consts = {"BLOCK_N": CPP_CONSTANTS["BLOCK_N"], "ALIGN": align(dt) if aligned else 1,
                          "ELEMENTWISE": elementwise}
                for spec, args in ((fwd, _FWD_ARGS), (bwd, _BWD_ARGS)):
                    spec.variants.append(Variant(key=key, signature=sig(args, {"*": dt, **_TYPES}),
                                                 constexprs=consts, num_warps=8, aligned=aligned))
    return [fwd, bwd, total]


KERNELS = _specs()
