"""Rotary position embedding kernels (Hugging Face rotate-half RoPE, partial rotary, Llama 4 interleaved pairs).

One program per token (b, s): it loads that token's cos/sin row once and rotates every head of q and k as
[BLOCK_H, BLOCK_C] tiles, in fp32, reading q/k and writing the outputs through their own strides (views of a
fused QKV projection or HF's `.view(B, S, H, D).transpose(1, 2)` need no copy). Tensors are seen as
(batch, token, head, column) whatever their logical order; cos/sin as (batch, token, column) with a batch
stride of 0 when they broadcast over the batch.

Rotate-half (Hugging Face `apply_rotary_pos_emb`): the first R = 2 * half columns rotate, x1 = x[:half],
x2 = x[half:R], and columns R..D pass through:
    forward   o1 = x1 * c1 - x2 * s1      o2 = x2 * c2 + x1 * s2
    backward  d1 = g1 * c1 + g2 * s2      d2 = g2 * c2 - g1 * s1
(the backward is the transpose of the forward's linear map: the cos terms are diagonal, and the s1 term moves
x2 into o1, so its transpose moves g1 into d2.) Both use one kernel: o1 = x1 * c1 + x2 * a1, o2 = x2 * c2 + x1 * a2
with (a1, a2) = (-s1, s2) forward and (s2, -s1) backward, chosen by a runtime flag: a select on the cos/sin
chunk per program, where a constexpr would double the variants (not yet measured on a GPU; memory-bound either way).

Interleaved (Llama 4 complex rotation, x viewed as complex pairs (x[2i], x[2i+1]) times freqs_cis[i]): x1 and x2
are the even and odd columns and c1 = c2 = Re(freqs_cis), s1 = s2 = Im(freqs_cis) (cos/sin rows hold `half`
values); the backward multiplies by the conjugate, which is the same formula.

When there are few tokens (short sequences) the grid's second dimension splits each token's heads between
programs, so that the GPU still has enough programs in flight; each of them reloads the cos/sin row (from L2).

Aligned variants are promised 16-byte aligned pointers and strides, half and D that are multiples of ALIGN
elements (CALIGN for cos/sin): that lets Triton emit 16-byte loads and stores.
"""
import triton
import triton.language as tl

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant

CPP_CONSTANTS = {
    "MIN_BLOCK_C": 16,
    "MAX_BLOCK_C": 128,
}

# (q/k dtype, cos/sin dtype) pairs built for rotate-half; the launcher converts any other cos/sin dtype to fp32.
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]
# Llama 4 computes the rotation in fp32 from complex64 freqs_cis: its cos/sin are always fp32.
INTERLEAVED_PAIRS = [("fp32", "fp32"), ("bf16", "fp32"), ("fp16", "fp32")]


