"""GeGLU kernels and the specializations built ahead of time.

y = gelu(gate) * up, elementwise over two tensors of one shape, with GELU's two forms (APPROX):
  tanh (0): gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (gelu_pytorch_tanh, Gemma)
  none (1): gelu(x) = 0.5 x (1 + erf(x / sqrt(2)))                         (exact)
Computed in fp32 and rounded once. The tanh form is evaluated as 0.5 (1 + tanh(z)) = sigmoid(2 z):
  gelu = x sigmoid(2 z),  d gelu / dx = sigmoid(2 z) + 2 x sigmoid(2 z) (1 - sigmoid(2 z)) dz/dx,
one exp and one reciprocal per element with no cancellation in either tail. (Built from tanh with its
cancellation-free pieces and a series near 0 it took ~44 SASS instructions per element and held the bf16
forward at 72 % of the copy rate: at HBM rate a 16-bit read-read-write leaves ~47 per element.) The
backward recomputes gelu and its derivative from gate and writes dup = dy * gelu(gate),
dgate = dy * up * gelu'(gate) in one pass.

Same flat layout as swiglu.py: contiguous inputs, BLOCK elements per program, unmasked 16-byte
accesses in every program but the last, INT64 variants for n > 2^31 - MAX_BLOCK.
"""
import triton
import triton.language as tl

from build_tools.spec import DTYPES, KernelSpec, Variant
from triton_src._activations import (FLAT_BLOCK, FLAT_WARPS, PDL_LAST_PROGRAMS, block_start, load_f32,
                                     sigmoid_parts, store)
from triton_src._rows import pdl_start

APPROX_TANH = 0
APPROX_NONE = 1

CPP_CONSTANTS = {"MAX_BLOCK": 4096, "APPROX_TANH": APPROX_TANH, "APPROX_NONE": APPROX_NONE}


TWO_SQRT_2_OVER_PI = tl.constexpr(2 * 0.7978845608028654)
SQRT_1_2 = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _gelu_and_grad(x, APPROX: tl.constexpr):
    """gelu(x) and d gelu / dx, in fp32."""
    if APPROX == 0:
        x2 = x * x
        s, s1ms = sigmoid_parts(TWO_SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x2))
        gelu = x * s
        grad = s + x * s1ms * (TWO_SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x2))
    else:
        cdf = 0.5 * (1.0 + tl.erf(x * SQRT_1_2))
        gelu = x * cdf
        grad = cdf + x * INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    return gelu, grad


@triton.jit
def _gelu(x, APPROX: tl.constexpr):
    # the tanh form in _gelu_and_grad's order (x * x first), so that geglu_mlp's backward, which takes the product
    # from _gelu_and_grad, recomputes the forward's value bit for bit
    if APPROX == 0:
        x2 = x * x
        s, _ = sigmoid_parts(TWO_SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x2))
        gelu = x * s
    else:
        gelu = 0.5 * x * (1.0 + tl.erf(x * SQRT_1_2))
    return gelu


@triton.jit
def _fwd_tile(G, U, Y, offs, n, APPROX: tl.constexpr, MASKED: tl.constexpr):
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    store(Y, offs, _gelu(g, APPROX) * u, n, MASKED)


@triton.jit
def _bwd_tile(DY, G, U, DG, DU, offs, n, APPROX: tl.constexpr, MASKED: tl.constexpr):
    dy = load_f32(DY, offs, n, MASKED)
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    gelu, grad = _gelu_and_grad(g, APPROX)
    store(DU, offs, dy * gelu, n, MASKED)
    store(DG, offs, dy * u * grad, n, MASKED)


@triton.jit
def _bwd_inplace_tile(DY, G, U, offs, n, APPROX: tl.constexpr, MASKED: tl.constexpr):
    # liger::geglu_mlp's backward (see swiglu.py's swiglu_bwd_inplace_kernel): dy <- gelu(g) * u, g <- d g, u <- d u;
    # every element is loaded before any is stored
    dy = load_f32(DY, offs, n, MASKED)
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    gelu, grad = _gelu_and_grad(g, APPROX)
    dg = dy * u * grad
    du = dy * gelu
    store(DY, offs, gelu * u, n, MASKED)
    store(G, offs, dg, n, MASKED)
    store(U, offs, du, n, MASKED)


@triton.jit
def geglu_fwd_kernel(G, U, Y, n, APPROX: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr,
                     PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _fwd_tile(G + start, U + start, Y + start, offs, rem, APPROX, False)
    else:
        _fwd_tile(G + start, U + start, Y + start, offs, rem, APPROX, True)


@triton.jit
def geglu_bwd_kernel(DY, G, U, DG, DU, n, APPROX: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr,
                     PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_tile(DY + start, G + start, U + start, DG + start, DU + start, offs, rem, APPROX, False)
    else:
        _bwd_tile(DY + start, G + start, U + start, DG + start, DU + start, offs, rem, APPROX, True)


@triton.jit
def geglu_bwd_inplace_kernel(DY, G, U, n, APPROX: tl.constexpr, BLOCK: tl.constexpr, INT64: tl.constexpr,
                             PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_inplace_tile(DY + start, G + start, U + start, offs, rem, APPROX, False)
    else:
        _bwd_inplace_tile(DY + start, G + start, U + start, offs, rem, APPROX, True)


# ---------------------------------------------------------------------------------------------------
# Specializations: approximation x dtype x 16-byte aligned pointers x 64-bit offsets (24 per kernel), each
# launched as a programmatic dependent (_rows.pdl_start; arch < 90 builds drop it).


def _specs():
    fwd = KernelSpec(geglu_fwd_kernel)
    bwd = KernelSpec(geglu_bwd_kernel)
    bwd_inplace = KernelSpec(geglu_bwd_inplace_kernel)
    assert max(FLAT_BLOCK.values()) <= CPP_CONSTANTS["MAX_BLOCK"]
    for approx in (APPROX_TANH, APPROX_NONE):
        for dt in DTYPES:
            for aligned in (False, True):
                for int64 in (False, True):
                    key = {"approx": approx, "x_dtype": dt, "aligned": aligned, "int64": int64}
                    cexpr = {"APPROX": approx, "BLOCK": FLAT_BLOCK[dt], "INT64": int64, "PDL": True}
                    warps = FLAT_WARPS
                    p = f"*{dt}"
                    fwd.variants.append(Variant(key=key, signature={"G": p, "U": p, "Y": p, "n": "i64"},
                                                constexprs=cexpr, num_warps=warps, aligned=aligned, launch_pdl=True))
                    bwd.variants.append(Variant(key=key, signature={"DY": p, "G": p, "U": p, "DG": p, "DU": p,
                                                                    "n": "i64"},
                                                constexprs=cexpr, num_warps=warps, aligned=aligned, launch_pdl=True))
                    bwd_inplace.variants.append(Variant(key=key, signature={"DY": p, "G": p, "U": p, "n": "i64"},
                                                        constexprs=cexpr, num_warps=warps, aligned=aligned,
                                                        launch_pdl=True))
    return [fwd, bwd, bwd_inplace]


KERNELS = _specs()
