"""FlashAttention-2 kernels (forward, backward) and the specializations built ahead of time.

One set of kernels serves fixed-length batches and packed (varlen) ones: a sequence is addressed as
base + b * stride_b + (start + i) * stride_s + h * stride_h, where a fixed batch has start = 0 and a packed
one has stride_b = 0 and start = cu_seqlens[b]. Masking is one rule for causal, sliding windows and the
sequence ends: query i (0-based in its sequence) sees key j iff
    i + (S_k - S_q) - window_left <= j <= i + (S_k - S_q) + window_right  and  j < S_k,
with causal = window_right 0 (bottom-right aligned, as flash-attn) and a negative window unbounded. The
windows are runtime arguments: every loop is split into masked boundary blocks and unmasked inner blocks
(the bounds are computed per program), so causal and windowed attention add no variants.

Scores are s = scale * q.k, soft-capped as softcap * tanh(s / softcap) when softcap > 0. The forward keeps
the online softmax in base 2 (scale * log2(e) folded in) and saves the natural-log LSE of each row in fp32;
rows that see no key get output 0 and LSE +inf (so the backward's exp(s - lse) is 0 there), as flash-attn.
The backward recomputes P from the LSE: delta = rowsum(dO * O) (preprocess), then dK/dV per key block
(looping over the query blocks and over the query heads of its GQA group: no atomics, deterministic) and
dQ per query block (a separate kernel: deterministic, no fp32 atomics).

Strides arrive divided by ALIGN (8 elements = 16 bytes) and are multiplied back by the constexpr, so
Triton proves 16-byte aligned rows; the launcher copies inputs whose strides do not allow that.
"""
import triton
import triton.language as tl

from build_tools.spec import KernelSpec, Variant

LOG2E = 1.4426950408889634

CPP_CONSTANTS = {
    "ALIGN_ELEMS": 8,
}

HEAD_DIMS = (64, 96, 128, 256)
DTYPES = ("bf16", "fp16")


@triton.jit
def _tanh(x):
    # tanh through exp2: no libdevice call, runs in the interpreter; saturates to +-1 for large |x|.
    return 1.0 - 2.0 / (tl.exp2(x * 2.8853900817779268) + 1.0)


@triton.jit
def _seq_bounds(CU, b, seqlen_fixed, is_varlen):
    """(first row, length) of sequence b: cu_seqlens[b], cu_seqlens[b + 1] - cu_seqlens[b] when packed."""
    start = b * 0
    seqlen = seqlen_fixed + b * 0
    if is_varlen:
        start = tl.load(CU + b)
        seqlen = tl.load(CU + b + 1) - start
    return start, seqlen