@triton.jit
def _rotate_heads(X, O, x_tok, o_tok, n_heads, sxh, soh, c0, half, c1, c2, a1, a2,
                  BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, INTERLEAVED: tl.constexpr):
    # Head blocks are dealt round-robin to the programs of the grid's second dimension.
    DT: tl.constexpr = O.dtype.element_ty
    cols = c0 + tl.arange(0, BLOCK_C)
    cmask = cols < half
    # Interleaved: the 2 * BLOCK_C columns of the pairs are loaded as one contiguous tile (16-byte vectors when
    # aligned) and split into even and odd columns in registers.
    pcols = 2 * c0 + tl.arange(0, 2 * BLOCK_C)
    pmask = pcols < 2 * half
    for h0 in range(tl.program_id(1) * BLOCK_H, n_heads, tl.num_programs(1) * BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        hmask = (heads < n_heads)[:, None]
        xp = X + x_tok + heads.to(tl.int64)[:, None] * sxh
        op = O + o_tok + heads.to(tl.int64)[:, None] * soh
        if INTERLEAVED:
            m = hmask & pmask[None, :]
            x = tl.load(xp + pcols[None, :], mask=m, other=0.0).to(tl.float32)
            x1, x2 = tl.split(tl.reshape(x, [BLOCK_H, BLOCK_C, 2]))
            o = tl.reshape(tl.join(x1 * c1 + x2 * a1, x2 * c2 + x1 * a2), [BLOCK_H, 2 * BLOCK_C])
            tl.store(op + pcols[None, :], o.to(DT), mask=m)
        else:
            m = hmask & cmask[None, :]
            x1 = tl.load(xp + cols[None, :], mask=m, other=0.0).to(tl.float32)
            x2 = tl.load(xp + half + cols[None, :], mask=m, other=0.0).to(tl.float32)
            tl.store(op + cols[None, :], (x1 * c1 + x2 * a1).to(DT), mask=m)
            tl.store(op + half + cols[None, :], (x2 * c2 + x1 * a2).to(DT), mask=m)


@triton.jit
def _copy_heads(X, O, x_tok, o_tok, n_heads, sxh, soh, cols, cmask, BLOCK_H: tl.constexpr):
    for h0 in range(tl.program_id(1) * BLOCK_H, n_heads, tl.num_programs(1) * BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        m = (heads < n_heads)[:, None] & cmask[None, :]
        x = tl.load(X + x_tok + heads.to(tl.int64)[:, None] * sxh + cols[None, :], mask=m, other=0.0)
        tl.store(O + o_tok + heads.to(tl.int64)[:, None] * soh + cols[None, :], x, mask=m)


@triton.jit
def _coefficients(cos_row, sin_row, c0, half, bwd, BLOCK_C: tl.constexpr, INTERLEAVED: tl.constexpr):
    """The cos/sin chunk at columns c0.. as [1, BLOCK_C] rows (c1, c2, a1, a2) of o1 = x1 * c1 + x2 * a1,
    o2 = x2 * c2 + x1 * a2: (a1, a2) = (-s1, s2) forward, (s2, -s1) backward (bwd a boolean)."""
    cols = c0 + tl.arange(0, BLOCK_C)
    cmask = cols < half
    c1 = tl.load(cos_row + cols, mask=cmask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_row + cols, mask=cmask, other=0.0).to(tl.float32)
    if INTERLEAVED:
        c2 = c1
        s2 = s1
    else:
        c2 = tl.load(cos_row + half + cols, mask=cmask, other=0.0).to(tl.float32)
        s2 = tl.load(sin_row + half + cols, mask=cmask, other=0.0).to(tl.float32)
    a1 = tl.where(bwd, s2, -s1)[None, :]
    a2 = tl.where(bwd, -s1, s2)[None, :]
    return c1[None, :], c2[None, :], a1, a2


@triton.jit
def rope_kernel(Q, K, COS, SIN, OQ, OK, seq_len, n_q_heads, n_k_heads, half_v, d_v,
                sqb, sqs, sqh, skb, sks, skh, soqb, soqs, soqh, sokb, soks, sokh, scb, scs, ssb, sss, backward,
                BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr, CALIGN: tl.constexpr,
                INTERLEAVED: tl.constexpr):
    # Sizes and strides arrive divided by ALIGN (q/k/outputs) or CALIGN (cos/sin) so that Triton can prove
    # 16-byte alignment; all offsets are int64 (tensors of more than 2^31 elements).
    tok = tl.program_id(0)
    b = (tok // seq_len).to(tl.int64)
    s = (tok % seq_len).to(tl.int64)
    half = half_v * ALIGN
    d = d_v * ALIGN
    q_tok = b * (sqb * ALIGN) + s * (sqs * ALIGN)
    k_tok = b * (skb * ALIGN) + s * (sks * ALIGN)
    oq_tok = b * (soqb * ALIGN) + s * (soqs * ALIGN)
    ok_tok = b * (sokb * ALIGN) + s * (soks * ALIGN)
    cos_row = COS + b * (scb * CALIGN) + s * (scs * CALIGN)
    sin_row = SIN + b * (ssb * CALIGN) + s * (sss * CALIGN)
    for c0 in range(0, half, BLOCK_C):
        c1, c2, a1, a2 = _coefficients(cos_row, sin_row, c0, half, backward != 0, BLOCK_C, INTERLEAVED)
        _rotate_heads(Q, OQ, q_tok, oq_tok, n_q_heads, sqh * ALIGN, soqh * ALIGN, c0, half, c1, c2, a1, a2,
                      BLOCK_H, BLOCK_C, INTERLEAVED)
        _rotate_heads(K, OK, k_tok, ok_tok, n_k_heads, skh * ALIGN, sokh * ALIGN, c0, half, c1, c2, a1, a2,
                      BLOCK_H, BLOCK_C, INTERLEAVED)
    if not INTERLEAVED:
        # Partial rotary: columns R..D are copied (nothing to do when R == D, the common case).
        for p0 in range(2 * half, d, 2 * BLOCK_C):
            cols = p0 + tl.arange(0, 2 * BLOCK_C)
            cmask = cols < d
            _copy_heads(Q, OQ, q_tok, oq_tok, n_q_heads, sqh * ALIGN, soqh * ALIGN, cols, cmask, BLOCK_H)
            _copy_heads(K, OK, k_tok, ok_tok, n_k_heads, skh * ALIGN, sokh * ALIGN, cols, cmask, BLOCK_H)


@triton.jit
def rope_kv_cache_kernel(Q, K, V, COS, SIN, OQ, KC, VC, POS, seq_len, cache_len, n_q_heads, n_k_heads, half_v, d_v,
                         sqb, sqs, sqh, skb, sks, skh, svb, svs, svh, soqb, soqs, soqh, skcb, skcs, skch,
                         svcb, svcs, svch, scb, scs, ssb, sss,
                         BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr, CALIGN: tl.constexpr):
    # rope_kernel's rotate-half forward for one token (b, s), with k's output row and v's copy written into the
    # static caches at slot POS[s] of batch row b (decoding: no index_copy_ launches, the slot never read on the
    # host). A slot outside [0, cache_len) writes nothing: the kernel cannot raise without a host sync.
    tok = tl.program_id(0)
    b = (tok // seq_len).to(tl.int64)
    s = (tok % seq_len).to(tl.int64)
    slot = tl.load(POS + s).to(tl.int64)
    in_cache = (slot >= 0) & (slot < cache_len)
    slot = tl.where(in_cache, slot, 0)
    n_kv = tl.where(in_cache, n_k_heads, 0)
    half = half_v * ALIGN
    d = d_v * ALIGN
    q_tok = b * (sqb * ALIGN) + s * (sqs * ALIGN)
    k_tok = b * (skb * ALIGN) + s * (sks * ALIGN)
    v_tok = b * (svb * ALIGN) + s * (svs * ALIGN)
    oq_tok = b * (soqb * ALIGN) + s * (soqs * ALIGN)
    kc_tok = b * (skcb * ALIGN) + slot * (skcs * ALIGN)
    vc_tok = b * (svcb * ALIGN) + slot * (svcs * ALIGN)
    cos_row = COS + b * (scb * CALIGN) + s * (scs * CALIGN)
    sin_row = SIN + b * (ssb * CALIGN) + s * (sss * CALIGN)
    for c0 in range(0, half, BLOCK_C):
        c1, c2, a1, a2 = _coefficients(cos_row, sin_row, c0, half, False, BLOCK_C, False)
        _rotate_heads(Q, OQ, q_tok, oq_tok, n_q_heads, sqh * ALIGN, soqh * ALIGN, c0, half, c1, c2, a1, a2,
                      BLOCK_H, BLOCK_C, False)
        _rotate_heads(K, KC, k_tok, kc_tok, n_kv, skh * ALIGN, skch * ALIGN, c0, half, c1, c2, a1, a2,
                      BLOCK_H, BLOCK_C, False)
    for p0 in range(2 * half, d, 2 * BLOCK_C):
        cols = p0 + tl.arange(0, 2 * BLOCK_C)
        cmask = cols < d
        _copy_heads(Q, OQ, q_tok, oq_tok, n_q_heads, sqh * ALIGN, soqh * ALIGN, cols, cmask, BLOCK_H)
        _copy_heads(K, KC, k_tok, kc_tok, n_kv, skh * ALIGN, skch * ALIGN, cols, cmask, BLOCK_H)
    for p0 in range(0, d, 2 * BLOCK_C):
        cols = p0 + tl.arange(0, 2 * BLOCK_C)
        cmask = cols < d
        _copy_heads(V, VC, v_tok, vc_tok, n_kv, svh * ALIGN, svch * ALIGN, cols, cmask, BLOCK_H)


# ---------------------------------------------------------------------------------------------------
# Specializations


def _align(dtype):
    return 16 // ELEMENT_SIZE[dtype]


def _blocks():
    b = CPP_CONSTANTS["MIN_BLOCK_C"]
    while b <= CPP_CONSTANTS["MAX_BLOCK_C"]:
        yield b
        b *= 2


def _block_h(block_c):
    # About 1024 elements of x1 (and as many of x2) per step, at most 16 heads (GQA k often has 8).
    return max(1, min(16, 1024 // block_c))


def _sig(xd, cd):
    sig = {"Q": f"*{xd}", "K": f"*{xd}", "COS": f"*{cd}", "SIN": f"*{cd}", "OQ": f"*{xd}", "OK": f"*{xd}",
           "seq_len": "i32", "n_q_heads": "i32", "n_k_heads": "i32", "half_v": "i32", "d_v": "i32"}
    for name in ("sqb", "sqs", "sqh", "skb", "sks", "skh", "soqb", "soqs", "soqh", "sokb", "soks", "sokh",
                 "scb", "scs", "ssb", "sss"):
        sig[name] = "i64"
    sig["backward"] = "i32"
    return sig


def _specs():
    spec = KernelSpec(rope_kernel)
    for interleaved, pairs in ((False, DTYPE_PAIRS), (True, INTERLEAVED_PAIRS)):
        for aligned in (False, True):
            for xd, cd in pairs:
                for block_c in _blocks():
                    spec.variants.append(Variant(
                        key={"x_dtype": xd, "cs_dtype": cd, "block_c": block_c, "aligned": aligned,
                             "interleaved": interleaved},
                        signature=_sig(xd, cd),
                        constexprs={"BLOCK_H": _block_h(block_c), "BLOCK_C": block_c,
                                    "ALIGN": _align(xd) if aligned else 1, "CALIGN": _align(cd) if aligned else 1,
                                    "INTERLEAVED": interleaved},
                        num_warps=4, aligned=aligned))
    return [spec, _kv_cache_spec()]


# rope_kv_cache: one column block (BLOCK_C 64, the columns looped) per dtype pair and alignment; it serves decoding,
# where a step has a few tokens and the launch, not the loop, is the cost.
KV_CACHE_BLOCK_C = 64


def _kv_cache_spec():
    spec = KernelSpec(rope_kv_cache_kernel)
    for aligned in (False, True):
        for xd, cd in DTYPE_PAIRS:
            sig = {"Q": f"*{xd}", "K": f"*{xd}", "V": f"*{xd}", "COS": f"*{cd}", "SIN": f"*{cd}", "OQ": f"*{xd}",
                   "KC": f"*{xd}", "VC": f"*{xd}", "POS": "*i64", "seq_len": "i32", "cache_len": "i64",
                   "n_q_heads": "i32", "n_k_heads": "i32", "half_v": "i32", "d_v": "i32"}
            for name in ("sqb", "sqs", "sqh", "skb", "sks", "skh", "svb", "svs", "svh", "soqb", "soqs", "soqh",
                         "skcb", "skcs", "skch", "svcb", "svcs", "svch", "scb", "scs", "ssb", "sss"):
                sig[name] = "i64"
            spec.variants.append(Variant(
                key={"x_dtype": xd, "cs_dtype": cd, "aligned": aligned},
                signature=sig,
                constexprs={"BLOCK_H": _block_h(KV_CACHE_BLOCK_C), "BLOCK_C": KV_CACHE_BLOCK_C,
                            "ALIGN": _align(xd) if aligned else 1, "CALIGN": _align(cd) if aligned else 1},
                num_warps=4, aligned=aligned))
    return spec


KERNELS = _specs()
