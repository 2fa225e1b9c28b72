"""Generalized Jensen-Shannon divergence kernels (Liger-Kernel's JSD) and fused linear JSD's row kernel.

x = log Q (student, input) and y = log P (teacher, target), per row of a [rows, n_cols] view:
    BETA_MODE 0 (beta == 0, forward KL):  loss = P (y - x)                          dloss/dx = -P
    BETA_MODE 1 (beta == 1, reverse KL):  loss = Q (x - y)                          dloss/dx = Q (x - y) + Q
    BETA_MODE 2 (otherwise):   M = beta P + (1 - beta) Q
                               loss = beta P y + (1 - beta) Q x - M log M       dloss/dx = (1 - beta) Q (x - log M)
The loss is the mean over rows whose shift label is not ignore_index: each row writes its fp32 sum to
PARTIAL (0 when ignored) and jsd_sum_kernel divides by the count it takes on the device. The
backward recomputes dloss/dx from x and y (no [rows, V] buffer is kept between forward and backward) and
scales it by g * MULT[0] (the incoming gradient and 1/count). One program per row, looped over BLOCK_N columns.

fused_linear_jsd_kernel takes a chunk of student and teacher logits (s, t), forms x = log_softmax(s / T),
y = log_softmax(t / T), writes each row's loss times MULT[0] to PARTIAL and, with COMPUTE_GRAD, overwrites s
with dloss/ds = (g - softmax(s / T) * sum(g)) / T * MULT[0], where g = dloss/dx above.
"""
import triton
import triton.language as tl

from build_tools.spec import KernelSpec, Variant
from triton_src._losses import (SUM_BLOCK, align, exp_, inv_count_kernel, inv_count_signature, log_,
                                loss_sum, loss_sum_signature, row_live, sig)

CPP_CONSTANTS = {"BLOCK_N": 2048, "FUSED_BLOCK_N": 2048, "SUM_BLOCK": SUM_BLOCK}



@triton.jit
def jsd_sum_kernel(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale,
                   BLOCK: tl.constexpr):
    loss_sum(PARTIAL, LABELS, OUT, MULT, n_rows, ignore_index, has_labels, use_count, scale, BLOCK)

@triton.jit
def _jsd_terms(x, y, beta, BETA_MODE: tl.constexpr, ACCURATE: tl.constexpr):
    if BETA_MODE == 0:
        p = exp_(y, ACCURATE)
        loss = p * (y - x)
        grad = -p
    elif BETA_MODE == 1:
        q = exp_(x, ACCURATE)
        loss = q * (x - y)
        grad = loss + q
    else:
        q = exp_(x, ACCURATE)
        p = exp_(y, ACCURATE)
        bp = beta * p
        bq = (1.0 - beta) * q
        m = bp + bq
        log_m = log_(m, ACCURATE)
        loss = bp * y + bq * x - m * log_m
        grad = bq * (x - log_m)
    return loss, grad


@triton.jit
def jsd_fwd_kernel(X, Y, LABELS, PARTIAL, n_cols_v, stride_x_v, stride_y_v, ignore_index, has_labels, beta,
                   BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, BETA_MODE: tl.constexpr, ACCURATE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row, ignore_index, has_labels)
    n_live = n_cols * live  # an ignored row reads nothing
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_live, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        x = tl.load(x_row + c, mask=cm, other=0.0).to(tl.float32)
        y = tl.load(y_row + c, mask=cm, other=0.0).to(tl.float32)
        loss, grad = _jsd_terms(x, y, beta, BETA_MODE, ACCURATE)
        acc += tl.where(cm, loss, 0.0)
    tl.store(PARTIAL + row, tl.sum(acc, axis=0))


