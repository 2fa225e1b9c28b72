"""ReLU² kernels and the specializations built ahead of time.

y = relu(x)^2 and dx = 2 relu(x) dy, elementwise, computed in fp32 and rounded once. Flat layout as
swiglu.py: contiguous inputs, BLOCK elements per program, unmasked 16-byte accesses in every program
but the last (triton_src/_activations.py), INT64 variants for n > 2^31 - MAX_BLOCK.
"""
import triton
import triton.language as tl

from build_tools.spec import DTYPES, ELEMENT_SIZE, KernelSpec, Variant
from triton_src._activations import block_start, load_f32, store

CPP_CONSTANTS = {"MAX_BLOCK": 4096}

# One 16-byte vector of each tensor per thread, 4 warps (bf16: 1024 elements per program, fp32: 512). H200 JIT sweep
# (scripts/tune_activations.py, bf16, 8192x14336; relu_squared 8192x16384): this was the fastest or within 0.1 % of
# it for every op and direction, level with torch.compile (swiglu fwd 0.1667 ms vs 0.1668); 16 elements per thread
# (4096 x 8 warps, the earlier choice) was up to 4.7 % slower (relu_squared fwd 0.1353 ms), and small tensors get
# four times the programs.
_WARPS = 4
_BLOCK = {dt: _WARPS * 32 * (16 // ELEMENT_SIZE[dt]) for dt in DTYPES}


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
def relu_squared_fwd_kernel(X, Y, n, BLOCK: tl.constexpr, INT64: tl.constexpr):
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _fwd_tile(X + start, Y + start, offs, rem, False)
    else:
        _fwd_tile(X + start, Y + start, offs, rem, True)


@triton.jit
def relu_squared_bwd_kernel(DY, X, DX, n, BLOCK: tl.constexpr, INT64: tl.constexpr):
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_tile(DY + start, X + start, DX + start, offs, rem, False)
    else:
        _bwd_tile(DY + start, X + start, DX + start, offs, rem, True)


# ---------------------------------------------------------------------------------------------------
# Specializations: dtype x 16-byte aligned pointers x 64-bit offsets (12 per kernel).


def _specs():
    fwd = KernelSpec(relu_squared_fwd_kernel)
    bwd = KernelSpec(relu_squared_bwd_kernel)
    assert max(_BLOCK.values()) <= CPP_CONSTANTS["MAX_BLOCK"]
    for dt in DTYPES:
        for aligned in (False, True):
            for int64 in (False, True):
                key = {"x_dtype": dt, "aligned": aligned, "int64": int64}
                cexpr = {"BLOCK": _BLOCK[dt], "INT64": int64}
                warps = _WARPS
                p = f"*{dt}"
                fwd.variants.append(Variant(key=key, signature={"X": p, "Y": p, "n": "i64"},
                                            constexprs=cexpr, num_warps=warps, aligned=aligned))
                bwd.variants.append(Variant(key=key, signature={"DY": p, "X": p, "DX": p, "n": "i64"},
                                            constexprs=cexpr, num_warps=warps, aligned=aligned))
    return [fwd, bwd]


KERNELS = _specs()
