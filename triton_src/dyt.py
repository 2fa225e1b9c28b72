"""DyT (Dynamic Tanh) kernels and the specializations built ahead of time.

y = gamma * tanh(alpha * x) + beta over the last dimension C: alpha holds one value, gamma and beta
C values (beta optional). Computed in fp32, rounded once. With t = tanh(alpha x), s = 1 - t^2:
  dx = dy gamma alpha s,  dalpha = sum(dy gamma x s),  dgamma = sum_rows(dy t),  dbeta = sum_rows(dy).

x is a contiguous [rows, C] array (the launcher makes it so). Tiles are BLOCK_M rows x BLOCK_N columns;
aligned variants are promised 16-byte aligned pointers and C a multiple of ALIGN elements (C arrives
divided by ALIGN so that Triton can prove it), which gives 16-byte accesses.

Backward: a persistent grid of (row programs P) x (column blocks); each program walks row tiles
p, p + P, ... of its column block, accumulating dgamma, dbeta and dalpha in fp32 registers, and writes
one row of partial sums. dyt_reduce_kernel sums the partial rows and writes the gradients in the
parameters' dtype (no torch reduction on the GPU path).
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._activations import tanh_fast, tanh_parts

# (x dtype, parameter dtype) pairs built; the launcher upcasts any other parameter dtype to fp32.
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]
BLOCK_NS = (256, 1024)
# Elements per tile. Forward: 4096 over 4 warps (60 registers, ptxas -v, sm_90a). Backward: 2048 over 8
# warps, 8 per thread: 115 registers, two programs per SM; at 4096 (16 per thread) it took 201 registers and
# one program per SM, the same bytes in flight with half the warps.
FWD_TILE = 4096
BWD_TILE = 2048
REDUCE_BLOCK_P = 16
REDUCE_BLOCK_N = 256

CPP_CONSTANTS = {"SMALL_BLOCK_N": BLOCK_NS[0], "LARGE_BLOCK_N": BLOCK_NS[1], "REDUCE_BLOCK_N": REDUCE_BLOCK_N}


@triton.jit
def _tanh(z, EXACT: tl.constexpr):
    """tanh(z) and 1 - tanh(z)^2: tanh_parts (series near 0) for fp32 results, tanh_fast for 16-bit ones,
    whose rounding hides its absolute error of a few fp32 ulps near 0. The fp32 path cost ~31 SASS
    instructions per element and held the bf16 forward at 73 % of the copy rate (issue-bound)."""
    if EXACT:
        t, _, sech2 = tanh_parts(z)
    else:
        t, sech2 = tanh_fast(z)
    return t, sech2


@triton.jit
def _tile(block_m, block_n, n_rows, n_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_mask[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    return cols, col_mask, mask, offs


@triton.jit
def dyt_fwd_kernel(X, ALPHA, GAMMA, BETA, Y, n_rows, n_cols_v, has_beta, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    cols, col_mask, mask, offs = _tile(tl.program_id(0), tl.program_id(1), n_rows, n_cols, BLOCK_M, BLOCK_N)
    alpha = tl.load(ALPHA).to(tl.float32)
    gamma = tl.load(GAMMA + cols, mask=col_mask, other=0.0).to(tl.float32)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    t, _ = _tanh(alpha * x, Y.dtype.element_ty == tl.float32)
    y = gamma[None, :] * t
    if has_beta:
        y += tl.load(BETA + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def dyt_bwd_kernel(DY, X, ALPHA, GAMMA, DX, DGAMMA_P, DBETA_P, DALPHA_P, n_rows, n_cols_v, compute_params,
                   has_beta, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    # Program (p, c) of a (P, column blocks) grid. The partial sums stay in [BLOCK_M, BLOCK_N] register
    # tiles and are reduced over rows once at the end, not per iteration (no shared memory in the loop).
    n_cols = n_cols_v * ALIGN
    p = tl.program_id(0)
    n_progs = tl.num_programs(0)
    block_n = tl.program_id(1)
    alpha = tl.load(ALPHA).to(tl.float32)
    cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < n_cols
    gamma = tl.load(GAMMA + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    dgamma_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    dbeta_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    dalpha_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for block_m in range(p, tl.cdiv(n_rows, BLOCK_M), n_progs):
        _, _, mask, offs = _tile(block_m, block_n, n_rows, n_cols, BLOCK_M, BLOCK_N)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        t, sech2 = _tanh(alpha * x, DX.dtype.element_ty == tl.float32)
        dys = dy * gamma * sech2
        tl.store(DX + offs, (dys * alpha).to(DX.dtype.element_ty), mask=mask)
        if compute_params:
            dalpha_acc += dys * x
            dgamma_acc += dy * t
            dbeta_acc += dy
    if compute_params:
        row = p.to(tl.int64) * n_cols
        tl.store(DGAMMA_P + row + cols, tl.sum(dgamma_acc, axis=0), mask=col_mask)
        if has_beta:
            tl.store(DBETA_P + row + cols, tl.sum(dbeta_acc, axis=0), mask=col_mask)
        tl.store(DALPHA_P + p * tl.num_programs(1) + block_n, tl.sum(tl.sum(dalpha_acc, axis=1), axis=0))


@triton.jit
def dyt_reduce_kernel(DGAMMA_P, DBETA_P, DALPHA_P, DGAMMA, DBETA, DALPHA, n_partials, n_cols, n_alpha, has_beta,
                      BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    # Programs 0 .. cdiv(n_cols, BLOCK_N) - 1 sum the dgamma / dbeta partial rows of their columns; the
    # last program sums the n_alpha dalpha partials. Sums in fp32, rounded once to the parameter dtype.
    pid = tl.program_id(0)
    if pid == tl.num_programs(0) - 1:
        idx = tl.arange(0, BLOCK_P * BLOCK_N)
        acc = tl.zeros([BLOCK_P * BLOCK_N], dtype=tl.float32)
        for start in range(0, n_alpha, BLOCK_P * BLOCK_N):
            acc += tl.load(DALPHA_P + start + idx, mask=start + idx < n_alpha, other=0.0)
        tl.store(DALPHA, tl.sum(acc, axis=0).to(DALPHA.dtype.element_ty))
    else:
        cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        col_mask = cols < n_cols
        prow = tl.arange(0, BLOCK_P)
        g_acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        b_acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        for start in range(0, n_partials, BLOCK_P):
            r = start + prow
            mask = (r < n_partials)[:, None] & col_mask[None, :]
            offs = r.to(tl.int64)[:, None] * n_cols + cols[None, :]
            g_acc += tl.load(DGAMMA_P + offs, mask=mask, other=0.0)
            if has_beta:
                b_acc += tl.load(DBETA_P + offs, mask=mask, other=0.0)
        tl.store(DGAMMA + cols, tl.sum(g_acc, axis=0).to(DGAMMA.dtype.element_ty), mask=col_mask)
        if has_beta:
            tl.store(DBETA + cols, tl.sum(b_acc, axis=0).to(DBETA.dtype.element_ty), mask=col_mask)


# ---------------------------------------------------------------------------------------------------
# Specializations: (x, parameter) dtypes x aligned x column block (20 per kernel) + 3 reductions.


def _specs():
    fwd = KernelSpec(dyt_fwd_kernel)
    bwd = KernelSpec(dyt_bwd_kernel)
    red = KernelSpec(dyt_reduce_kernel)
    for xd, wd in DTYPE_PAIRS:
        for aligned in (False, True):
            align = 16 // ELEMENT_SIZE[xd] if aligned else 1
            for block_n in BLOCK_NS:
                key = {"x_dtype": xd, "w_dtype": wd, "aligned": aligned, "block_n": block_n}
                fwd.variants.append(Variant(
                    key=key, constexprs={"BLOCK_M": FWD_TILE // block_n, "BLOCK_N": block_n, "ALIGN": align},
                    num_warps=4, aligned=aligned,
                    signature={"X": f"*{xd}", "ALPHA": f"*{wd}", "GAMMA": f"*{wd}", "BETA": f"*{wd}", "Y": f"*{xd}",
                               "n_rows": "i32", "n_cols_v": "i32", "has_beta": "i1"}))
                bwd.variants.append(Variant(
                    key=key, constexprs={"BLOCK_M": BWD_TILE // block_n, "BLOCK_N": block_n, "ALIGN": align},
                    num_warps=8, aligned=aligned,
                    signature={"DY": f"*{xd}", "X": f"*{xd}", "ALPHA": f"*{wd}", "GAMMA": f"*{wd}", "DX": f"*{xd}",
                               "DGAMMA_P": "*fp32", "DBETA_P": "*fp32", "DALPHA_P": "*fp32", "n_rows": "i32",
                               "n_cols_v": "i32", "compute_params": "i1", "has_beta": "i1"}))
    for wd in ("fp32", "bf16", "fp16"):
        red.variants.append(Variant(
            key={"w_dtype": wd}, constexprs={"BLOCK_P": REDUCE_BLOCK_P, "BLOCK_N": REDUCE_BLOCK_N}, num_warps=4,
            aligned=True,
            signature={"DGAMMA_P": "*fp32", "DBETA_P": "*fp32", "DALPHA_P": "*fp32", "DGAMMA": f"*{wd}",
                       "DBETA": f"*{wd}", "DALPHA": f"*{wd}", "n_partials": "i32", "n_cols": "i32", "n_alpha": "i32",
                       "has_beta": "i1"}))
    return [fwd, bwd, red]


KERNELS = _specs()
