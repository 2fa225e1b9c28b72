"""Fused residual add + RMSNorm kernels and the specializations built ahead of time.

s = x + residual (rounded to x's dtype, as eager PyTorch adds), y = rms_norm(s) with liger::rms_norm's
semantics (offset, casting modes llama / gemma / none, fp32 rstd saved unrounded); both y and s are
outputs. The backward takes dy and the gradient of s (optional) and returns ds = rms_norm's dx + ds_out,
which is the gradient of x and of residual alike, plus per-program fp32 partial sums of dw (added up by
layer_norm's column_sum_kernel).

The forward takes the casting mode as a compile-time constant (rms_norm's helpers; variants per mode): as a
runtime value its branches kept extra tiles live and cost wide rows half their resident programs. The looped
forward and the backward kernels take it at run time (one set of variants serves all three modes): their
roundings are a few ALU operations per element and register pressure there has not been measured to matter.
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
# rms_norm's helpers take the casting mode as a constexpr (the forward's); this file's own take it at run time
from triton_src.rms_norm import _casting_modes, _load_rows, _round
from triton_src.rms_norm import _normed as _c_normed
from triton_src.rms_norm import _rstd_from_sumsq as _c_rstd_from_sumsq
from triton_src.rms_norm import _scale as _c_scale
from triton_src.rms_norm import _square as _c_square

CASTING_LLAMA = 0
CASTING_GEMMA = 1
CASTING_NONE = 2

CPP_CONSTANTS = {
    "CASTING_LLAMA": CASTING_LLAMA,
    "CASTING_GEMMA": CASTING_GEMMA,
    "CASTING_NONE": CASTING_NONE,
    # One row per program up to 32768 (the 1-D form with the casting mode constant; Liger-Kernel's forward, one
    # program per row at 16 / 32 warps, reaches 96-97 % of copy at 16384 / 32768 on the H200). The looped
    # forward (8192-element chunks, 8 warps) takes wider and unaligned rows.
    "FWD_MAX_BLOCK_N": 32768,
    "BWD_MAX_BLOCK_N": 8192,
    # aligned 16-bit rows up to this take fused_add_rms_norm_bwd_reload_kernel (one program per SM), longer,
    # unaligned or fp32 ones the split path (the reload kernel spills 652 bytes at 32768 x 32 warps, 396 for fp32
    # rows of 16384, ptxas sm_90a)
    "RELOAD_MAX_BLOCK_N": 16384,
    "MIN_BLOCK_N": 512,
    "LOOP_BLOCK_N": 8192,
    "ROWSTATS_BLOCK_N": 1024,
    "COLS_BLOCK_M": 2,
    "COLS_BLOCK_N": 1024,
}

# (x dtype, weight dtype) pairs built; the launcher upcasts any other weight dtype to fp32 (exact).
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]


@triton.jit
def _add(x, r, DT: tl.constexpr):
    """x + r in fp32, rounded to DT as eager PyTorch rounds the sum; returned as (stored, fp32) values."""
    s = (x.to(tl.float32) + r.to(tl.float32)).to(DT)
    return s, s.to(tl.float32)


@triton.jit
def _rstd(sumsq, sumsq_exact, n_cols, eps, casting, DT: tl.constexpr):
    """(rstd the forward multiplies by, rstd saved for the backward: unrounded in every mode)."""
    exact = 1.0 / tl.sqrt_rn(sumsq_exact / n_cols + eps)
    rstd = exact
    if casting == 2:
        ms = _round(sumsq / n_cols, DT)
        rstd = _round(1.0 / tl.sqrt_rn(_round(ms + eps, DT)), DT)
    return rstd, exact


@triton.jit
def _normed(sf, rstd, casting, DT: tl.constexpr):
    n = sf * rstd
    if casting != 1:
        n = _round(n, DT)
    return n


@triton.jit
def _scale(n, w, offset, has_weight, casting, WDT: tl.constexpr):
    y = n
    if has_weight:
        w_eff = offset + w
        if casting == 2:
            w_eff = _round(w_eff, WDT)
        y = n * w_eff
    return y


@triton.jit
def _fwd_row(X, R, W, Y, S, RSTD, row, n_cols, stride_x, stride_r, stride_y, eps, offset, has_weight, store_rstd,
             CASTING: tl.constexpr, BLOCK_N: tl.constexpr):
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    s, sf = _add(tl.load(X + row * stride_x + cols, mask=cm, other=0.0),
                 tl.load(R + row * stride_r + cols, mask=cm, other=0.0), DT)
    tl.store(S + row * stride_y + cols, s, mask=cm)
    rstd = _c_rstd_from_sumsq(tl.sum(_c_square(sf, CASTING, DT), axis=0), n_cols, eps, CASTING, DT)
    if CASTING == 2:
        rstd_saved = 1.0 / tl.sqrt_rn(tl.sum(sf * sf, axis=0) / n_cols + eps)
    else:
        rstd_saved = rstd
    w = tl.load(W + cols, mask=cm & has_weight, other=0.0).to(tl.float32)
    y = _c_scale(_c_normed(sf, rstd, CASTING, DT), w, offset, has_weight, CASTING, DT, WDT)
    tl.store(Y + row * stride_y + cols, y.to(DT), mask=cm)
    if store_rstd:
        tl.store(RSTD + row, rstd_saved)


@triton.jit
def fused_add_rms_norm_fwd_kernel(X, R, W, Y, S, RSTD, n_rows, n_cols_v, stride_x_v, stride_r_v, stride_y_v, eps,
                                  offset, has_weight, store_rstd, CASTING: tl.constexpr, BLOCK_M: tl.constexpr,
                                  BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # n_cols and the strides arrive divided by ALIGN so that Triton can prove 16-byte alignment; y and s
    # share one (contiguous) row stride. The casting mode is a compile-time constant (rms_norm's helpers):
    # as a runtime value its branches kept extra tiles live, 78 registers instead of 58 for a 16384 row at
    # 16 warps (ptxas, sm_90a), one resident program per SM instead of two.
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    if BLOCK_M == 1:
        # One row as 1-D tensors (fewer layout conversions around the row sum; LayerNorm's forward: 39 us
        # against 46 us for the [1, N] form at 8192 x 4096 bf16 on H200).
        _fwd_row(X, R, W, Y, S, RSTD, pid.to(tl.int64), n_cols, stride_x_v * ALIGN, stride_r_v * ALIGN,
                 stride_y_v * ALIGN, eps, offset, has_weight, store_rstd, CASTING, BLOCK_N)
        return
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
    r = tl.load(R + rows64[:, None] * (stride_r_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
    s, sf = _add(x, r, DT)
    out = rows64[:, None] * (stride_y_v * ALIGN) + cols[None, :]
    tl.store(S + out, s, mask=mask)
    rstd = _c_rstd_from_sumsq(tl.sum(_c_square(sf, CASTING, DT), axis=1), n_cols, eps, CASTING, DT)
    if CASTING == 2:  # "none" sums squares rounded to x's dtype; the backward gets the unrounded rstd
        rstd_saved = 1.0 / tl.sqrt_rn(tl.sum(sf * sf, axis=1) / n_cols + eps)
    else:
        rstd_saved = rstd
    w = tl.load(W + cols, mask=col_mask & has_weight, other=0.0).to(tl.float32)[None, :]
    y = _c_scale(_c_normed(sf, rstd[:, None], CASTING, DT), w, offset, has_weight, CASTING, DT, WDT)
    tl.store(Y + out, y.to(DT), mask=mask)
    if store_rstd:
        tl.store(RSTD + rows, rstd_saved, mask=row_mask)


@triton.jit
def fused_add_rms_norm_fwd_looped_kernel(X, R, W, Y, S, RSTD, n_rows, n_cols_v, stride_x_v, stride_r_v, stride_y_v,
                                         eps, offset, casting, has_weight, store_rstd, BLOCK_N: tl.constexpr,
                                         ALIGN: tl.constexpr):
    # One program per row (as layer_norm's looped forward). The first pass writes s and
    # sums its squares per lane; the second reads s back, from L2.
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    cols = tl.arange(0, BLOCK_N)
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    r_row = R + row * (stride_r_v * ALIGN)
    s_row = S + row * (stride_y_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_exact = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        # (no eviction hints: torch.compile's evict_first on x, r and the s read-back measured 1-3 % slower
        # here on the H200, scripts/tune_fused_add_rms_norm.py)
        s, sf = _add(tl.load(x_row + c, mask=m, other=0.0), tl.load(r_row + c, mask=m, other=0.0), DT)
        tl.store(s_row + c, s, mask=m)
        acc_exact += sf * sf
        if casting == 2:
            acc += _round(sf * sf, DT)
    sumsq_exact = tl.sum(acc_exact, axis=0)
    rstd, rstd_saved = _rstd(tl.sum(acc, axis=0), sumsq_exact, n_cols, eps, casting, DT)
    # The second pass reads what other threads of this program stored in the first.
    tl.debug_barrier()
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        sf = tl.load(s_row + c, mask=m, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=m & has_weight, other=0.0).to(tl.float32)
        y = _scale(_normed(sf, rstd, casting, DT), w, offset, has_weight, casting, WDT)
        tl.store(y_row + c, y.to(DT), mask=m)
    if store_rstd:
        tl.store(RSTD + row, rstd_saved)


@triton.jit
def fused_add_rms_norm_bwd_kernel(DY, DS_OUT, S, W, RSTD, DS, DW_PARTIAL, n_rows, n_cols_v, stride_dy_v,
                                  stride_dso_v, stride_s_v, stride_ds_v, offset, casting, has_weight, has_ds_out,
                                  compute_dw, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                                  PREFETCH: tl.constexpr):
    # Persistent: program p handles row blocks p, p + G, ... and writes one row of dw partial sums.
    # PREFETCH (0, 1 or 2) is how many blocks ahead s, dy and ds_out are loaded while the current block is
    # reduced; as in layer_norm, the 4096-element tile (one 16-warp program per SM by registers) looks two
    # blocks ahead so that two rows stay in flight per SM.
    DT: tl.constexpr = S.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    dso_mask = col_mask & has_ds_out  # no ds_out: every load of it is masked off
    if has_weight:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    else:
        w = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_blocks = tl.cdiv(n_rows, BLOCK_M)
    if PREFETCH > 0:
        s_next = _load_rows(S, pid, n_blocks, stride_s_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dy_next = _load_rows(DY, pid, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dso_next = _load_rows(DS_OUT, pid, n_blocks, stride_dso_v, n_rows, cols, dso_mask, BLOCK_M, ALIGN)
    if PREFETCH > 1:
        s_after = _load_rows(S, pid + n_progs, n_blocks, stride_s_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dy_after = _load_rows(DY, pid + n_progs, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dso_after = _load_rows(DS_OUT, pid + n_progs, n_blocks, stride_dso_v, n_rows, cols, dso_mask, BLOCK_M, ALIGN)
    for block in range(pid, n_blocks, n_progs):
        if PREFETCH > 0:
            sf = s_next.to(tl.float32)
            dyf = dy_next.to(tl.float32)
            dsof = dso_next.to(tl.float32)
            if PREFETCH > 1:
                s_next, dy_next, dso_next = s_after, dy_after, dso_after
                ahead = block + 2 * n_progs
            else:
                ahead = block + n_progs
            s_ahead = _load_rows(S, ahead, n_blocks, stride_s_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
            dy_ahead = _load_rows(DY, ahead, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
            dso_ahead = _load_rows(DS_OUT, ahead, n_blocks, stride_dso_v, n_rows, cols, dso_mask, BLOCK_M, ALIGN)
            if PREFETCH > 1:
                s_after, dy_after, dso_after = s_ahead, dy_ahead, dso_ahead
            else:
                s_next, dy_next, dso_next = s_ahead, dy_ahead, dso_ahead
        else:
            sf = _load_rows(S, block, n_blocks, stride_s_v, n_rows, cols, col_mask, BLOCK_M, ALIGN).to(tl.float32)
            dyf = _load_rows(DY, block, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN).to(tl.float32)
            dsof = _load_rows(DS_OUT, block, n_blocks, stride_dso_v, n_rows, cols, dso_mask, BLOCK_M,
                              ALIGN).to(tl.float32)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < n_rows
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        if has_weight:
            dn = dyf * (offset + w)
        else:
            dn = dyf
        c = tl.sum(dn * sf, axis=1) / n_cols
        ds = rstd[:, None] * dn - (rstd * rstd * rstd * c)[:, None] * sf + dsof
        tl.store(DS + rows.to(tl.int64)[:, None] * (stride_ds_v * ALIGN) + cols[None, :], ds.to(DT),
                 mask=row_mask[:, None] & col_mask[None, :])
        if compute_dw:
            dw_acc += tl.sum(dyf * _normed(sf, rstd[:, None], casting, DT), axis=0)
    if compute_dw:
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=col_mask)


@triton.jit
def fused_add_rms_norm_bwd_rowstats_kernel(DY, S, W, STATS, n_rows, n_cols_v, stride_dy_v, stride_s_v, offset,
                                           has_weight, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Wide rows, first of two kernels: STATS[row] = mean(dn * s) with dn = dy * (offset + w) (one read of dy and
    # s); fused_add_rms_norm_bwd_cols_kernel reads them again for ds and dw.
    n_cols = n_cols_v * ALIGN
    cols = tl.arange(0, BLOCK_N)
    row = tl.program_id(0).to(tl.int64)
    s_row = S + row * (stride_s_v * ALIGN)
    dy_row = DY + row * (stride_dy_v * ALIGN)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        dn = tl.load(dy_row + c, mask=m, other=0.0).to(tl.float32)
        if has_weight:
            dn = dn * (offset + tl.load(W + c, mask=m, other=0.0).to(tl.float32))
        acc += dn * tl.load(s_row + c, mask=m, other=0.0).to(tl.float32)
    tl.store(STATS + row, tl.sum(acc, axis=0) / n_cols)


@triton.jit
def fused_add_rms_norm_bwd_cols_kernel(DY, DS_OUT, S, W, RSTD, STATS, DS, DW_PARTIAL, n_rows, n_cols_v, stride_dy_v,
                                       stride_dso_v, stride_s_v, stride_ds_v, offset, casting, has_weight,
                                       has_ds_out, compute_dw, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                       ALIGN: tl.constexpr):
    # Wide rows, second kernel: program (p, j) of a (P, column blocks) grid walks row tiles p, p + P, ... of
    # column block j, writes ds = rstd dn - rstd^3 c s + ds_out and keeps dw = sum(dy * normed(s)) in registers,
    # stored once as row p of the partial plane. (Replaced a row-looped kernel that read-modified-wrote an N-wide
    # fp32 partial row per two-row block: 8192 x 16384 bf16 backward 0.704 ms on an H200, torch.compile 0.548.)
    DT: tl.constexpr = S.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    p = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    if has_weight:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    else:
        w = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for block in range(p, tl.cdiv(n_rows, BLOCK_M), n_progs):
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < n_rows
        rows64 = rows.to(tl.int64)
        m = row_mask[:, None] & col_mask[None, :]
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)[:, None]
        c_row = tl.load(STATS + rows, mask=row_mask, other=0.0)[:, None]
        sf = tl.load(S + rows64[:, None] * (stride_s_v * ALIGN) + cols[None, :], mask=m, other=0.0).to(tl.float32)
        dyf = tl.load(DY + rows64[:, None] * (stride_dy_v * ALIGN) + cols[None, :], mask=m, other=0.0).to(tl.float32)
        if has_weight:
            dn = dyf * (offset + w)
        else:
            dn = dyf
        ds = rstd * dn - (rstd * rstd * rstd * c_row) * sf
        ds += tl.load(DS_OUT + rows64[:, None] * (stride_dso_v * ALIGN) + cols[None, :], mask=m & has_ds_out,
                      other=0.0).to(tl.float32)
        tl.store(DS + rows64[:, None] * (stride_ds_v * ALIGN) + cols[None, :], ds.to(DT), mask=m)
        if compute_dw:
            dw_acc += dyf * _normed(sf, rstd, casting, DT)
    if compute_dw:
        tl.store(DW_PARTIAL + p.to(tl.int64) * n_cols + cols, tl.sum(dw_acc, axis=0), mask=col_mask)


@triton.jit
def fused_add_rms_norm_bwd_reload_kernel(DY, DS_OUT, S, W, RSTD, DS, DW_PARTIAL, n_rows, n_cols_v, stride_dy_v,
                                         stride_dso_v, stride_s_v, stride_ds_v, offset, has_weight, has_ds_out,
                                         compute_dw, CASTING: tl.constexpr, BLOCK_N: tl.constexpr,
                                         ALIGN: tl.constexpr, WEIGHT_AND_DW: tl.constexpr):
    # 16-bit rows of 8193-16384 elements, one pass over memory and two over each row: program p takes consecutive
    # rows [p * R, (p + 1) * R), R = ceil(rows / programs). For each row, dy and s are loaded for the row's dot
    # c = mean(dn * s) and let go, then loaded again (.cg: from L2, where the first load just left them) with
    # ds_out for ds and the dw sums. Live across rows: dw's accumulator and the weight only. Holding dy, s and dw
    # at once spilled 148-1260 bytes (1-D or [1, N]); the split path (rowstats + cols) reads dy and s from memory
    # twice. WEIGHT_AND_DW (weight given, its gradient wanted: the training case) takes the runtime branches on
    # has_weight and compute_dw out (76 bytes of spills at 16384 x 16 warps, ptxas sm_90a, against 92; the casting
    # mode as a runtime value: 116). H200, 8192 x 16384 bf16 (scripts/tune_fused_add_rms_norm.py bwd): 297.7 us
    # (321.3 with the runtime branches), split path 392.8, Liger-Kernel's one-pass kernel 323.7 (profiler);
    # default-cached second loads 375.6, strided rows 311.3, 8 / 32 warps 371 / 381.
    DT: tl.constexpr = S.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    dso_mask = col_mask & has_ds_out  # no ds_out: every load of it is masked off
    # constexpr True where WEIGHT_AND_DW: the branches below are then resolved at compile time
    weighted = True if WEIGHT_AND_DW else has_weight
    want_dw = True if WEIGHT_AND_DW else compute_dw
    w = tl.load(W + cols, mask=col_mask & has_weight, other=0.0)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    per_program = tl.cdiv(n_rows, tl.num_programs(0))
    first = pid * per_program
    for row in range(first, tl.minimum(first + per_program, n_rows)):
        r = row.to(tl.int64)
        rstd = tl.load(RSTD + r)
        dy = tl.load(DY + r * (stride_dy_v * ALIGN) + cols, mask=col_mask, other=0.0).to(tl.float32)
        if weighted:
            dy = dy * (offset + w.to(tl.float32))
        s = tl.load(S + r * (stride_s_v * ALIGN) + cols, mask=col_mask, other=0.0).to(tl.float32)
        c = tl.sum(dy * s, axis=0) / n_cols
        dyf = tl.load(DY + r * (stride_dy_v * ALIGN) + cols, mask=col_mask, other=0.0,
                      cache_modifier=".cg").to(tl.float32)
        sf = tl.load(S + r * (stride_s_v * ALIGN) + cols, mask=col_mask, other=0.0, cache_modifier=".cg").to(tl.float32)
        if weighted:
            dn = dyf * (offset + w.to(tl.float32))
        else:
            dn = dyf
        ds = rstd * dn - (rstd * rstd * rstd * c) * sf
        ds += tl.load(DS_OUT + r * (stride_dso_v * ALIGN) + cols, mask=dso_mask, other=0.0).to(tl.float32)
        tl.store(DS + r * (stride_ds_v * ALIGN) + cols, ds.to(DT), mask=col_mask)
        if want_dw:
            dw_acc += dyf * _c_normed(sf, rstd, CASTING, DT)
    if compute_dw:
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=col_mask)


# ---------------------------------------------------------------------------------------------------
# Specializations


def _align(x_dtype):
    return 16 // ELEMENT_SIZE[x_dtype]


def _single_blocks(max_block):
    b = CPP_CONSTANTS["MIN_BLOCK_N"]
    while b <= max_block:
        yield b
        b *= 2


def _rows_per_program(block_n):
    # Rows shorter than 1024 are batched so that a program moves at least 1024 elements.
    return max(1, 1024 // block_n)


# Warps by tile size, so that registers do not cap occupancy (ptxas -v, sm_90a, bf16). The forward's one-row
# programs (casting mode constant) need 58 registers at 16384 x 16 warps (two resident programs per SM) and
# 50-58 at 32768 x 32 warps; a single backward block spilled beyond 8192 elements, so the backward of longer
# rows takes the two-kernel path (rowstats + cols).
_FWD_WARPS = {2048: 4, 4096: 8, 8192: 16, 16384: 16, 32768: 32}
_BWD_WARPS = {1024: 4, 2048: 8, 4096: 16, 8192: 16}
_RELOAD_WARPS = {16384: 16}


def _prefetch(tile_elems):
    # 8192-element tiles: one block ahead (three tiles) spilled 24 bytes at 16 warps (ptxas, sm_90a).
    return 2 if tile_elems == 4096 else (1 if tile_elems < 4096 else 0)


def _warps(table, tile_elems):
    return table.get(tile_elems, 4 if tile_elems < min(table) else 32)


def _fwd_sig(xd, wd):
    return {"X": f"*{xd}", "R": f"*{xd}", "W": f"*{wd}", "Y": f"*{xd}", "S": f"*{xd}", "RSTD": "*fp32",
            "n_rows": "i32", "n_cols_v": "i32", "stride_x_v": "i64", "stride_r_v": "i64", "stride_y_v": "i64",
            "eps": "fp32", "offset": "fp32", "has_weight": "i1", "store_rstd": "i1"}


def _looped_fwd_sig(xd, wd):
    return {**_fwd_sig(xd, wd), "casting": "i32"}


def _bwd_sig(xd, wd):
    return {"DY": f"*{xd}", "DS_OUT": f"*{xd}", "S": f"*{xd}", "W": f"*{wd}", "RSTD": "*fp32", "DS": f"*{xd}",
            "DW_PARTIAL": "*fp32", "n_rows": "i32", "n_cols_v": "i32", "stride_dy_v": "i64", "stride_dso_v": "i64",
            "stride_s_v": "i64", "stride_ds_v": "i64", "offset": "fp32", "casting": "i32", "has_weight": "i1",
            "has_ds_out": "i1", "compute_dw": "i1"}


def _cols_sig(xd, wd):
    return {"DY": f"*{xd}", "DS_OUT": f"*{xd}", "S": f"*{xd}", "W": f"*{wd}", "RSTD": "*fp32", "STATS": "*fp32",
            "DS": f"*{xd}", "DW_PARTIAL": "*fp32", "n_rows": "i32", "n_cols_v": "i32", "stride_dy_v": "i64",
            "stride_dso_v": "i64", "stride_s_v": "i64", "stride_ds_v": "i64", "offset": "fp32", "casting": "i32",
            "has_weight": "i1", "has_ds_out": "i1", "compute_dw": "i1"}


def _specs():
    fwd = KernelSpec(fused_add_rms_norm_fwd_kernel)
    fwd_loop = KernelSpec(fused_add_rms_norm_fwd_looped_kernel)
    bwd = KernelSpec(fused_add_rms_norm_bwd_kernel)
    rowstats = KernelSpec(fused_add_rms_norm_bwd_rowstats_kernel)
    cols = KernelSpec(fused_add_rms_norm_bwd_cols_kernel)
    reload = KernelSpec(fused_add_rms_norm_bwd_reload_kernel)
    loop_n = CPP_CONSTANTS["LOOP_BLOCK_N"]
    for xd, wd in DTYPE_PAIRS:
        base = {"x_dtype": xd, "w_dtype": wd}
        for mode in _casting_modes(xd):
            for block_n in _single_blocks(CPP_CONSTANTS["FWD_MAX_BLOCK_N"]):
                block_m = _rows_per_program(block_n)
                fwd.variants.append(Variant(
                    key={**base, "casting": mode, "block_n": block_n}, signature=_fwd_sig(xd, wd),
                    constexprs={"CASTING": mode, "BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd)},
                    num_warps=_warps(_FWD_WARPS, block_m * block_n), aligned=True))
        for block_n in _single_blocks(CPP_CONSTANTS["BWD_MAX_BLOCK_N"]):
            block_m = _rows_per_program(block_n)
            bwd.variants.append(Variant(
                key={**base, "block_n": block_n}, signature=_bwd_sig(xd, wd),
                constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd),
                            "PREFETCH": _prefetch(block_m * block_n)},
                num_warps=_warps(_BWD_WARPS, block_m * block_n), aligned=True))
        for block_n, warps in _RELOAD_WARPS.items():
            if xd == "fp32":
                continue  # 396 bytes of spills at 16384 x 16 warps (ptxas sm_90a): fp32 rows keep the split path
            for mode in _casting_modes(xd):
                for weight_and_dw in (False, True):
                    reload.variants.append(Variant(
                        key={**base, "casting": mode, "block_n": block_n, "weight_and_dw": weight_and_dw},
                        signature={k: t for k, t in _bwd_sig(xd, wd).items() if k != "casting"},
                        constexprs={"CASTING": mode, "BLOCK_N": block_n, "ALIGN": _align(xd),
                                    "WEIGHT_AND_DW": weight_and_dw}, num_warps=warps, aligned=True))
        for aligned in (False, True):
            align = _align(xd) if aligned else 1
            fwd_loop.variants.append(Variant(
                key={**base, "aligned": aligned}, signature=_looped_fwd_sig(xd, wd),
                constexprs={"BLOCK_N": loop_n, "ALIGN": align}, num_warps=8, aligned=aligned))
            rowstats.variants.append(Variant(
                key={**base, "aligned": aligned},
                signature={"DY": f"*{xd}", "S": f"*{xd}", "W": f"*{wd}", "STATS": "*fp32", "n_rows": "i32",
                           "n_cols_v": "i32", "stride_dy_v": "i64", "stride_s_v": "i64", "offset": "fp32",
                           "has_weight": "i1"},
                constexprs={"BLOCK_N": CPP_CONSTANTS["ROWSTATS_BLOCK_N"], "ALIGN": align}, num_warps=4,
                aligned=aligned))
            cols.variants.append(Variant(
                key={**base, "aligned": aligned}, signature=_cols_sig(xd, wd),
                constexprs={"BLOCK_M": CPP_CONSTANTS["COLS_BLOCK_M"], "BLOCK_N": CPP_CONSTANTS["COLS_BLOCK_N"],
                            "ALIGN": align}, num_warps=8, aligned=aligned))
    return [fwd, fwd_loop, bwd, rowstats, cols, reload]


KERNELS = _specs()
