"""Total variation distance kernels (Liger-Kernel's LigerTVDLoss) and the specializations built ahead of time.

p and q are probabilities, per row of a [rows, n_cols] view: loss = 0.5 * |p - q|, dloss/dp = 0.5 if p > q
else -0.5 (and dloss/dq = -dloss/dp). Rows whose shift label is ignore_index contribute 0 and get 0 gradient.
ELEMENTWISE (reduction "none") stores the fp32 loss per element; otherwise each row writes its fp32 sum to
PARTIAL and tvd_sum_kernel reduces them (sum; mean: / (count * V); batchmean: / count, with count
the non-ignored rows, taken on the device). The backward scales by G (per element, or G[0] * MULT[0]).

Training with a reduced loss (tvd_fwd_grad_kernel): the forward also writes the gradient for grad_output 1
(1 / count from jsd's inv_count_kernel, run first), so the pass reads p and q once for both; the backward
(tvd_scale_kernel) reads grad_output on the device and returns at once when it is exactly 1, else scales the
gradient in place. Liger-Kernel's TVD does the same (with the count taken on the host).
"""
import triton
import triton.language as tl

from build_tools.spec import KernelSpec, Variant
from triton_src._losses import SUM_BLOCK, align, loss_sum, loss_sum_signature, row_live, sig

CPP_CONSTANTS = {"BLOCK_N": 2048, "SUM_BLOCK": SUM_BLOCK, "SCALE_BLOCK": 4096}



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


@triton.jit
def tvd_fwd_grad_kernel(P, Q, LABELS, PARTIAL, DP, INV_COUNT, n_cols_v, stride_p_v, stride_q_v, ignore_index,
                        has_labels, scale, use_count, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # tvd_fwd_kernel's row sums, and DP = 0.5 * sign(p - q) * scale (/ count when use_count: INV_COUNT[0]),
    # zero on ignored rows; DP is a new contiguous [rows, n_cols] buffer.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row, ignore_index, has_labels)
    p_row = P + row * (stride_p_v * ALIGN)
    q_row = Q + row * (stride_q_v * ALIGN)
    dp_row = DP + row * (n_cols_v * ALIGN)
    g = 0.5 * scale
    if use_count:
        g = g * tl.load(INV_COUNT)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        lm = cm & (live != 0)  # an ignored row reads nothing and gets +0
        p = tl.load(p_row + c, mask=lm, other=0.0).to(tl.float32)
        q = tl.load(q_row + c, mask=lm, other=0.0).to(tl.float32)
        acc += 0.5 * tl.abs(p - q)
        dp = tl.where(lm, tl.where(p > q, g, -g), 0.0)
        tl.store(dp_row + c, dp.to(DP.dtype.element_ty), mask=cm)
    tl.store(PARTIAL + row, tl.sum(acc, axis=0))


@triton.jit
def tvd_scale_kernel(DP, G, n, BLOCK: tl.constexpr):
    # DP *= G[0] in place unless G[0] is exactly 1 (read here: the host cannot know it without a sync). A
    # persistent grid, so that the common case (1) costs a few hundred programs that return at once.
    g = tl.load(G)
    if g != 1.0:
        offs = tl.arange(0, BLOCK)
        for start in range(tl.program_id(0).to(tl.int64) * BLOCK, n, tl.num_programs(0).to(tl.int64) * BLOCK):
            o = start + offs
            m = o < n
            dp = tl.load(DP + o, mask=m, other=0.0).to(tl.float32)
            tl.store(DP + o, (dp * g).to(DP.dtype.element_ty), mask=m)


_FWD_ARGS = ("P", "Q", "LABELS", "LOSS", "PARTIAL", "n_cols_v", "stride_p_v", "stride_q_v", "ignore_index",
             "has_labels")
_BWD_ARGS = ("G", "MULT", "P", "Q", "LABELS", "DP", "n_cols_v", "stride_g_v", "stride_p_v", "stride_q_v",
             "ignore_index", "has_labels")
_FWD_GRAD_ARGS = ("P", "Q", "LABELS", "PARTIAL", "DP", "INV_COUNT", "n_cols_v", "stride_p_v", "stride_q_v",
                  "ignore_index", "has_labels", "scale", "use_count")
_TYPES = {"LABELS": "*i64", "LOSS": "*fp32", "PARTIAL": "*fp32", "G": "*fp32", "MULT": "*fp32",
          "INV_COUNT": "*fp32", "ignore_index": "i64", "scale": "fp32", "use_count": "i1"}


def _specs():
    fwd, bwd, total = KernelSpec(tvd_fwd_kernel), KernelSpec(tvd_bwd_kernel), KernelSpec(tvd_sum_kernel)
    fwd_grad, scale = KernelSpec(tvd_fwd_grad_kernel), KernelSpec(tvd_scale_kernel)
    total.variants.append(Variant(key={"out_dtype": "fp32"}, signature=loss_sum_signature("fp32"),
                                  constexprs={"BLOCK": SUM_BLOCK}, num_warps=4))
    for dt in ("fp32", "bf16", "fp16"):
        # DP is a new buffer (16-byte aligned); G may be any 0-d view: the launcher copies a misaligned one
        scale.variants.append(Variant(key={"x_dtype": dt}, signature={"DP": f"*{dt}", "G": "*fp32", "n": "i64"},
                                      constexprs={"BLOCK": CPP_CONSTANTS["SCALE_BLOCK"]}, num_warps=8, aligned=True))
        for aligned in (False, True):
            fwd_grad.variants.append(Variant(
                key={"x_dtype": dt, "aligned": aligned}, signature=sig(_FWD_GRAD_ARGS, {"*": dt, **_TYPES}),
                constexprs={"BLOCK_N": CPP_CONSTANTS["BLOCK_N"], "ALIGN": align(dt) if aligned else 1}, num_warps=8,
                aligned=aligned))
        for aligned in (False, True):
            for elementwise in (False, True):
                key = {"x_dtype": dt, "aligned": aligned, "elementwise": elementwise}
                consts = {"BLOCK_N": CPP_CONSTANTS["BLOCK_N"], "ALIGN": align(dt) if aligned else 1,
                          "ELEMENTWISE": elementwise}
                for spec, args in ((fwd, _FWD_ARGS), (bwd, _BWD_ARGS)):
                    spec.variants.append(Variant(key=key, signature=sig(args, {"*": dt, **_TYPES}),
                                                 constexprs=consts, num_warps=8, aligned=aligned))
    return [fwd, bwd, total, fwd_grad, scale]


KERNELS = _specs()
