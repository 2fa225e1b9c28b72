"""RMSNorm kernels and the specializations built ahead of time.

y = x * rsqrt(mean(x^2) + eps) * (offset + w) over the last dimension, with three casting modes:
  llama: rstd in fp32, x*rstd rounded to x's dtype, then multiplied by the weight (HF LlamaRMSNorm);
  gemma: everything in fp32, rounded once at the end (HF GemmaRMSNorm);
  none:  every intermediate rounded to x's dtype, as eager PyTorch computes the formula in that dtype.
The backward pass is computed in fp32 for every mode, from the unrounded fp32 rstd the forward saves.

Rows are processed as a [rows, n_cols] view with one row stride; the last dimension is contiguous.
Aligned variants are promised 16-byte aligned pointers and n_cols, row strides that are multiples of
ALIGN elements (16 bytes): that is what lets Triton emit 16-byte loads and stores.
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant

CASTING_LLAMA = 0
CASTING_GEMMA = 1
CASTING_NONE = 2

CPP_CONSTANTS = {
    "CASTING_LLAMA": CASTING_LLAMA,
    "CASTING_GEMMA": CASTING_GEMMA,
    "CASTING_NONE": CASTING_NONE,
    "FWD_MAX_BLOCK_N": 65536,
    "BWD_MAX_BLOCK_N": 16384,
    "MIN_BLOCK_N": 128,
    "LOOP_BLOCK_N": 4096,
}

# (x dtype, weight dtype) pairs built; the launcher upcasts any other weight dtype to fp32 (exact).
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]


@triton.jit
def _round(v, DT: tl.constexpr):
    """Round fp32 values to DT and widen them again."""
    return v.to(DT).to(tl.float32)


@triton.jit
def _rstd_from_sumsq(sumsq, n_cols, eps, CASTING: tl.constexpr, DT: tl.constexpr):
    if CASTING == 2:
        ms = _round(sumsq / n_cols, DT)
        return _round(1.0 / tl.sqrt_rn(_round(ms + eps, DT)), DT)
    else:
        return 1.0 / tl.sqrt_rn(sumsq / n_cols + eps)


@triton.jit
def _square(xf, CASTING: tl.constexpr, DT: tl.constexpr):
    if CASTING == 2:
        return _round(xf * xf, DT)
    else:
        return xf * xf


@triton.jit
def _normed(xf, rstd, CASTING: tl.constexpr, DT: tl.constexpr):
    """x*rstd as the forward multiplies it by the weight (and as dW sees it)."""
    n = xf * rstd
    if CASTING != 1:
        n = _round(n, DT)
    return n


@triton.jit
def _scale(n, w, offset, has_weight, CASTING: tl.constexpr, DT: tl.constexpr, WDT: tl.constexpr):
    if has_weight:
        w_eff = offset + w
        if CASTING == 2:
            w_eff = _round(w_eff, WDT)
        y = n * w_eff
    else:
        y = n
    return y


@triton.jit
def _fwd_row(X, W, Y, RSTD, row, cols, n_cols, stride_x_v, stride_y_v, eps, offset, has_weight, store_rstd,
             CASTING: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    col_mask = cols < n_cols
    xf = tl.load(X + row * (stride_x_v * ALIGN) + cols, mask=col_mask, other=0.0).to(tl.float32)
    rstd = _rstd_from_sumsq(tl.sum(_square(xf, CASTING, DT), axis=0), n_cols, eps, CASTING, DT)
    if CASTING == 2:
        rstd_saved = 1.0 / tl.sqrt_rn(tl.sum(xf * xf, axis=0) / n_cols + eps)
    else:
        rstd_saved = rstd
    if has_weight:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_N], dtype=tl.float32)
    y = _scale(_normed(xf, rstd, CASTING, DT), w, offset, has_weight, CASTING, DT, WDT)
    tl.store(Y + row * (stride_y_v * ALIGN) + cols, y.to(DT), mask=col_mask)
    if store_rstd:
        tl.store(RSTD + row, rstd_saved)


@triton.jit
def rms_norm_fwd_kernel(X, W, Y, RSTD, n_rows, n_cols_v, stride_x_v, stride_y_v, eps, offset, has_weight,
                        store_rstd, CASTING: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        ALIGN: tl.constexpr):
    # n_cols and the strides arrive divided by ALIGN so that Triton can prove 16-byte alignment.
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    if BLOCK_M == 1:
        # One row per program, written with 1-D tensors: 2-3 % faster than the [1, BLOCK_N] form on H200
        # (8192 rows bf16: 38.0 vs 38.9 us at 4096, 134.0 vs 136.9 at 16384; scripts/tune_rms_norm.py ab).
        _fwd_row(X, W, Y, RSTD, pid.to(tl.int64), cols, n_cols, stride_x_v, stride_y_v, eps, offset, has_weight,
                 store_rstd, CASTING, BLOCK_N, ALIGN)
    else:
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < n_rows
        col_mask = cols < n_cols
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=mask, other=0.0)
        xf = x.to(tl.float32)
        rstd = _rstd_from_sumsq(tl.sum(_square(xf, CASTING, DT), axis=1), n_cols, eps, CASTING, DT)
        if CASTING == 2:
            # The backward gets the unrounded rstd: with the rounded one, dx = rstd*(dn - x*rstd^2*mean(dn*x))
            # cancels badly where x*rstd is near 1 (hidden 1: dx error of 2 at magnitude 739 in fp16).
            rstd_saved = 1.0 / tl.sqrt_rn(tl.sum(xf * xf, axis=1) / n_cols + eps)
        else:
            rstd_saved = rstd
        n = _normed(xf, rstd[:, None], CASTING, DT)
        if has_weight:
            w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        else:
            w = tl.zeros([1, BLOCK_N], dtype=tl.float32)
        y = _scale(n, w, offset, has_weight, CASTING, DT, WDT)
        tl.store(Y + rows64[:, None] * (stride_y_v * ALIGN) + cols[None, :], y.to(DT), mask=mask)
        if store_rstd:
            tl.store(RSTD + rows, rstd_saved, mask=row_mask)


@triton.jit
def rms_norm_fwd_looped_kernel(X, W, Y, RSTD, n_rows, n_cols_v, stride_x_v, stride_y_v, eps, offset, has_weight,
                               store_rstd, CASTING: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    DT: tl.constexpr = X.dtype.element_ty
    WDT: tl.constexpr = W.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc_exact = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        xf = tl.load(x_row + c, mask=c < n_cols, other=0.0).to(tl.float32)
        acc += _square(xf, CASTING, DT)
        if CASTING == 2:
            acc_exact += xf * xf
    rstd = _rstd_from_sumsq(tl.sum(acc, axis=0), n_cols, eps, CASTING, DT)
    if CASTING == 2:
        rstd_saved = 1.0 / tl.sqrt_rn(tl.sum(acc_exact, axis=0) / n_cols + eps)
    else:
        rstd_saved = rstd
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        xf = tl.load(x_row + c, mask=m, other=0.0).to(tl.float32)
        if has_weight:
            w = tl.load(W + c, mask=m, other=0.0).to(tl.float32)
        else:
            w = tl.zeros([BLOCK_N], dtype=tl.float32)
        y = _scale(_normed(xf, rstd, CASTING, DT), w, offset, has_weight, CASTING, DT, WDT)
        tl.store(y_row + c, y.to(DT), mask=m)
    if store_rstd:
        tl.store(RSTD + row, rstd_saved)


@triton.jit
def _grad_rows(xf, dyf, w, rstd, offset, has_weight, n_cols, CASTING: tl.constexpr, DT: tl.constexpr):
    """dx for a [rows, cols] tile (fp32) and the tile's contribution to dW, summed over its rows."""
    if has_weight:
        dn = dyf * (offset + w)
    else:
        dn = dyf
    c = tl.sum(dn * xf, axis=1) / n_cols
    dx = rstd[:, None] * dn - (rstd * rstd * rstd * c)[:, None] * xf
    dw = tl.sum(dyf * _normed(xf, rstd[:, None], CASTING, DT), axis=0)
    return dx, dw