@triton.jit
def _load_tile(ptrs, row_mask, d_mask, MASK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
    if MASK_ROWS:
        if EVEN_D:
            return tl.load(ptrs, mask=row_mask[:, None], other=0.0)
        else:
            return tl.load(ptrs, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    else:
        if EVEN_D:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=d_mask[None, :], other=0.0)


@triton.jit
def _scores(qk, qk_scale, softcap, HAS_SOFTCAP: tl.constexpr):
    """Scores in base-2 units (s * log2 e) and, with soft-capping, tanh(s / softcap) for the derivative."""
    if HAS_SOFTCAP:
        t = _tanh(qk * (qk_scale / softcap))
        return t * (softcap * 1.4426950408889634), t
    else:
        return qk * (qk_scale * 1.4426950408889634), qk


@triton.jit
def _allowed(rows, cols, seqlen_k, diag, wl, wr):
    """[rows, cols] mask of the keys each query sees (rows, cols: positions within their sequences)."""
    rel = cols[None, :] - (rows[:, None] + diag)
    return (cols[None, :] < seqlen_k) & (rel >= -wl) & (rel <= wr)


@triton.jit
def _key_ranges(m0, seqlen_k, diag, wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key blocks seen by queries [m0, m0 + BLOCK_M): [lo, full_lo) and [full_hi, hi) need the mask,
    [full_lo, full_hi) is fully visible to every row of the block (rows past the end are never stored)."""
    lo = tl.maximum(m0 + diag - wl, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    hi = tl.minimum(m0 + BLOCK_M - 1 + diag + wr + 1, seqlen_k)
    hi = tl.maximum(hi, lo)
    full_lo = m0 + BLOCK_M - 1 + diag - wl
    full_lo = tl.minimum(tl.maximum(((full_lo + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, lo), hi)
    full_hi = tl.minimum(m0 + diag + wr + 1, seqlen_k)
    full_hi = tl.maximum((full_hi // BLOCK_N) * BLOCK_N, full_lo)
    full_hi = tl.minimum(full_hi, hi)
    full_lo = tl.minimum(full_lo, full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def _query_ranges(n0, seqlen_q, diag, wl, wr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query blocks that see keys [n0, n0 + BLOCK_N), split like _key_ranges: [lo, full_lo) and
    [full_hi, hi) need the mask, [full_lo, full_hi) sees every key of the block (the launcher makes sure
    the keys exist: a block running past S_k takes the masked path everywhere)."""
    lo = tl.maximum(n0 - diag - wr, 0)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = tl.minimum(n0 + BLOCK_N - 1 - diag + wl + 1, seqlen_q)
    hi = tl.maximum(hi, lo)
    full_lo = n0 + BLOCK_N - 1 - diag - wr
    full_lo = tl.minimum(tl.maximum(((full_lo + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, lo), hi)
    full_hi = tl.minimum(n0 - diag + wl + 1, seqlen_q)
    full_hi = tl.maximum((full_hi // BLOCK_M) * BLOCK_M, full_lo)
    full_hi = tl.minimum(full_hi, hi)
    full_lo = tl.minimum(full_lo, full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d, d_mask, start, stop,
               seqlen_k, diag, wl, wr, qk_scale, softcap, MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
               EVEN_D: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    # 64-bit row offsets are formed once; each step adds a scalar
    k_tile = k_base + offs_n.to(tl.int64)[:, None] * stride_ks + offs_d[None, :]
    v_tile = v_base + offs_n.to(tl.int64)[:, None] * stride_vs + offs_d[None, :]
    for n0 in range(start, stop, BLOCK_N):
        cols = n0 + offs_n
        k = _load_tile(k_tile + n0 * stride_ks, cols < seqlen_k, d_mask, MASKED, EVEN_D)
        qk = tl.dot(q, tl.trans(k))
        s, _ = _scores(qk, qk_scale, softcap, HAS_SOFTCAP)
        if MASKED:
            s = tl.where(_allowed(offs_m, cols, seqlen_k, diag, wl, wr), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_tile + n0 * stride_vs, cols < seqlen_k, d_mask, MASKED, EVEN_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def flash_attn_fwd_kernel(Q, K, V, O, LSE, CU_Q, CU_K, seqlen_q_fixed, seqlen_k_fixed, is_varlen, group,
                          stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                          stride_vb, stride_vs, stride_vh, stride_ob, stride_os, stride_oh,
                          stride_lse_b, stride_lse_h, qk_scale, softcap, window_left, window_right,
                          HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr, HAS_SOFTCAP: tl.constexpr, ALIGN: tl.constexpr):
    # Programs are ordered heaviest first (the last query blocks of causal attention see the most keys),
    # which shortens the tail of the grid.
    n_mblocks = tl.num_programs(0)
    pid_m = n_mblocks - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, seqlen_q = _seq_bounds(CU_Q, b, seqlen_q_fixed, is_varlen)
    k_start, seqlen_k = _seq_bounds(CU_K, b, seqlen_k_fixed, is_varlen)
    m0 = pid_m * BLOCK_M
    if m0 >= seqlen_q:
        return
    hk = h // group
    diag = seqlen_k - seqlen_q
    wl = tl.where(window_left < 0, seqlen_k, tl.minimum(window_left, seqlen_k))
    wr = tl.where(window_right < 0, seqlen_q, tl.minimum(window_right, seqlen_q))
    EVEN_D: tl.constexpr = HEAD_D == BLOCK_D
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_D
    row_mask = offs_m < seqlen_q
    q_base = Q + b.to(tl.int64) * (stride_qb * ALIGN) + q_start.to(tl.int64) * (stride_qs * ALIGN) \
        + h.to(tl.int64) * (stride_qh * ALIGN)
    k_base = K + b.to(tl.int64) * (stride_kb * ALIGN) + k_start.to(tl.int64) * (stride_ks * ALIGN) \
        + hk.to(tl.int64) * (stride_kh * ALIGN)
    v_base = V + b.to(tl.int64) * (stride_vb * ALIGN) + k_start.to(tl.int64) * (stride_vs * ALIGN) \
        + hk.to(tl.int64) * (stride_vh * ALIGN)
    q = _load_tile(q_base + offs_m.to(tl.int64)[:, None] * (stride_qs * ALIGN) + offs_d[None, :], row_mask, d_mask,
                   True, EVEN_D)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, full_lo, full_hi, hi = _key_ranges(m0, seqlen_k, diag, wl, wr, BLOCK_M, BLOCK_N)
    sks = stride_ks * ALIGN
    svs = stride_vs * ALIGN
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, full_lo, full_hi,
                               seqlen_k, diag, wl, wr, qk_scale, softcap, False, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, lo, full_lo,
                               seqlen_k, diag, wl, wr, qk_scale, softcap, True, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, full_hi, hi,
                               seqlen_k, diag, wl, wr, qk_scale, softcap, True, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    o_base = O + b.to(tl.int64) * (stride_ob * ALIGN) + q_start.to(tl.int64) * (stride_os * ALIGN) \
        + h.to(tl.int64) * (stride_oh * ALIGN)
    o_ptrs = o_base + offs_m.to(tl.int64)[:, None] * (stride_os * ALIGN) + offs_d[None, :]
    if EVEN_D:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_mask[:, None])
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])
    lse_base = LSE + b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start
    tl.store(lse_base + offs_m, lse, mask=row_mask)


@triton.jit
def flash_attn_bwd_preprocess_kernel(O, DO, DELTA, CU_Q, seqlen_q_fixed, is_varlen, stride_ob, stride_os,
                                     stride_oh, stride_dob, stride_dos, stride_doh, stride_lse_b, stride_lse_h,
                                     HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                                     ALIGN: tl.constexpr):
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, seqlen_q = _seq_bounds(CU_Q, b, seqlen_q_fixed, is_varlen)
    m0 = pid_m * BLOCK_M
    if m0 >= seqlen_q:
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_m < seqlen_q
    d_mask = offs_d < HEAD_D
    rows = (q_start + offs_m).to(tl.int64)[:, None]
    mask = row_mask[:, None] & d_mask[None, :]
    o = tl.load(O + b.to(tl.int64) * (stride_ob * ALIGN) + h.to(tl.int64) * (stride_oh * ALIGN)
                + rows * (stride_os * ALIGN) + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b.to(tl.int64) * (stride_dob * ALIGN) + h.to(tl.int64) * (stride_doh * ALIGN)
                 + rows * (stride_dos * ALIGN) + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    tl.store(DELTA + b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start + offs_m, delta,
             mask=row_mask)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qs, stride_dos, offs_n, offs_d, d_mask,
                start, stop, seqlen_q, seqlen_k, diag, wl, wr, qk_scale, softcap, MASKED: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr):
    # Works on transposed scores (keys x queries) so that dK and dV accumulate as [BLOCK_N, D] tiles.
    offs_m0 = tl.arange(0, BLOCK_M)
    q_tile = q_base + offs_m0.to(tl.int64)[:, None] * stride_qs + offs_d[None, :]
    do_tile = do_base + offs_m0.to(tl.int64)[:, None] * stride_dos + offs_d[None, :]
    for m0 in range(start, stop, BLOCK_M):
        offs_m = m0 + offs_m0
        row_mask = offs_m < seqlen_q
        q = _load_tile(q_tile + m0 * stride_qs, row_mask, d_mask, MASKED, EVEN_D)
        if MASKED:
            lse = tl.load(lse_base + offs_m, mask=row_mask, other=float("inf"))
        else:
            lse = tl.load(lse_base + offs_m)
        qkT = tl.dot(k, tl.trans(q))
        sT, tT = _scores(qkT, qk_scale, softcap, HAS_SOFTCAP)
        pT = tl.exp2(sT - (lse * 1.4426950408889634)[None, :])
        if MASKED:
            relT = offs_n[:, None] - (offs_m[None, :] + diag)
            allowedT = (offs_n[:, None] < seqlen_k) & (offs_m[None, :] < seqlen_q) & (relT >= -wl) & (relT <= wr)
            pT = tl.where(allowedT, pT, 0.0)
        do = _load_tile(do_tile + m0 * stride_dos, row_mask, d_mask, MASKED, EVEN_D)
        dv += tl.dot(pT.to(do.dtype), do)
        if MASKED:
            delta = tl.load(delta_base + offs_m, mask=row_mask, other=0.0)
        else:
            delta = tl.load(delta_base + offs_m)
        dpT = tl.dot(v, tl.trans(do))
        dsT = pT * (dpT - delta[None, :])
        if HAS_SOFTCAP:
            dsT = dsT * (1.0 - tT * tT)
        dk += tl.dot(dsT.to(q.dtype), q)
    return dk, dv


@triton.jit
def flash_attn_bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, seqlen_q_fixed, seqlen_k_fixed,
                               is_varlen, group, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                               stride_vb, stride_vs, stride_vh, stride_dob, stride_dos, stride_doh,
                               stride_dkb, stride_dks, stride_dkh, stride_dvb, stride_dvs, stride_dvh,
                               stride_lse_b, stride_lse_h, qk_scale, softcap, window_left, window_right,
                               HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_N: tl.constexpr, HAS_SOFTCAP: tl.constexpr, ALIGN: tl.constexpr):
    pid_n = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2)
    q_start, seqlen_q = _seq_bounds(CU_Q, b, seqlen_q_fixed, is_varlen)
    k_start, seqlen_k = _seq_bounds(CU_K, b, seqlen_k_fixed, is_varlen)
    n0 = pid_n * BLOCK_N
    if n0 >= seqlen_k:
        return
    diag = seqlen_k - seqlen_q
    wl = tl.where(window_left < 0, seqlen_k, tl.minimum(window_left, seqlen_k))
    wr = tl.where(window_right < 0, seqlen_q, tl.minimum(window_right, seqlen_q))
    EVEN_D: tl.constexpr = HEAD_D == BLOCK_D
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_D
    col_mask = offs_n < seqlen_k
    k_base = K + b.to(tl.int64) * (stride_kb * ALIGN) + k_start.to(tl.int64) * (stride_ks * ALIGN) \
        + hk.to(tl.int64) * (stride_kh * ALIGN)
    v_base = V + b.to(tl.int64) * (stride_vb * ALIGN) + k_start.to(tl.int64) * (stride_vs * ALIGN) \
        + hk.to(tl.int64) * (stride_vh * ALIGN)
    k = _load_tile(k_base + offs_n.to(tl.int64)[:, None] * (stride_ks * ALIGN) + offs_d[None, :], col_mask, d_mask,
                   True, EVEN_D)
    v = _load_tile(v_base + offs_n.to(tl.int64)[:, None] * (stride_vs * ALIGN) + offs_d[None, :], col_mask, d_mask,
                   True, EVEN_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, full_lo, full_hi, hi = _query_ranges(n0, seqlen_q, diag, wl, wr, BLOCK_M, BLOCK_N)
    if n0 + BLOCK_N > seqlen_k:
        # A key block running past the end: every query block takes the masked path.
        full_lo = hi
        full_hi = hi
    sqs = stride_qs * ALIGN
    sdos = stride_dos * ALIGN
    for g in range(0, group):
        h = hk * group + g
        q_base = Q + b.to(tl.int64) * (stride_qb * ALIGN) + q_start.to(tl.int64) * (stride_qs * ALIGN) \
            + h.to(tl.int64) * (stride_qh * ALIGN)
        do_base = DO + b.to(tl.int64) * (stride_dob * ALIGN) + q_start.to(tl.int64) * (stride_dos * ALIGN) \
            + h.to(tl.int64) * (stride_doh * ALIGN)
        lse_base = LSE + b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start
        delta_base = DELTA + b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sdos, offs_n, offs_d, d_mask,
                             full_lo, full_hi, seqlen_q, seqlen_k, diag, wl, wr, qk_scale, softcap, False,
                             HAS_SOFTCAP, EVEN_D, BLOCK_M)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sdos, offs_n, offs_d, d_mask,
                             lo, full_lo, seqlen_q, seqlen_k, diag, wl, wr, qk_scale, softcap, True,
                             HAS_SOFTCAP, EVEN_D, BLOCK_M)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sdos, offs_n, offs_d, d_mask,
                             full_hi, hi, seqlen_q, seqlen_k, diag, wl, wr, qk_scale, softcap, True,
                             HAS_SOFTCAP, EVEN_D, BLOCK_M)
    dk = dk * qk_scale
    store_mask = col_mask[:, None] & d_mask[None, :]
    dk_base = DK + b.to(tl.int64) * (stride_dkb * ALIGN) + k_start.to(tl.int64) * (stride_dks * ALIGN) \
        + hk.to(tl.int64) * (stride_dkh * ALIGN)
    dv_base = DV + b.to(tl.int64) * (stride_dvb * ALIGN) + k_start.to(tl.int64) * (stride_dvs * ALIGN) \
        + hk.to(tl.int64) * (stride_dvh * ALIGN)
    tl.store(dk_base + offs_n.to(tl.int64)[:, None] * (stride_dks * ALIGN) + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=store_mask)
    tl.store(dv_base + offs_n.to(tl.int64)[:, None] * (stride_dvs * ALIGN) + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=store_mask)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, k_base, v_base, stride_ks, stride_vs, offs_m, offs_d, d_mask, start, stop,
              seqlen_k, diag, wl, wr, qk_scale, softcap, MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
              EVEN_D: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    k_tile = k_base + offs_n.to(tl.int64)[:, None] * stride_ks + offs_d[None, :]
    v_tile = v_base + offs_n.to(tl.int64)[:, None] * stride_vs + offs_d[None, :]
    for n0 in range(start, stop, BLOCK_N):
        cols = n0 + offs_n
        k = _load_tile(k_tile + n0 * stride_ks, cols < seqlen_k, d_mask, MASKED, EVEN_D)
        v = _load_tile(v_tile + n0 * stride_vs, cols < seqlen_k, d_mask, MASKED, EVEN_D)
        qk = tl.dot(q, tl.trans(k))
        s, t = _scores(qk, qk_scale, softcap, HAS_SOFTCAP)
        p = tl.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(_allowed(offs_m, cols, seqlen_k, diag, wl, wr), p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if HAS_SOFTCAP:
            ds = ds * (1.0 - t * t)
        dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def flash_attn_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, seqlen_q_fixed, seqlen_k_fixed, is_varlen,
                             group, stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh,
                             stride_vb, stride_vs, stride_vh, stride_dob, stride_dos, stride_doh,
                             stride_dqb, stride_dqs, stride_dqh, stride_lse_b, stride_lse_h, qk_scale, softcap,
                             window_left, window_right, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
                             ALIGN: tl.constexpr):
    n_mblocks = tl.num_programs(0)
    pid_m = n_mblocks - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, seqlen_q = _seq_bounds(CU_Q, b, seqlen_q_fixed, is_varlen)
    k_start, seqlen_k = _seq_bounds(CU_K, b, seqlen_k_fixed, is_varlen)
    m0 = pid_m * BLOCK_M
    if m0 >= seqlen_q:
        return
    hk = h // group
    diag = seqlen_k - seqlen_q
    wl = tl.where(window_left < 0, seqlen_k, tl.minimum(window_left, seqlen_k))
    wr = tl.where(window_right < 0, seqlen_q, tl.minimum(window_right, seqlen_q))
    EVEN_D: tl.constexpr = HEAD_D == BLOCK_D
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_D
    row_mask = offs_m < seqlen_q
    q_base = Q + b.to(tl.int64) * (stride_qb * ALIGN) + q_start.to(tl.int64) * (stride_qs * ALIGN) \
        + h.to(tl.int64) * (stride_qh * ALIGN)
    do_base = DO + b.to(tl.int64) * (stride_dob * ALIGN) + q_start.to(tl.int64) * (stride_dos * ALIGN) \
        + h.to(tl.int64) * (stride_doh * ALIGN)
    k_base = K + b.to(tl.int64) * (stride_kb * ALIGN) + k_start.to(tl.int64) * (stride_ks * ALIGN) \
        + hk.to(tl.int64) * (stride_kh * ALIGN)
    v_base = V + b.to(tl.int64) * (stride_vb * ALIGN) + k_start.to(tl.int64) * (stride_vs * ALIGN) \
        + hk.to(tl.int64) * (stride_vh * ALIGN)
    q = _load_tile(q_base + offs_m.to(tl.int64)[:, None] * (stride_qs * ALIGN) + offs_d[None, :], row_mask, d_mask,
                   True, EVEN_D)
    do = _load_tile(do_base + offs_m.to(tl.int64)[:, None] * (stride_dos * ALIGN) + offs_d[None, :], row_mask,
                    d_mask, True, EVEN_D)
    lse_off = b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start
    lse2 = tl.load(LSE + lse_off + offs_m, mask=row_mask, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + lse_off + offs_m, mask=row_mask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, full_lo, full_hi, hi = _key_ranges(m0, seqlen_k, diag, wl, wr, BLOCK_M, BLOCK_N)
    sks = stride_ks * ALIGN
    svs = stride_vs * ALIGN
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, full_lo, full_hi,
                   seqlen_k, diag, wl, wr, qk_scale, softcap, False, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, lo, full_lo,
                   seqlen_k, diag, wl, wr, qk_scale, softcap, True, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, sks, svs, offs_m, offs_d, d_mask, full_hi, hi,
                   seqlen_k, diag, wl, wr, qk_scale, softcap, True, HAS_SOFTCAP, EVEN_D, BLOCK_N)
    dq = dq * qk_scale
    dq_base = DQ + b.to(tl.int64) * (stride_dqb * ALIGN) + q_start.to(tl.int64) * (stride_dqs * ALIGN) \
        + h.to(tl.int64) * (stride_dqh * ALIGN)
    tl.store(dq_base + offs_m.to(tl.int64)[:, None] * (stride_dqs * ALIGN) + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])