@triton.jit
def jsd_bwd_kernel(G, MULT, X, Y, LABELS, DX, n_cols_v, stride_x_v, stride_y_v, ignore_index, has_labels, beta,
                   BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, BETA_MODE: tl.constexpr, ACCURATE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row, ignore_index, has_labels)
    scale = tl.load(G) * tl.load(MULT) * live.to(tl.float32)
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    dx_row = DX + row * (n_cols_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        lm = cm & (live != 0)
        x = tl.load(x_row + c, mask=lm, other=0.0).to(tl.float32)
        y = tl.load(y_row + c, mask=lm, other=0.0).to(tl.float32)
        loss, grad = _jsd_terms(x, y, beta, BETA_MODE, ACCURATE)
        tl.store(dx_row + c, tl.where(lm, grad * scale, 0.0).to(DX.dtype.element_ty), mask=cm)


@triton.jit
def fused_linear_jsd_kernel(S, T, LABELS, PARTIAL, MULT, row0, n_cols_v, stride_s_v, stride_t_v, ignore_index,
                            has_labels, beta, inv_temp, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                            BETA_MODE: tl.constexpr, COMPUTE_GRAD: tl.constexpr):
    # S, T: one chunk of logits; row0 is the chunk's first token (LABELS and PARTIAL are indexed by token, so
    # that their pointers stay 16-byte aligned). Always libdevice exp/log: the logits' dtype says nothing of
    # the loss's conditioning, and the matmuls dominate the time.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    live = row_live(LABELS, row0 + row, ignore_index, has_labels)
    n_live = n_cols * live
    mult = tl.load(MULT)
    s_row = S + row * (stride_s_v * ALIGN)
    t_row = T + row * (stride_t_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    # pass 1: online log-sum-exp of s / T and t / T per lane
    ms = tl.full([BLOCK_N], -float("inf"), tl.float32)
    ds = tl.zeros([BLOCK_N], dtype=tl.float32)
    mt = tl.full([BLOCK_N], -float("inf"), tl.float32)
    dt = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_live, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        s = tl.load(s_row + c, mask=cm, other=-float("inf")).to(tl.float32) * inv_temp
        t = tl.load(t_row + c, mask=cm, other=-float("inf")).to(tl.float32) * inv_temp
        ms_new = tl.maximum(ms, s)
        ds = tl.where(ms_new != -float("inf"), ds * exp_(ms - ms_new, True) + exp_(s - ms_new, True), 0.0)
        ms = ms_new
        mt_new = tl.maximum(mt, t)
        dt = tl.where(mt_new != -float("inf"), dt * exp_(mt - mt_new, True) + exp_(t - mt_new, True), 0.0)
        mt = mt_new
    ms_row = tl.max(ms, axis=0)
    mt_row = tl.max(mt, axis=0)
    lse_s = ms_row + log_(tl.sum(tl.where(ms != -float("inf"), ds * exp_(ms - ms_row, True), 0.0), axis=0), True)
    lse_t = mt_row + log_(tl.sum(tl.where(mt != -float("inf"), dt * exp_(mt - mt_row, True), 0.0), axis=0), True)
    # pass 2: the loss and sum(g)
    acc_l = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_live, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        x = tl.load(s_row + c, mask=cm, other=0.0).to(tl.float32) * inv_temp - lse_s
        y = tl.load(t_row + c, mask=cm, other=0.0).to(tl.float32) * inv_temp - lse_t
        loss, grad = _jsd_terms(x, y, beta, BETA_MODE, True)
        acc_l += tl.where(cm, loss, 0.0)
        acc_g += tl.where(cm, grad, 0.0)
    tl.store(PARTIAL + row0 + row, tl.sum(acc_l, axis=0) * mult)
    if COMPUTE_GRAD:
        sum_g = tl.sum(acc_g, axis=0)
        scale = mult * inv_temp * live.to(tl.float32)
        # pass 3: dloss/ds in place (zeros for an ignored row: s is overwritten either way)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            cm = c < n_cols
            lm = cm & (live != 0)
            x = tl.load(s_row + c, mask=lm, other=0.0).to(tl.float32) * inv_temp - lse_s
            y = tl.load(t_row + c, mask=lm, other=0.0).to(tl.float32) * inv_temp - lse_t
            loss, grad = _jsd_terms(x, y, beta, BETA_MODE, True)
            ds_ = (grad - exp_(x, True) * sum_g) * scale
            tl.store(s_row + c, tl.where(lm, ds_, 0.0).to(S.dtype.element_ty), mask=cm)


_FWD_ARGS = ("X", "Y", "LABELS", "PARTIAL", "n_cols_v", "stride_x_v", "stride_y_v", "ignore_index", "has_labels",
             "beta")
_BWD_ARGS = ("G", "MULT", "X", "Y", "LABELS", "DX", "n_cols_v", "stride_x_v", "stride_y_v", "ignore_index",
             "has_labels", "beta")
_FUSED_ARGS = ("S", "T", "LABELS", "PARTIAL", "MULT", "row0", "n_cols_v", "stride_s_v", "stride_t_v", "ignore_index",
               "has_labels", "beta", "inv_temp")
_TYPES = {"LABELS": "*i64", "PARTIAL": "*fp32", "G": "*fp32", "MULT": "*fp32", "ignore_index": "i64",
          "beta": "fp32", "inv_temp": "fp32"}


def _specs():
    fwd, bwd, fused = KernelSpec(jsd_fwd_kernel), KernelSpec(jsd_bwd_kernel), KernelSpec(fused_linear_jsd_kernel)
    total, count = KernelSpec(jsd_sum_kernel), KernelSpec(inv_count_kernel)
    total.variants.append(Variant(key={"out_dtype": "fp32"}, signature=loss_sum_signature("fp32"),
                                  constexprs={"BLOCK": SUM_BLOCK}, num_warps=4))
    count.variants.append(Variant(key={"block": SUM_BLOCK}, signature=inv_count_signature(),
                                  constexprs={"BLOCK": SUM_BLOCK}, num_warps=4))
    for dt in ("fp32", "bf16", "fp16"):
        types = {"*": dt, **_TYPES}
        for aligned in (False, True):
            a = align(dt) if aligned else 1
            for mode in (0, 1, 2):
                key = {"x_dtype": dt, "aligned": aligned, "beta_mode": mode}
                consts = {"BLOCK_N": CPP_CONSTANTS["BLOCK_N"], "ALIGN": a, "BETA_MODE": mode, "ACCURATE": dt == "fp32"}
                fwd.variants.append(Variant(key=key, signature=sig(_FWD_ARGS, types), constexprs=consts,
                                            num_warps=8, aligned=aligned))
                bwd.variants.append(Variant(key=key, signature=sig(_BWD_ARGS, types), constexprs=consts,
                                            num_warps=8, aligned=aligned))
                for grad in (False, True):
                    fused.variants.append(Variant(
                        key={**key, "compute_grad": grad}, signature=sig(_FUSED_ARGS, types),
                        constexprs={"BLOCK_N": CPP_CONSTANTS["FUSED_BLOCK_N"], "ALIGN": a, "BETA_MODE": mode,
                                    "COMPUTE_GRAD": grad}, num_warps=8, aligned=aligned))
    return [fwd, bwd, fused, total, count]


KERNELS = _specs()