@triton.jit
def _load_rows(PTR, block, n_blocks, stride_v, n_rows, cols, col_mask, BLOCK_M: tl.constexpr, ALIGN: tl.constexpr):
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = ((rows < n_rows) & (block < n_blocks))[:, None] & col_mask[None, :]
    return tl.load(PTR + rows.to(tl.int64)[:, None] * (stride_v * ALIGN) + cols[None, :], mask=mask, other=0.0)


@triton.jit
def rms_norm_bwd_kernel(DY, X, W, RSTD, DX, DW_PARTIAL, n_rows, n_cols_v, stride_dy_v, stride_x_v, stride_dx_v,
                        offset, has_weight, compute_dw, CASTING: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, PREFETCH: tl.constexpr):
    # Persistent: program p handles row blocks p, p + G, ... and writes one row of dW partial sums.
    # PREFETCH loads the next block's x and dy before the current one is reduced (two blocks of registers:
    # only for tiles up to 8192 elements; at 16384 the doubled registers spilled and ran 8x slower on H200).
    DT: tl.constexpr = X.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    if has_weight:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    else:
        w = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_blocks = tl.cdiv(n_rows, BLOCK_M)
    if PREFETCH:
        x_next = _load_rows(X, pid, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dy_next = _load_rows(DY, pid, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
    for block in range(pid, n_blocks, n_progs):
        if PREFETCH:
            xf = x_next.to(tl.float32)
            dyf = dy_next.to(tl.float32)
            x_next = _load_rows(X, block + n_progs, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
            dy_next = _load_rows(DY, block + n_progs, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M,
                                 ALIGN)
        else:
            xf = _load_rows(X, block, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN).to(tl.float32)
            dyf = _load_rows(DY, block, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN).to(tl.float32)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < n_rows
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        dx, dw = _grad_rows(xf, dyf, w, rstd, offset, has_weight, n_cols, CASTING, DT)
        tl.store(DX + rows.to(tl.int64)[:, None] * (stride_dx_v * ALIGN) + cols[None, :], dx.to(DT),
                 mask=row_mask[:, None] & col_mask[None, :])
        dw_acc += dw
    if compute_dw:
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=col_mask)


@triton.jit
def rms_norm_bwd_looped_kernel(DY, X, W, RSTD, DX, DW_PARTIAL, n_rows, n_cols_v, stride_dy_v, stride_x_v,
                               stride_dx_v, offset, has_weight, compute_dw, CASTING: tl.constexpr,
                               ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Persistent over groups of ROWS rows. Pass 1 reduces mean(dn * x) of each row over column chunks;
    # pass 2 writes dx chunk by chunk and adds the group's dW contribution to the program's fp32 partial row
    # (its first group stores). Updating the partial row once per group instead of once per row cuts that
    # read-modify-write traffic ROWS-fold: per row it was 8 bytes per column, more than x, dy and dx together.
    DT: tl.constexpr = X.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    dw_row = DW_PARTIAL + pid.to(tl.int64) * n_cols
    n_groups = tl.cdiv(n_rows, ROWS)
    for group in range(pid, n_groups, n_progs):
        rows = group * ROWS + tl.arange(0, ROWS)
        row_mask = rows < n_rows
        rows64 = rows.to(tl.int64)[:, None]
        x_rows = X + rows64 * (stride_x_v * ALIGN)
        dy_rows = DY + rows64 * (stride_dy_v * ALIGN)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            m = row_mask[:, None] & (c < n_cols)[None, :]
            xf = tl.load(x_rows + c[None, :], mask=m, other=0.0).to(tl.float32)
            dyf = tl.load(dy_rows + c[None, :], mask=m, other=0.0).to(tl.float32)
            if has_weight:
                dn = dyf * (offset + tl.load(W + c, mask=c < n_cols, other=0.0).to(tl.float32))[None, :]
            else:
                dn = dyf
            acc += dn * xf
        c_rows = tl.sum(acc, axis=1) / n_cols
        for start in range(0, n_cols, BLOCK_N):
            c = start + cols
            col_mask = c < n_cols
            m = row_mask[:, None] & col_mask[None, :]
            xf = tl.load(x_rows + c[None, :], mask=m, other=0.0).to(tl.float32)
            dyf = tl.load(dy_rows + c[None, :], mask=m, other=0.0).to(tl.float32)
            if has_weight:
                dn = dyf * (offset + tl.load(W + c, mask=col_mask, other=0.0).to(tl.float32))[None, :]
            else:
                dn = dyf
            dx = rstd[:, None] * dn - (rstd * rstd * rstd * c_rows)[:, None] * xf
            tl.store(DX + rows64 * (stride_dx_v * ALIGN) + c[None, :], dx.to(DT), mask=m)
            if compute_dw:
                dw = tl.sum(dyf * _normed(xf, rstd[:, None], CASTING, DT), axis=0)
                prev = tl.load(dw_row + c, mask=col_mask & (group != pid), other=0.0)
                tl.store(dw_row + c, prev + dw, mask=col_mask)


@triton.jit
def rms_norm_dw_kernel(PARTIAL, DW, n_parts, n_cols, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # Sums the backward's fp32 dW partial rows in a fixed order (deterministic) and rounds once to the
    # weight's dtype: one launch in place of torch.sum + a cast, and no first use of PyTorch's reduction
    # kernels (loading those cost 34-55 ms in a fresh process on H200).
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < n_cols
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for start in range(0, n_parts, BLOCK_P):
        parts = start + tl.arange(0, BLOCK_P)
        mask = (parts < n_parts)[:, None] & col_mask[None, :]
        acc += tl.load(PARTIAL + parts.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0)
    tl.store(DW + cols, tl.sum(acc, axis=0).to(DW.dtype.element_ty), mask=col_mask)


# ---------------------------------------------------------------------------------------------------
# Specializations


def _casting_modes(x_dtype):
    # With fp32 input every mode computes the same function: one variant serves all three.
    return [CASTING_LLAMA] if x_dtype == "fp32" else [CASTING_LLAMA, CASTING_GEMMA, CASTING_NONE]


def _align(x_dtype):
    return 16 // ELEMENT_SIZE[x_dtype]


def _single_blocks(max_block):
    b = CPP_CONSTANTS["MIN_BLOCK_N"]
    while b <= max_block:
        yield b
        b *= 2


# Warps per program by tile size, measured on H200 at 8192 rows bf16 (scripts/tune_rms_norm.py, do_bench
# medians): forward 4096 -> 8 warps (37.6 us vs 38.3 with 4; first sweep 38.4 with 4, 8 within 1 %),
# 8192 -> 16 (67.2 us vs 68.2 with 8),
# 16384 -> 8 (136.9 us vs 146.4 with 16), 32768 and 65536 -> 32 (65536 with 16: 15 % slower);
# backward 1024 -> 4, 4096 -> 8 (77 us vs 82 with 4), 16384 -> 16 (330 us vs 341 with 8).
_FWD_WARPS = {4096: 8, 8192: 16, 16384: 8, 32768: 32, 65536: 32}
_BWD_WARPS = {2048: 4, 4096: 8, 8192: 8, 16384: 16}


def _warps(table, tile_elems):
    return table.get(tile_elems, 4 if tile_elems < min(table) else 32)


def _rows_per_program(block_n):
    # Rows shorter than 1024 are batched so that a program moves at least 1024 elements.
    return max(1, 1024 // block_n)


def _fwd_sig(xd, wd):
    return {"X": f"*{xd}", "W": f"*{wd}", "Y": f"*{xd}", "RSTD": "*fp32", "n_rows": "i32", "n_cols_v": "i32",
            "stride_x_v": "i64", "stride_y_v": "i64", "eps": "fp32", "offset": "fp32", "has_weight": "i1",
            "store_rstd": "i1"}


def _bwd_sig(xd, wd):
    return {"DY": f"*{xd}", "X": f"*{xd}", "W": f"*{wd}", "RSTD": "*fp32", "DX": f"*{xd}", "DW_PARTIAL": "*fp32",
            "n_rows": "i32", "n_cols_v": "i32", "stride_dy_v": "i64", "stride_x_v": "i64", "stride_dx_v": "i64",
            "offset": "fp32", "has_weight": "i1", "compute_dw": "i1"}


def _specs():
    fwd = KernelSpec(rms_norm_fwd_kernel)
    fwd_loop = KernelSpec(rms_norm_fwd_looped_kernel)
    bwd = KernelSpec(rms_norm_bwd_kernel)
    bwd_loop = KernelSpec(rms_norm_bwd_looped_kernel)
    loop_n = CPP_CONSTANTS["LOOP_BLOCK_N"]
    for xd, wd in DTYPE_PAIRS:
        for mode in _casting_modes(xd):
            base = {"x_dtype": xd, "w_dtype": wd, "casting": mode}
            for block_n in _single_blocks(CPP_CONSTANTS["FWD_MAX_BLOCK_N"]):
                block_m = _rows_per_program(block_n)
                fwd.variants.append(Variant(
                    key={**base, "block_n": block_n}, signature=_fwd_sig(xd, wd),
                    constexprs={"CASTING": mode, "BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd)},
                    num_warps=_warps(_FWD_WARPS, block_m * block_n), aligned=True))
            for block_n in _single_blocks(CPP_CONSTANTS["BWD_MAX_BLOCK_N"]):
                block_m = _rows_per_program(block_n)
                bwd.variants.append(Variant(
                    key={**base, "block_n": block_n}, signature=_bwd_sig(xd, wd),
                    constexprs={"CASTING": mode, "BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd),
                                "PREFETCH": block_m * block_n <= 8192},
                    num_warps=_warps(_BWD_WARPS, block_m * block_n), aligned=True))
            for aligned in (False, True):
                align = _align(xd) if aligned else 1
                fwd_loop.variants.append(Variant(
                    key={**base, "aligned": aligned}, signature=_fwd_sig(xd, wd),
                    constexprs={"CASTING": mode, "BLOCK_N": loop_n, "ALIGN": align},
                    num_warps=8, aligned=aligned))
                # 8 rows x 1024 columns per step, 4 warps, 8 programs per SM: 700 us at 8192 x 32768 bf16 on
                # H200 (sweep: scripts/tune_rms_norm.py looped; 1 row x 4096, 8 warps, 1 program per SM: 1740)
                bwd_loop.variants.append(Variant(
                    key={**base, "aligned": aligned}, signature=_bwd_sig(xd, wd),
                    constexprs={"CASTING": mode, "ROWS": 8, "BLOCK_N": 1024, "ALIGN": align},
                    num_warps=4, aligned=aligned))
    # dW reduction: 16 columns x 32 partial rows per step, 4 warps (H200, 264 x 4096 and 132 x 8192 fp32
    # partials: 7-9 us, vs 13-17 us for torch.sum + cast; 64 columns per program was slower, too few programs)
    dw = KernelSpec(rms_norm_dw_kernel)
    for wd in ("fp32", "bf16", "fp16"):
        dw.variants.append(Variant(
            key={"dw_dtype": wd}, signature={"PARTIAL": "*fp32", "DW": f"*{wd}", "n_parts": "i32", "n_cols": "i32"},
            constexprs={"BLOCK_P": 32, "BLOCK_C": 16}, num_warps=4, aligned=True))
    return [fwd, fwd_loop, bwd, bwd_loop, dw]


KERNELS = _specs()