# ---------------------------------------------------------------------------------------------------
# Specializations
#
# Per kernel and padded head dim: (BLOCK_M, BLOCK_N, num_warps, num_stages). Every variant is built for every
# arch, so one table must fit the smallest shared memory among them: ~99 KB per block (sm_120, and the 8.6/8.9
# parts that run the sm_80 cubins). Tiles are sized as Q + stages * (K + V) <= 96 KB for the forward and
# dQ, K + V + stages * (Q + dO) <= 96 KB for dK/dV. BLOCK_M of 128 with 8 warps gives Hopper's wgmma two
# warpgroups of 64 rows each.
TILES = {
    "fwd": {64: (128, 128, 8, 2), 128: (128, 64, 8, 2), 256: (64, 32, 4, 2)},
    "dkdv": {64: (32, 128, 4, 3), 128: (32, 64, 4, 3), 256: (32, 32, 4, 1)},
    "dq": {64: (128, 64, 8, 2), 128: (64, 32, 4, 3), 256: (32, 32, 4, 1)},
}
PREPROCESS_BLOCK_M = 64


def _block_d(head_dim):
    return triton.next_power_of_2(head_dim)


def _strides(*names):
    return {f"stride_{n}{a}": "i64" for n in names for a in ("b", "s", "h")}


