"""SwiGLU kernels and the specializations built ahead of time.

y = silu(gate) * up, elementwise over two tensors of one shape. Computed in fp32 and rounded once.
The backward recomputes silu from gate (the forward output is not saved) and writes both gradients
in one pass: dup = dy * silu(gate), dgate = dy * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate).
swiglu_bwd_inplace_kernel is the backward of liger::swiglu_mlp, which saves gate and up but not the product:
it overwrites its three inputs, dy with the product silu(gate) * up (for down_proj's weight gradient), gate
with dgate and up with dup, so that the MLP's backward allocates nothing for them.

The launcher makes its inputs contiguous; the kernels see flat arrays of n elements. Each program owns
BLOCK consecutive elements: every program but the last loads and stores without a mask, so with
16-byte aligned pointers (the `aligned` variants) Triton emits 16-byte vector accesses; only the last
program takes the masked path. INT64 variants form the block start in 64 bits (n > 2^31 - MAX_BLOCK).
"""
import triton
import triton.language as tl

from build_tools.spec import DTYPES, KernelSpec, Variant
from triton_src._activations import FLAT_BLOCK, FLAT_WARPS, PDL_LAST_PROGRAMS, block_start, load_f32, store
from triton_src._rows import pdl_start

CPP_CONSTANTS = {"MAX_BLOCK": 4096}


@triton.jit
def _fwd_tile(G, U, Y, offs, n, MASKED: tl.constexpr):
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    store(Y, offs, g * tl.sigmoid(g) * u, n, MASKED)


@triton.jit
def _bwd_tile(DY, G, U, DG, DU, offs, n, MASKED: tl.constexpr):
    dy = load_f32(DY, offs, n, MASKED)
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    s = tl.sigmoid(g)
    store(DU, offs, dy * (g * s), n, MASKED)
    store(DG, offs, dy * u * s * (1.0 + g * (1.0 - s)), n, MASKED)


@triton.jit
def _bwd_inplace_tile(DY, G, U, offs, n, MASKED: tl.constexpr):
    # Every element is loaded before any is stored (the stores take values computed from all three loads); each
    # program owns its elements, so the three in-place writes never meet another program's reads.
    dy = load_f32(DY, offs, n, MASKED)
    g = load_f32(G, offs, n, MASKED)
    u = load_f32(U, offs, n, MASKED)
    s = tl.sigmoid(g)
    gs = g * s
    dg = dy * u * s * (1.0 + g * (1.0 - s))
    du = dy * gs
    store(DY, offs, gs * u, n, MASKED)
    store(G, offs, dg, n, MASKED)
    store(U, offs, du, n, MASKED)


@triton.jit
def swiglu_fwd_kernel(G, U, Y, n, BLOCK: tl.constexpr, INT64: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _fwd_tile(G + start, U + start, Y + start, offs, rem, False)
    else:
        _fwd_tile(G + start, U + start, Y + start, offs, rem, True)


@triton.jit
def swiglu_bwd_kernel(DY, G, U, DG, DU, n, BLOCK: tl.constexpr, INT64: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_tile(DY + start, G + start, U + start, DG + start, DU + start, offs, rem, False)
    else:
        _bwd_tile(DY + start, G + start, U + start, DG + start, DU + start, offs, rem, True)


@triton.jit
def swiglu_bwd_inplace_kernel(DY, G, U, n, BLOCK: tl.constexpr, INT64: tl.constexpr, PDL: tl.constexpr = False):
    pdl_start(PDL, PDL_LAST_PROGRAMS)
    start = block_start(BLOCK, INT64)
    offs = tl.arange(0, BLOCK)
    rem = n - start
    if BLOCK <= rem:
        _bwd_inplace_tile(DY + start, G + start, U + start, offs, rem, False)
    else:
        _bwd_inplace_tile(DY + start, G + start, U + start, offs, rem, True)


# ---------------------------------------------------------------------------------------------------
# Specializations: dtype x 16-byte aligned pointers x 64-bit offsets (12 per kernel), each launched as a
# programmatic dependent (_rows.pdl_start; arch < 90 builds drop it).


def _specs():
    fwd = KernelSpec(swiglu_fwd_kernel)
    bwd = KernelSpec(swiglu_bwd_kernel)
    bwd_inplace = KernelSpec(swiglu_bwd_inplace_kernel)
    assert max(FLAT_BLOCK.values()) <= CPP_CONSTANTS["MAX_BLOCK"]
    for dt in DTYPES:
        for aligned in (False, True):
            for int64 in (False, True):
                key = {"x_dtype": dt, "aligned": aligned, "int64": int64}
                cexpr = {"BLOCK": FLAT_BLOCK[dt], "INT64": int64, "PDL": True}
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
