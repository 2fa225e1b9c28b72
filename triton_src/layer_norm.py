"""LayerNorm kernels and the specializations built ahead of time.

y = (x - mean(x)) * rsqrt(var(x) + eps) * w + b over the last dimension (biased variance), computed in
fp32 and rounded once to x's dtype, as torch.nn.functional.layer_norm does. The forward saves the fp32
mean and rstd of every row for the backward:
  xhat = (x - mean) * rstd,  g = dy * w,
  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_rows(dy * xhat),  db = sum_rows(dy).

Means are corrected (the corrected two-pass algorithm): an fp32 mean m is off by up to about an ulp of
|mean|, which is a large error in x - m when |mean| >> std (x = 100 + 0.1 * randn: 1e-4 relative in y).
c = mean(x - m) measures that error, computed from the exact differences x - m, and every kernel
centres with (x - m) - c. The saved mean m + c rounds back to fp32, so the backward measures c again.
The backward is persistent: each program keeps fp32 partial sums of dw and db for the rows it handled and
writes them as one row of a [programs, n_cols] buffer; column_sum_kernel then adds those rows up and
writes dw and db in the parameters' dtype.

Rows are processed as a [rows, n_cols] view with one row stride; the last dimension is contiguous.
Aligned variants are promised 16-byte aligned pointers and n_cols, row strides that are multiples of
ALIGN elements (16 bytes): that is what lets Triton emit 16-byte loads and stores.
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._rows import bf16_to_fp32, load_row

CPP_CONSTANTS = {
    "FWD_MAX_BLOCK_N": 32768,
    "AFFINE_MIN_BLOCK_N": 4096,
    "BWD_MAX_BLOCK_N": 8192,
    "MIN_BLOCK_N": 256,
    "LOOP_BLOCK_N": 4096,
    "ROWSTATS_BLOCK_N": 1024,
    "COLS_BLOCK_M": 2,
    "COLS_BLOCK_N": 1024,
    "COLSUM_BLOCK_N": 64,
    "BWD_WARPS_PER_SM": 8,
}

# (x dtype, parameter dtype) pairs built; weight and bias share the parameter dtype, which is x's own when
# both have it and fp32 otherwise (the launcher upcasts, exactly for the 16-bit types).
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]


@triton.jit
def _affine(xhat, w, b, has_weight, has_bias):
    y = xhat
    if has_weight:
        y = y * w
    if has_bias:
        y = y + b
    return y


@triton.jit
def _pair_add(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _layer_norm_fwd_row(X, W, B, Y, MEAN, RSTD, row, x, n_cols, stride_x, stride_y, eps, has_weight, has_bias,
                        store_stats, BLOCK_N: tl.constexpr, AFFINE: tl.constexpr, REWIDEN: tl.constexpr):
    # x: the row as loaded (x's dtype, zeros past n_cols). REWIDEN (bf16): the output widens x again from its
    # 16-bit registers, so that the fp32 row dies at the reduction (registers for the next row's early load).
    cols = tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    x_row = X + row * stride_x
    xf = x.to(tl.float32)
    # y = (u - mu) * rstd with u the row less a base (mean = base + mu). Each round of a row-wide reduction is
    # a barrier the row's next loads wait behind (one resident program per SM on wide rows), so 16-bit rows
    # take one round: (sum, sum of squares) of d = x - x[0] as one two-operand reduction (8192 x 32768 bf16
    # on an H200, JIT sweep of scripts/tune_layer_norm.py: 304 us for an unshifted one-round form, 344 us with
    # three rounds; bench_layer_norm: this form 333 us, the three rounds 347). The shift x[0] keeps
    # var = E[d^2] - E[d]^2 well conditioned unless x[0] lies far from the mean (an outlier channel): when
    # E[d]^2 > 16 var the rounding could reach 17 ulps of var, and such a row reloads x (L2) and takes the
    # centred two-pass sums. fp32 rows always take those (their output ulps are 2^16 times finer than bf16's).
    if X.dtype.element_ty != tl.float32:
        x0 = tl.load(x_row).to(tl.float32)
        u = tl.where(cm, xf - x0, 0.0)
        s1, s2 = tl.reduce((u, u * u), 0, _pair_add)
        mu = s1 / n_cols
        var = s2 / n_cols - mu * mu
        base = x0
        if mu * mu > 16.0 * var:
            xr = tl.load(x_row + cols, mask=cm, other=0.0).to(tl.float32)
            base = tl.sum(xr, axis=0) / n_cols
            u = tl.where(cm, xr - base, 0.0)
            s1, s2 = tl.reduce((u, u * u), 0, _pair_add)
            mu = s1 / n_cols
            var = s2 / n_cols - mu * mu
    else:
        base = tl.sum(xf, axis=0) / n_cols
        u = tl.where(cm, xf - base, 0.0)
        mu = tl.sum(u, axis=0) / n_cols
        var = tl.sum(u * u, axis=0) / n_cols - mu * mu
    rstd = 1.0 / tl.sqrt_rn(tl.maximum(var, 0.0) + eps)
    # No branches on the runtime flags: an absent weight loads as 1 and an absent bias as 0 (masked off, the
    # null pointers are not read). Branches that each produce a tile kept both tiles live: 106 registers
    # instead of 64 at 4096 x 4 warps (ptxas), i.e. half the resident programs. Even the flag masks cost
    # registers on wide rows (per-element predicates): 100 instead of 64 at 16384 x 16 warps, one resident
    # program per SM instead of two, so AFFINE variants (weight and bias both given, the usual case) drop them.
    if AFFINE:
        w = tl.load(W + cols, mask=cm, other=1.0).to(tl.float32)
        b = tl.load(B + cols, mask=cm, other=0.0).to(tl.float32)
    else:
        w = tl.load(W + cols, mask=cm & has_weight, other=1.0).to(tl.float32)
        b = tl.load(B + cols, mask=cm & has_bias, other=0.0).to(tl.float32)
    if REWIDEN:
        u = bf16_to_fp32(x) - base  # bit-identical to the u above (the fallback's too: same base, same row)
    y = (u - mu) * rstd * w + b
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=cm)
    if store_stats:
        tl.store(MEAN + row, base + mu)
        tl.store(RSTD + row, rstd)


@triton.jit
def layer_norm_fwd_kernel(X, W, B, Y, MEAN, RSTD, n_rows, n_cols_v, stride_x_v, stride_y_v, eps, has_weight,
                          has_bias, store_stats, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                          AFFINE: tl.constexpr, PERSISTENT: tl.constexpr = False, REWIDEN: tl.constexpr = False):
    # n_cols and the strides arrive divided by ALIGN so that Triton can prove 16-byte alignment. AFFINE
    # (one-row programs only): weight and bias are both given, has_weight / has_bias are not read.
    DT: tl.constexpr = X.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    if PERSISTENT:
        # One-row steps, programs striding over the rows (grid: the resident programs), each row's load issued
        # before the previous row is reduced: wide rows leave one or two programs per SM, which otherwise idle
        # through every row's reduction. H200, 8192 rows bf16 (scripts/tune_wide_rows.py): 289.4 us at 32768
        # (89 % of copy; REWIDEN, without it the held rows spill: 357.6) against 319.4, and 143.3 us at 16384
        # against 153.8 for one program per row.
        cols = tl.arange(0, BLOCK_N)
        cm = cols < n_cols
        stride_x = stride_x_v * ALIGN
        nprog = tl.num_programs(0)
        nxt = load_row(X, pid, n_rows, stride_x, cols, cm, 0.0)
        for r in range(pid, n_rows, nprog):
            row = tl.cast(r, tl.int64)
            x = nxt
            nxt = load_row(X, row + nprog, n_rows, stride_x, cols, cm, 0.0)
            _layer_norm_fwd_row(X, W, B, Y, MEAN, RSTD, row, x, n_cols, stride_x, stride_y_v * ALIGN, eps,
                                has_weight, has_bias, store_stats, BLOCK_N, AFFINE, REWIDEN)
        return
    if BLOCK_M == 1:
        # One row as 1-D tensors: 39 us vs 46 us for the [1, N] form at 8192x4096 bf16 on H200
        # (scripts/tune_layer_norm.py; fewer layout conversions around the row sums).
        row = pid.to(tl.int64)
        cols = tl.arange(0, BLOCK_N)
        x = tl.load(X + row * (stride_x_v * ALIGN) + cols, mask=cols < n_cols, other=0.0)
        _layer_norm_fwd_row(X, W, B, Y, MEAN, RSTD, row, x, n_cols, stride_x_v * ALIGN, stride_y_v * ALIGN, eps,
                            has_weight, has_bias, store_stats, BLOCK_N, AFFINE, REWIDEN)
        return
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_mask = rows < n_rows
    col_mask = cols < n_cols
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)
    xf = tl.load(X + rows64[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(xf, axis=1) / n_cols
    xc = tl.where(col_mask[None, :], xf - mean[:, None], 0.0)
    c = tl.sum(xc, axis=1) / n_cols
    var = tl.maximum(tl.sum(xc * xc, axis=1) / n_cols - c * c, 0.0)
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    xc = xc - c[:, None]
    mean = mean + c
    if has_weight:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    else:
        w = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    if has_bias:
        b = tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    else:
        b = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    y = _affine(xc * rstd[:, None], w, b, has_weight, has_bias)
    tl.store(Y + rows64[:, None] * (stride_y_v * ALIGN) + cols[None, :], y.to(DT), mask=mask)
    if store_stats:
        tl.store(MEAN + rows, mean, mask=row_mask)
        tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _welford_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    # Chan et al.: merges two (mean, centred sum of squares, count) summaries; empty ones (n = 0) drop out.
    n = n_a + n_b
    frac = tl.where(n > 0, n_b / tl.maximum(n, 1.0), 0.0)
    delta = mean_b - mean_a
    return mean_a + delta * frac, m2_a + m2_b + delta * delta * n_a * frac, n


@triton.jit
def layer_norm_fwd_looped_kernel(X, W, B, Y, MEAN, RSTD, n_rows, n_cols_v, stride_x_v, stride_y_v, eps, has_weight,
                                 has_bias, store_stats, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Rows wider than a single block (or not 16-byte aligned), one program per row (a row count below 2^31 is
    # checked by the launcher; one resident wave, or one sized to keep rows in L2, measured slower). First
    # pass: Welford per lane (each lane's running mean and centred sum of squares over the chunks, no
    # cross-thread reduction inside the loop), merged across lanes once
    # (Chan); x is read with evict_last so that the second pass, which reads it with evict_first, finds it in
    # L2 (what torch.compile's kernel does; per-chunk block reductions cost a barrier round each).
    DT: tl.constexpr = X.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    cols = tl.arange(0, BLOCK_N)
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    y_row = Y + row * (stride_y_v * ALIGN)
    mean = tl.zeros([BLOCK_N], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        xf = tl.load(x_row + c, mask=m, other=0.0, eviction_policy="evict_last").to(tl.float32)
        # every live lane has seen one element per earlier chunk: its count is this chunk's number + 1
        inv = 1.0 / tl.cast(start // BLOCK_N + 1, tl.float32)
        delta = xf - mean
        new_mean = mean + delta * inv
        mean = tl.where(m, new_mean, mean)
        m2 = tl.where(m, m2 + delta * (xf - new_mean), m2)
    # lane j saw ceil((n_cols - j) / BLOCK_N) elements
    count = tl.maximum(tl.cdiv(n_cols - cols, BLOCK_N), 0).to(tl.float32)
    mean_row, m2_row, _ = tl.reduce((mean, m2, count), 0, _welford_combine)
    rstd = 1.0 / tl.sqrt_rn(tl.maximum(m2_row, 0.0) / n_cols + eps)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        xf = tl.load(x_row + c, mask=m, other=0.0, eviction_policy="evict_first").to(tl.float32)
        # absent weight / bias: loaded as 1 / 0 with their null pointers masked off (no branch-held tiles)
        w = tl.load(W + c, mask=m & has_weight, other=1.0, eviction_policy="evict_last").to(tl.float32)
        b = tl.load(B + c, mask=m & has_bias, other=0.0, eviction_policy="evict_last").to(tl.float32)
        y = (xf - mean_row) * rstd * w + b
        tl.store(y_row + c, y.to(DT), mask=m)
    if store_stats:
        tl.store(MEAN + row, mean_row)
        tl.store(RSTD + row, rstd)


@triton.jit
def _load_rows(PTR, block, n_blocks, stride_v, n_rows, cols, col_mask, BLOCK_M: tl.constexpr, ALIGN: tl.constexpr):
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = ((rows < n_rows) & (block < n_blocks))[:, None] & col_mask[None, :]
    return tl.load(PTR + rows.to(tl.int64)[:, None] * (stride_v * ALIGN) + cols[None, :], mask=mask, other=0.0)


@triton.jit
def layer_norm_bwd_kernel(DY, X, W, MEAN, RSTD, DX, DW_PARTIAL, DB_PARTIAL, n_rows, n_cols_v, stride_dy_v,
                          stride_x_v, stride_dx_v, has_weight, compute_dw, compute_db, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, PREFETCH: tl.constexpr):
    # Persistent: program p handles row blocks p, p + G, ... and writes one row of dw and db partial sums.
    # PREFETCH (0, 1 or 2) is how many blocks ahead x and dy are loaded while the current block is reduced.
    # The launcher runs about 8 resident warps per SM (BWD_WARPS_PER_SM): at 4096, two 4-warp programs per SM
    # with one block ahead were the fastest of the H200 sweep (scripts/tune_layer_norm.py).
    DT: tl.constexpr = X.dtype.element_ty
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    if PREFETCH > 0:
        # Small tiles keep w in registers; bigger ones reload it per row block (L1 hits). No weight: w = 1
        # (masked off, not read): a branch per flag would keep two tiles live (see _layer_norm_fwd_row).
        w = tl.load(W + cols, mask=col_mask & has_weight, other=1.0).to(tl.float32)[None, :]
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    n_blocks = tl.cdiv(n_rows, BLOCK_M)
    if PREFETCH > 0:
        x_next = _load_rows(X, pid, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dy_next = _load_rows(DY, pid, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
    if PREFETCH > 1:
        x_after = _load_rows(X, pid + n_progs, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        dy_after = _load_rows(DY, pid + n_progs, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
    for block in range(pid, n_blocks, n_progs):
        if PREFETCH > 1:
            xf = x_next.to(tl.float32)
            dyf = dy_next.to(tl.float32)
            x_next = x_after
            dy_next = dy_after
            ahead = block + 2 * n_progs
            x_after = _load_rows(X, ahead, n_blocks, stride_x_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
            dy_after = _load_rows(DY, ahead, n_blocks, stride_dy_v, n_rows, cols, col_mask, BLOCK_M, ALIGN)
        elif PREFETCH > 0:
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
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        # Padding columns: dy is 0 there, so g, g*xc and dy*xhat vanish without a mask.
        xc = xf - mean[:, None]
        if PREFETCH > 0:
            g = dyf * w
        else:
            g = dyf * tl.load(W + cols, mask=col_mask & has_weight, other=1.0).to(tl.float32)[None, :]
        # Three independent row sums: the mean correction c, mean(g) and mean(g * xhat) = rstd*(mean(g*xc) - c*mean(g)).
        c = tl.sum(tl.where(col_mask[None, :], xc, 0.0), axis=1) / n_cols
        c1 = tl.sum(g, axis=1) / n_cols
        c2 = rstd * (tl.sum(g * xc, axis=1) / n_cols - c * c1)
        xhat = (xc - c[:, None]) * rstd[:, None]
        dx = rstd[:, None] * (g - c1[:, None] - xhat * c2[:, None])
        tl.store(DX + rows.to(tl.int64)[:, None] * (stride_dx_v * ALIGN) + cols[None, :], dx.to(DT),
                 mask=row_mask[:, None] & col_mask[None, :])
        if compute_dw:
            dw_acc += tl.sum(dyf * xhat, axis=0)
        if compute_db:
            db_acc += tl.sum(dyf, axis=0)
    if compute_dw:
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=col_mask)
    if compute_db:
        tl.store(DB_PARTIAL + pid.to(tl.int64) * n_cols + cols, db_acc, mask=col_mask)


@triton.jit
def layer_norm_bwd_rowstats_kernel(DY, X, W, MEAN, RSTD, STATS, n_rows, n_cols_v, stride_dy_v, stride_x_v,
                                   has_weight, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Wide rows, first of two kernels: per row, with xc = x - mean and g = dy * w, STATS[row] = (corr, c1, c2):
    # corr = mean(xc) (the saved mean's rounding), c1 = mean(g), c2 = rstd * (mean(g * xc) - corr * c1).
    # One read of x and dy; layer_norm_bwd_cols_kernel reads them again for dx, dw and db.
    n_cols = n_cols_v * ALIGN
    cols = tl.arange(0, BLOCK_N)
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    dy_row = DY + row * (stride_dy_v * ALIGN)
    mean = tl.load(MEAN + row)
    acc0 = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        m = c < n_cols
        xc = tl.where(m, tl.load(x_row + c, mask=m, other=0.0).to(tl.float32) - mean, 0.0)
        g = tl.load(dy_row + c, mask=m, other=0.0).to(tl.float32)
        g = g * tl.load(W + c, mask=m & has_weight, other=1.0).to(tl.float32)
        acc0 += xc
        acc1 += g
        acc2 += g * xc
    corr = tl.sum(acc0, axis=0) / n_cols
    c1 = tl.sum(acc1, axis=0) / n_cols
    c2 = tl.load(RSTD + row) * (tl.sum(acc2, axis=0) / n_cols - corr * c1)
    tl.store(STATS + row * 4, corr)
    tl.store(STATS + row * 4 + 1, c1)
    tl.store(STATS + row * 4 + 2, c2)


@triton.jit
def layer_norm_bwd_cols_kernel(DY, X, W, MEAN, RSTD, STATS, DX, DW_PARTIAL, DB_PARTIAL, n_rows, n_cols_v,
                               stride_dy_v, stride_x_v, stride_dx_v, has_weight, compute_dw, compute_db,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Wide rows, second kernel: program (p, j) of a (P, column blocks) grid walks row tiles p, p + P, ... of
    # column block j, writes dx = rstd * (g - c1 - xhat * c2) and keeps dw = sum(dy * xhat), db = sum(dy) in
    # [BLOCK_M, BLOCK_N] registers, stored once as row p of the partial planes (column_sum_kernel adds them).
    # This pair replaced a row-looped persistent kernel that read-modified-wrote N-wide fp32 partial rows once per
    # two-row block (more bytes than the rows themselves) and re-read its rows past L2: at 8192 x 16384 bf16 on an
    # H200 its backward took 0.744 ms (torch.compile 0.417).
    n_cols = n_cols_v * ALIGN
    p = tl.program_id(0)
    n_progs = tl.num_programs(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    w = tl.load(W + cols, mask=col_mask & has_weight, other=1.0).to(tl.float32)[None, :]
    dw_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for block in range(p, tl.cdiv(n_rows, BLOCK_M), n_progs):
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = rows < n_rows
        rows64 = rows.to(tl.int64)
        m = row_mask[:, None] & col_mask[None, :]
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)[:, None]
        corr = tl.load(STATS + rows64 * 4, mask=row_mask, other=0.0)
        c1 = tl.load(STATS + rows64 * 4 + 1, mask=row_mask, other=0.0)[:, None]
        c2 = tl.load(STATS + rows64 * 4 + 2, mask=row_mask, other=0.0)[:, None]
        x = tl.load(X + rows64[:, None] * (stride_x_v * ALIGN) + cols[None, :], mask=m, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * (stride_dy_v * ALIGN) + cols[None, :], mask=m, other=0.0).to(tl.float32)
        xhat = tl.where(m, ((x - mean[:, None]) - corr[:, None]) * rstd, 0.0)
        dx = rstd * (dy * w - c1 - xhat * c2)
        tl.store(DX + rows64[:, None] * (stride_dx_v * ALIGN) + cols[None, :], dx.to(DX.dtype.element_ty), mask=m)
        dw_acc += dy * xhat
        db_acc += dy
    if compute_dw:
        tl.store(DW_PARTIAL + p.to(tl.int64) * n_cols + cols, tl.sum(dw_acc, axis=0), mask=col_mask)
    if compute_db:
        tl.store(DB_PARTIAL + p.to(tl.int64) * n_cols + cols, tl.sum(db_acc, axis=0), mask=col_mask)


@triton.jit
def column_sum_kernel(PARTIAL, OUT0, OUT1, n_parts, n_cols, plane_stride, BLOCK_P: tl.constexpr,
                      BLOCK_N: tl.constexpr):
    # Sums the rows of fp32 [n_parts, n_cols] planes: plane 0 (program_id(1) == 0) into OUT0, plane 1 into
    # OUT1, rounding once to the output dtype. Also used by fused_add_rms_norm for its dw.
    pid_n = tl.program_id(0)
    plane = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    base = PARTIAL + plane.to(tl.int64) * plane_stride
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_parts, BLOCK_P):
        parts = start + tl.arange(0, BLOCK_P)
        mask = (parts < n_parts)[:, None] & col_mask[None, :]
        acc += tl.load(base + parts.to(tl.int64)[:, None] * n_cols + cols[None, :], mask=mask, other=0.0)
    total = tl.sum(acc, axis=0)
    if plane == 0:
        tl.store(OUT0 + cols, total.to(OUT0.dtype.element_ty), mask=col_mask)
    else:
        tl.store(OUT1 + cols, total.to(OUT1.dtype.element_ty), mask=col_mask)


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


# Warps by tile size, so that registers do not cap occupancy (ptxas -v, sm_90a, bf16): LayerNorm keeps more
# tiles live than RMSNorm (w, b; the backward's dw and db sums), so rms_norm's measured table gave 128
# registers for the 4096 forward at 4 warps and 176 (one program per SM) for the 4096 backward at 8.
# Beyond 32768 (forward) and 8192 (backward) elements the single block is not built (the backward spilled at 32
# warps): the looped forward and the two-kernel backward (rowstats + cols) take those rows, and any row that is
# not 16-byte aligned.
# H200 sweep at 8192x4096 bf16 (scripts/tune_layer_norm.py): forward 4 warps 39.3 us, 8 warps 41.0; backward
# 4 warps, one row ahead, 2 programs per SM 71.1 us (16 warps, two ahead, 1 per SM: > 80 us). 8192 and 16384
# keep 32 elements per thread (not measured).
# 1024-element tiles: 2 warps 14.5 us, 4 warps 15.5 at 8192x1024 (H200 sweep, one row per program).
_FWD_WARPS = {1024: 2, 2048: 4, 4096: 4, 8192: 8, 16384: 16, 32768: 16}
_BWD_WARPS = {1024: 4, 2048: 4, 4096: 4, 8192: 16}
# Backward tiles chosen by a sweep rather than the rules above, block_n -> (rows per step, warps, rows ahead):
# H200, 8192 x 4096 bf16, kernel alone (scripts/tune_layer_norm.py bwd): 4 rows x 8 warps, one step ahead, one
# program per SM 68.4 us; the rule's 1 row x 4 warps, 2 per SM was not among the six best (>= 73 us).
_BWD_TILE = {4096: (4, 8, 1)}


def _prefetch(tile_elems):
    return 1 if tile_elems <= 8192 else 0


def _warps(table, tile_elems):
    return table.get(tile_elems, 4 if tile_elems < min(table) else 32)


def _persistent_fwd(x_dtype, block_n, affine):
    """(PERSISTENT, REWIDEN) of a forward variant: 16-bit rows of 16384 and bf16 rows of 32768 with weight and
    bias (the AFFINE variants: flag masks would cost registers) stride over the rows; at 32768 the early-loaded
    next row fits beside the current one only with REWIDEN (bf16; fp16 rows of 32768 keep one row per program)."""
    if not affine or x_dtype == "fp32":
        return False, False
    if block_n == 16384:
        return True, False
    if block_n == 32768 and x_dtype == "bf16":
        return True, True
    return False, False


def _fwd_sig(xd, pd):
    return {"X": f"*{xd}", "W": f"*{pd}", "B": f"*{pd}", "Y": f"*{xd}", "MEAN": "*fp32", "RSTD": "*fp32",
            "n_rows": "i32", "n_cols_v": "i32", "stride_x_v": "i64", "stride_y_v": "i64", "eps": "fp32",
            "has_weight": "i1", "has_bias": "i1", "store_stats": "i1"}


def _bwd_sig(xd, pd):
    return {"DY": f"*{xd}", "X": f"*{xd}", "W": f"*{pd}", "MEAN": "*fp32", "RSTD": "*fp32", "DX": f"*{xd}",
            "DW_PARTIAL": "*fp32", "DB_PARTIAL": "*fp32", "n_rows": "i32", "n_cols_v": "i32",
            "stride_dy_v": "i64", "stride_x_v": "i64", "stride_dx_v": "i64", "has_weight": "i1",
            "compute_dw": "i1", "compute_db": "i1"}


def _rowstats_sig(xd, pd):
    return {"DY": f"*{xd}", "X": f"*{xd}", "W": f"*{pd}", "MEAN": "*fp32", "RSTD": "*fp32", "STATS": "*fp32",
            "n_rows": "i32", "n_cols_v": "i32", "stride_dy_v": "i64", "stride_x_v": "i64", "has_weight": "i1"}


def _cols_sig(xd, pd):
    return {"DY": f"*{xd}", "X": f"*{xd}", "W": f"*{pd}", "MEAN": "*fp32", "RSTD": "*fp32", "STATS": "*fp32",
            "DX": f"*{xd}", "DW_PARTIAL": "*fp32", "DB_PARTIAL": "*fp32", "n_rows": "i32", "n_cols_v": "i32",
            "stride_dy_v": "i64", "stride_x_v": "i64", "stride_dx_v": "i64", "has_weight": "i1", "compute_dw": "i1",
            "compute_db": "i1"}


def _specs():
    fwd = KernelSpec(layer_norm_fwd_kernel)
    fwd_loop = KernelSpec(layer_norm_fwd_looped_kernel)
    bwd = KernelSpec(layer_norm_bwd_kernel)
    rowstats = KernelSpec(layer_norm_bwd_rowstats_kernel)
    cols = KernelSpec(layer_norm_bwd_cols_kernel)
    colsum = KernelSpec(column_sum_kernel)
    loop_n = CPP_CONSTANTS["LOOP_BLOCK_N"]
    for xd, pd in DTYPE_PAIRS:
        base = {"x_dtype": xd, "p_dtype": pd}
        for block_n in _single_blocks(CPP_CONSTANTS["FWD_MAX_BLOCK_N"]):
            block_m = _rows_per_program(block_n)
            for affine in (False, True) if block_n >= CPP_CONSTANTS["AFFINE_MIN_BLOCK_N"] else (False,):
                persistent, rewiden = _persistent_fwd(xd, block_n, affine)
                fwd.variants.append(Variant(
                    key={**base, "block_n": block_n, "affine": affine}, signature=_fwd_sig(xd, pd),
                    constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd), "AFFINE": affine,
                                "PERSISTENT": persistent, "REWIDEN": rewiden},
                    num_warps=_warps(_FWD_WARPS, block_m * block_n), aligned=True))
        for block_n in _single_blocks(CPP_CONSTANTS["BWD_MAX_BLOCK_N"]):
            block_m = _rows_per_program(block_n)
            block_m, warps, prefetch = _BWD_TILE.get(block_n, (block_m, _warps(_BWD_WARPS, block_m * block_n),
                                                               _prefetch(block_m * block_n)))
            bwd.variants.append(Variant(
                key={**base, "block_n": block_n}, signature=_bwd_sig(xd, pd),
                constexprs={"BLOCK_M": block_m, "BLOCK_N": block_n, "ALIGN": _align(xd), "PREFETCH": prefetch},
                num_warps=warps, aligned=True))
        for aligned in (False, True):
            align = _align(xd) if aligned else 1
            fwd_loop.variants.append(Variant(
                key={**base, "aligned": aligned}, signature=_fwd_sig(xd, pd),
                constexprs={"BLOCK_N": loop_n, "ALIGN": align}, num_warps=8, aligned=aligned))
            rowstats.variants.append(Variant(
                key={**base, "aligned": aligned}, signature=_rowstats_sig(xd, pd),
                constexprs={"BLOCK_N": CPP_CONSTANTS["ROWSTATS_BLOCK_N"], "ALIGN": align}, num_warps=4,
                aligned=aligned))
            cols.variants.append(Variant(
                key={**base, "aligned": aligned}, signature=_cols_sig(xd, pd),
                constexprs={"BLOCK_M": CPP_CONSTANTS["COLS_BLOCK_M"], "BLOCK_N": CPP_CONSTANTS["COLS_BLOCK_N"],
                            "ALIGN": align}, num_warps=8, aligned=aligned))
    for od in ("fp32", "bf16", "fp16"):
        colsum.variants.append(Variant(
            key={"out_dtype": od},
            signature={"PARTIAL": "*fp32", "OUT0": f"*{od}", "OUT1": f"*{od}", "n_parts": "i32", "n_cols": "i32",
                       "plane_stride": "i64"},
            constexprs={"BLOCK_P": 64, "BLOCK_N": CPP_CONSTANTS["COLSUM_BLOCK_N"]}, num_warps=4))
    return [fwd, fwd_loop, bwd, rowstats, cols, colsum]


KERNELS = _specs()
