"""@triton.jit helpers shared by the elementwise activation kernels (swiglu, geglu, relu_squared, dyt).

Flat kernels: each program owns BLOCK consecutive elements of contiguous arrays of n elements. Every
program but the last takes the unmasked path (MASKED=False), which Triton turns into 16-byte vector
accesses when the pointers are promised 16-byte aligned; the last program masks.
"""
import triton
import triton.language as tl

from build_tools.spec import DTYPES, ELEMENT_SIZE

# Launch shape of every flat kernel: one 16-byte vector of each tensor per thread, 4 warps (bf16: 1024 elements
# per program, fp32: 512). H200 JIT sweep (scripts/tune_activations.py, bf16, 8192x14336; relu_squared
# 8192x16384): the fastest or within 0.1 % of it for swiglu, geglu and relu_squared in both directions, level with
# torch.compile (swiglu fwd 0.1667 ms vs 0.1668); 16 elements per thread (4096 x 8 warps, the earlier choice) was
# up to 4.7 % slower (relu_squared fwd 0.1353 ms), and small tensors get four times the programs.
FLAT_WARPS = 4
FLAT_BLOCK = {dt: FLAT_WARPS * 32 * (16 // ELEMENT_SIZE[dt]) for dt in DTYPES}


# PDL_LAST_PROGRAMS: the flat kernels are launched as programmatic dependents (_rows.pdl_start), and only their last
# this many programs let the next kernel launch, so that its programs take the SMs as this kernel's last wave leaves
# them: an H200's 132 SMs hold 16 programs of 4 warps each. H200 JIT (scripts/stream_hint_probe.py, bf16, fwd + bwd
# chains): ReLU² 8192 x 16384 315.5 us against 316.6 without PDL and 344.8 with launch_dependents in every program
# (which also made the forward alone 24 % slower, 0.1615 against 0.1302 ms); 8192 x 4096 86.1 against 87.4 and
# 91.1; SwiGLU 8192 x 14336 437.1 against 439.6. The forward alone is within 0.15 us of the kernel without PDL at
# every size.
PDL_LAST_PROGRAMS = tl.constexpr(132 * 16)


@triton.jit
def block_start(BLOCK: tl.constexpr, INT64: tl.constexpr):
    """First element of this program's block: 64-bit when the last block's end may pass INT32_MAX.

    Kernels add it to their pointers and index the block with 32-bit offsets (masked against n - start): 64-bit
    offsets per element took 153 registers instead of 80 in swiglu's backward (ptxas, sm_90a)."""
    pid = tl.program_id(0)
    if INT64:
        start = pid.to(tl.int64) * BLOCK
    else:
        start = pid * BLOCK
    return start


@triton.jit
def load_f32(P, offs, n, MASKED: tl.constexpr):
    if MASKED:
        v = tl.load(P + offs, mask=offs < n, other=0.0)
    else:
        v = tl.load(P + offs)
    return v.to(tl.float32)


@triton.jit
def store(P, offs, v, n, MASKED: tl.constexpr):
    """Rounds v to P's element type once and stores it."""
    if MASKED:
        tl.store(P + offs, v.to(P.dtype.element_ty), mask=offs < n)
    else:
        tl.store(P + offs, v.to(P.dtype.element_ty))


@triton.jit
def tanh_parts(z):
    """tanh(z), 1 + tanh(z) and 1 - tanh(z)^2 in fp32, each without cancellation.

    From e = exp(-2|z|): |tanh| = (1 - e) / (1 + e), 1 - tanh^2 = 4e / (1 + e)^2 and, for z < 0,
    1 + tanh = 2e / (1 + e); written as 1 - tanh^2 and 1 + tanh these lose every digit where tanh is
    near -1 or 1 (d gelu_tanh at x = 4.6 was 1.6e-6 off in fp32). Below |z| = 1/8, where 1 - e cancels,
    tanh is its Taylor series to z^7 (next term < 3e-9 relative there).
    """
    a = tl.abs(z)
    e = tl.exp(-2.0 * a)
    r = 1.0 / (1.0 + e)
    z2 = z * z
    series = z * (1.0 + z2 * (-0.3333333333333333 + z2 * (0.13333333333333333 + z2 * -0.05396825396825397)))
    t_big = (1.0 - e) * r
    t = tl.where(a < 0.125, series, tl.where(z < 0, -t_big, t_big))
    one_plus_t = tl.where(z < 0, 2.0 * e * r, 1.0 + t)
    sech2 = 4.0 * e * r * r
    return t, one_plus_t, sech2


LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _exp_neg_and_recip(a):
    """e = exp(-a) for a >= 0 and r = 1 / (1 + e), with the bare MUFU instructions: e lies in [0, 1] and 1 + e
    in [1, 2], so neither needs the range fix-ups that tl.exp and fp32 division add around ex2 and rcp (about 6
    instructions per element). The .ftz forms flush an e below 2^-126 to 0, which changes nothing here."""
    e = tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [a * -LOG2E], dtype=tl.float32,
                                  is_pure=True, pack=1)
    r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [1.0 + e], dtype=tl.float32,
                                  is_pure=True, pack=1)
    return e, r


@triton.jit
def tanh_fast(z):
    """tanh(z) and 1 - tanh(z)^2 in fp32 without tanh_parts' series: ~8 instructions instead of ~20.

    From e = exp(-2|z|), r = 1 / (1 + e): |tanh| = (1 - e) r, 1 - tanh^2 = 4 e r^2. Below |z| ~ 1/8 the
    difference 1 - e leaves an absolute error of a few fp32 ulps of 1 (not of tanh): far below a 16-bit
    result's rounding, which is what the kernels that call it store (fp32 ones use tanh_parts). The
    elementwise kernels are issue-bound at HBM rate on sm_90 (~30 instructions per element for a 16-bit
    read + write), so the series' instructions cost bandwidth."""
    e, r = _exp_neg_and_recip(2.0 * tl.abs(z))
    t_abs = (1.0 - e) * r
    return tl.where(z < 0, -t_abs, t_abs), 4.0 * e * r * r


@triton.jit
def sigmoid_parts(z):
    """sigmoid(z) and sigmoid(z) * (1 - sigmoid(z)) in fp32, stable for any z (no overflow, no cancellation):
    e = exp(-|z|), r = 1 / (1 + e): sigmoid = r for z >= 0, e r below; sigmoid (1 - sigmoid) = e r^2."""
    e, r = _exp_neg_and_recip(tl.abs(z))
    return tl.where(z < 0, e * r, r), e * r * r