def _fwd_sig(dt):
    return {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "O": f"*{dt}", "LSE": "*fp32", "CU_Q": "*i32",
            "CU_K": "*i32", "seqlen_q_fixed": "i32", "seqlen_k_fixed": "i32", "is_varlen": "i1", "group": "i32",
            **_strides("q", "k", "v", "o"), "stride_lse_b": "i64", "stride_lse_h": "i64", "qk_scale": "fp32",
            "softcap": "fp32", "window_left": "i32", "window_right": "i32"}


def _preprocess_sig(dt):
    return {"O": f"*{dt}", "DO": f"*{dt}", "DELTA": "*fp32", "CU_Q": "*i32", "seqlen_q_fixed": "i32",
            "is_varlen": "i1", **_strides("o", "do"), "stride_lse_b": "i64", "stride_lse_h": "i64"}


def _dkdv_sig(dt):
    return {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "DO": f"*{dt}", "LSE": "*fp32", "DELTA": "*fp32",
            "DK": f"*{dt}", "DV": f"*{dt}", "CU_Q": "*i32", "CU_K": "*i32", "seqlen_q_fixed": "i32",
            "seqlen_k_fixed": "i32", "is_varlen": "i1", "group": "i32", **_strides("q", "k", "v", "do", "dk", "dv"),
            "stride_lse_b": "i64", "stride_lse_h": "i64", "qk_scale": "fp32", "softcap": "fp32",
            "window_left": "i32", "window_right": "i32"}


