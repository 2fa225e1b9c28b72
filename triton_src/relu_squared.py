"""ReLU² kernels and the specializations built ahead of time.

y = relu(x)^2 and dx = 2 relu(x) dy, elementwise, computed in fp32 and rounded once. Flat layout as
swiglu.py: contiguous inputs, BLOCK elements per program, unmasked 16-byte accesses in every program
but the last (triton_src/_activations.py), INT64 variants for n > 2^31 - MAX_BLOCK.
"""
import triton
import triton.language as tl

from build_tools.spec import DTYPES, KernelSpec, Variant
from triton_src._activations import FLAT_BLOCK, FLAT_WARPS, PDL_LAST_PROGRAMS, block_start, load_f32, store
from triton_src._rows import pdl_start

CPP_CONSTANTS = {"MAX_BLOCK": 4096}


@triton.jit
def _fwd_tile(X, Y, offs, n, MASKED: tl.constexpr):
    r = tl.maximum(load_f32(X, offs, n, MASKED), 0.0)
    store(Y, offs, r * r, n, MASKED)


@triton.jit
def _bwd_tile(DY, X, DX, offs, n, MASKED: tl.constexpr):
    dy = load_f32(DY, offs, n, MASKED)
    r = tl.maximum(load_f32(X, offs, n, MASKED), 0.0)
    store(DX, offs, 2.0 * r * dy, n, MASKED)


@triton.jit
def relu_squared_fwd_kernel(X, Y, n, BLOCK: tl.constexpr, INT64: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _fwd_tile(X + start, Y + start, offs, rem, False)
    else:
        _fwd_tile(X + start, Y + start, offs, rem, True)


@triton.jit
def relu_squared_bwd_kernel(DY, X, DX, n, BLOCK: tl.constexpr, INT64: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_tile(DY + start, X + start, DX + start, offs, rem, False)
    else:
        _bwd_tile(DY + start, X + start, DX + start, offs, rem, True)


# ---------------------------------------------------------------------------------------------------
# Specializations: dtype x 16-byte aligned pointers x 64-bit offsets, each launched as a programmatic dependent
# (_rows.pdl_start; arch < 90 builds drop it). Until 2026-11-30 only tensors of up to 2^23 elements took PDL variants
# that called launch_dependents in every program: slower from 8192 x 4096 up (see _activations.PDL_LAST_PROGRAMS).


def _specs():
    fwd = KernelSpec(relu_squared_fwd_kernel)
    bwd = KernelSpec(relu_squared_bwd_kernel)
    assert max(FLAT_BLOCK.values()) <= CPP_CONSTANTS["MAX_BLOCK"]
    for dt in DTYPES:
        for aligned in (False, True):
            for int64 in (False, True):
                key = {"x_dtype": dt, "aligned": aligned, "int64": int64}
                cexpr = {"BLOCK": FLAT_BLOCK[dt], "INT64": int64, "PDL": True}
                warps = FLAT_WARPS
                p = f"*{dt}"
                fwd.variants.append(Variant(key=key, signature={"X": p, "Y": p, "n": "i64"},
                                            constexprs=cexpr, num_warps=warps, aligned=aligned, launch_pdl=True))
                bwd.variants.append(Variant(key=key, signature={"DY": p, "X": p, "DX": p, "n": "i64"},
                                            constexprs=cexpr, num_warps=warps, aligned=aligned, launch_pdl=True))
    return [fwd, bwd]


KERNELS = _specs()