def _dq_sig(dt):
    return {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "DO": f"*{dt}", "LSE": "*fp32", "DELTA": "*fp32",
            "DQ": f"*{dt}", "CU_Q": "*i32", "CU_K": "*i32", "seqlen_q_fixed": "i32", "seqlen_k_fixed": "i32",
            "is_varlen": "i1", "group": "i32", **_strides("q", "k", "v", "do", "dq"), "stride_lse_b": "i64",
            "stride_lse_h": "i64", "qk_scale": "fp32", "softcap": "fp32", "window_left": "i32",
            "window_right": "i32"}


def _specs():
    fwd = KernelSpec(flash_attn_fwd_kernel)
    pre = KernelSpec(flash_attn_bwd_preprocess_kernel)
    dkdv = KernelSpec(flash_attn_bwd_dkdv_kernel)
    dq = KernelSpec(flash_attn_bwd_dq_kernel)
    for dt in DTYPES:
        for hd in HEAD_DIMS:
            bd = _block_d(hd)
            pre.variants.append(Variant(
                key={"qkv_dtype": dt, "head_dim": hd}, signature=_preprocess_sig(dt),
                constexprs={"HEAD_D": hd, "BLOCK_D": bd, "BLOCK_M": PREPROCESS_BLOCK_M, "ALIGN": 8},
                num_warps=4, aligned=True))
            for spec, sig, kind in ((fwd, _fwd_sig, "fwd"), (dkdv, _dkdv_sig, "dkdv"), (dq, _dq_sig, "dq")):
                bm, bn, warps, stages = TILES[kind][bd]
                for softcap in (False, True):
                    spec.variants.append(Variant(
                        key={"qkv_dtype": dt, "head_dim": hd, "softcap": softcap}, signature=sig(dt),
                        constexprs={"HEAD_D": hd, "BLOCK_D": bd, "BLOCK_M": bm, "BLOCK_N": bn,
                                    "HAS_SOFTCAP": softcap, "ALIGN": 8},
                        num_warps=warps, num_stages=stages, aligned=True))
    return [fwd, pre, dkdv, dq]


KERNELS = _specs()
