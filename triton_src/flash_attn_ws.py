"""FlashAttention forward for Hopper (sm_90a) in Gluon: TMA loads, wgmma, warp specialization, two ping-pong
consumer warpgroups. liger::flash_attn takes it instead of flash_attn.py's Triton forward where its conditions hold
(the launcher in csrc/ops/flash_attn.cpp checks them): sm_90, fixed-length batches with S_q == S_k, no window or
soft-cap, head dim 64/128/256, bf16/fp16, a positive scale, q/k/v [B, S, H, D] with unit stride along D and
16-byte multiples elsewhere (the layouts Hugging Face passes included), and causal rows longer than 512.

One program per (batch x head, 128-query tile); the grid's first axis is batch x head, so the first wave holds one
tile of every head, and under causal masking the longest tiles (the last query tiles) start first.
- the producer partition (1 warp, 24 registers) loads the two 64-row halves of the Q tile once, then K and V tiles
  into a STAGES-deep shared-memory ring through TMA, one mbarrier pair (ready / empty) per slot. The descriptors
  are made per program over the program's own sequence and head ([S, D] views with the tensor's row stride), so
  TMA fills rows past the sequence end with zeros and no other sequence's keys or values are read;
- two consumer partitions of one warpgroup each (64 query rows apiece, 240 registers) compute S = Q K^T with
  wgmma from shared memory, the online softmax in registers (base 2, one FFMA and one ex2 per score), and
  O += P V with P from registers; each releases a ring slot after its P V product. The two warpgroups run out of
  phase, one's softmax beside the other's products.
Masks only where needed: the last K tile when the sequence ends inside it, and under causal masking the tiles
that cross the warpgroup's diagonal. Output and the natural-log LSE ([B, H, S], fp32) are stored by row with
masks, in the layout flash_attn.py's backward reads.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from build_tools.spec import KernelSpec, Variant

LOG2E = gl.constexpr(1.4426950408889634)

HEAD_DIMS = (64, 128, 256)
DTYPES = ("bf16", "fp16")
HALF_M = gl.constexpr(64)  # query rows per consumer warpgroup; a program's tile is two of them

CPP_CONSTANTS = {
    "WS_BLOCK_M": 2 * HALF_M.value,
}


@gluon.jit
def _exp2(x):
    # ex2.approx.ftz: gl.exp2 is ex2.approx without .ftz, whose denormal handling adds instructions per score;
    # results below 2^-126 flush to 0, which a probability summed in fp32 next to a 1 does not notice.
    return gl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=gl.float32, is_pure=True,
                                     pack=1)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_lo, q_hi, k_bufs, v_bufs, q_bar, ready, empty, m0, n_tiles,
              BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [m0, 0], q_bar, q_lo)
    tma.async_copy_global_to_shared(q_desc, [m0 + HALF_M, 0], q_bar, q_hi)
    for j in range(n_tiles):
        s = j % STAGES
        mbarrier.wait(empty.index(s), ((j // STAGES) & 1) ^ 1)  # the first pass over the ring finds every slot free
        mbarrier.expect(ready.index(s), k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [j * BLOCK_N, 0], ready.index(s), k_bufs.index(s))
        tma.async_copy_global_to_shared(v_desc, [j * BLOCK_N, 0], ready.index(s), v_bufs.index(s))


@gluon.jit
def _softmax(qk, j, rows, m_i, l_i, mask_from, seqlen, qk_scale, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr,
             s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr, dtype: gl.constexpr):
    # One K tile's online softmax: P as the P V product's register operand, the new running max and sum, and
    # the factor the output accumulated so far is rescaled by.
    if j >= mask_from:
        cols = j * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        keep = cols[None, :] < seqlen
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        qk = gl.where(keep, qk, -float("inf"))
    m_new = gl.maximum(m_i, gl.max(qk, axis=1))
    # a row with every score so far masked (only rows past the sequence end) keeps shift 0: no NaN
    shift = gl.where(m_new == -float("inf"), 0.0, m_new * qk_scale)
    p = _exp2(qk * qk_scale - shift[:, None])
    alpha = _exp2(m_i * qk_scale - shift)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    p_op = gl.convert_layout(p.to(dtype), p_layout)
    return p_op, m_new, l_i, gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))


@gluon.jit
def _consumer(q_smem, k_bufs, v_bufs, q_bar, ready, empty, O, LSE, o_row0, lse_row0, r0, n_tiles, seqlen, o_stride,
              qk_scale, CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
              OVERLAP: gl.constexpr, num_warps: gl.constexpr):
    # One warpgroup's HALF_M query rows r0 .. r0 + HALF_M - 1 (0-based in the sequence) over the program's K/V tiles.
    # OVERLAP (FlashAttention-3's intra-warpgroup pipelining): S(j) = Q K(j)^T is issued together with
    # O += P(j-1) V(j-1), and the softmax of S(j) runs while the second product is still on the tensor cores.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    dtype: gl.constexpr = O.dtype.element_ty
    m_i = gl.full([HALF_M], -float("inf"), gl.float32, layout=row_layout)  # running max of the raw scores
    l_i = gl.zeros([HALF_M], gl.float32, layout=row_layout)
    acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([HALF_M, BLOCK_N], gl.float32, layout=s_layout)
    rows = r0 + gl.arange(0, HALF_M, layout=row_layout)
    # tiles from here on need a mask: the one the sequence ends in and, causal, those reaching past row r0
    mask_from = seqlen // BLOCK_N
    if CAUSAL:
        mask_from = gl.minimum(mask_from, (r0 + 1) // BLOCK_N)  # tile j is whole for row r0 iff its last key <= r0
    mbarrier.wait(q_bar, 0)
    if OVERLAP:
        mbarrier.wait(ready.index(0), 0)
        qk = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        p_op, m_i, l_i, alpha = _softmax(qk, 0, rows, m_i, l_i, mask_from, seqlen, qk_scale, CAUSAL, BLOCK_N,
                                         s_layout, o_layout, p_layout, dtype)
        for j in range(1, n_tiles):
            s = j % STAGES
            prev = (j - 1) % STAGES
            mbarrier.wait(ready.index(s), (j // STAGES) & 1)
            qk = warpgroup_mma(q_smem, k_bufs.index(s).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            acc = warpgroup_mma(p_op, v_bufs.index(prev), acc, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk,))  # S(j) is done; P(j-1) V may still run
            p_op, m_i, l_i, alpha = _softmax(qk, j, rows, m_i, l_i, mask_from, seqlen, qk_scale, CAUSAL, BLOCK_N,
                                             s_layout, o_layout, p_layout, dtype)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            mbarrier.arrive(empty.index(prev), count=1)
            acc = acc * alpha[:, None]
        last = (n_tiles - 1) % STAGES
        acc = warpgroup_mma(p_op, v_bufs.index(last), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index(last), count=1)
    else:
        for j in range(n_tiles):
            s = j % STAGES
            mbarrier.wait(ready.index(s), (j // STAGES) & 1)
            qk = warpgroup_mma(q_smem, k_bufs.index(s).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
            p_op, m_i, l_i, alpha = _softmax(qk, j, rows, m_i, l_i, mask_from, seqlen, qk_scale, CAUSAL, BLOCK_N,
                                             s_layout, o_layout, p_layout, dtype)
            acc = acc * alpha[:, None]
            acc = warpgroup_mma(p_op, v_bufs.index(s), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            mbarrier.arrive(empty.index(s), count=1)
    # O = acc / l and LSE = ln(sum exp(scale * s)) for the rows inside the sequence, stored from the wgmma
    # layout itself (a layout conversion would need HALF_M x HEAD_DIM x 4 bytes of shared memory per warpgroup)
    o_rows = r0 + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, o_layout))
    o_cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o = acc / gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))[:, None]
    offs = (o_row0 + o_rows.to(gl.int64) * o_stride)[:, None] + o_cols[None, :]
    gl.store(O + offs, o.to(dtype), mask=(o_rows < seqlen)[:, None])
    lse = (m_i * qk_scale + gl.log2(l_i)) * (1.0 / LOG2E)
    gl.store(LSE + lse_row0 + rows, lse, mask=rows < seqlen)


@gluon.jit
def flash_attn_ws_fwd_kernel(Q, K, V, O, LSE, seqlen, heads, kv_heads, stride_qb, stride_qs, stride_qh, stride_kb,
                             stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, qk_scale, CAUSAL: gl.constexpr,
                             BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                             OVERLAP: gl.constexpr):
    # q [B, S, heads, D], k, v [B, S, kv_heads, D] with unit stride along D and the other strides (in elements)
    # multiples of 16 bytes (TMA's rule, the launcher checks); o contiguous [B, S, heads, D]; LSE [B, heads, S];
    # qk_scale = scale * log2(e)
    gl.static_assert(gl.num_warps() == 4)
    bh = gl.program_id(0)
    b = (bh // heads).to(gl.int64)
    h = bh % heads
    hk = h // (heads // kv_heads)
    n_m = gl.num_programs(1)
    pid_m = gl.program_id(1)
    if CAUSAL:
        pid_m = n_m - 1 - pid_m  # longest tiles first
    m0 = pid_m * (2 * HALF_M)
    dtype: gl.constexpr = Q.dtype.element_ty
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HALF_M, HEAD_DIM], dtype)
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    # [S, D] views of this (sequence, head): TMA zero-fills rows past the end, nothing of another sequence is read
    q_desc = tma.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh, [seqlen, HEAD_DIM], [stride_qs, 1],
                                        [HALF_M, HEAD_DIM], q_layout)
    k_desc = tma.make_tensor_descriptor(K + b * stride_kb + hk * stride_kh, [seqlen, HEAD_DIM], [stride_ks, 1],
                                        [BLOCK_N, HEAD_DIM], kv_layout)
    v_desc = tma.make_tensor_descriptor(V + b * stride_vb + hk * stride_vh, [seqlen, HEAD_DIM], [stride_vs, 1],
                                        [BLOCK_N, HEAD_DIM], kv_layout)
    q_lo = gl.allocate_shared_memory(dtype, [HALF_M, HEAD_DIM], q_layout)
    q_hi = gl.allocate_shared_memory(dtype, [HALF_M, HEAD_DIM], q_layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=2)  # one release per consumer warpgroup
    if CAUSAL:
        n_tiles = gl.cdiv(gl.minimum(m0 + 2 * HALF_M, seqlen), BLOCK_N)
    else:
        n_tiles = gl.cdiv(seqlen, BLOCK_N)
    o_row0 = (b * seqlen * heads + h) * HEAD_DIM  # element offset of (b, row 0, h, 0); a row is heads * HEAD_DIM
    lse_row0 = bh.to(gl.int64) * seqlen
    gl.warp_specialize(
        [(_consumer, (q_lo, k_bufs, v_bufs, q_bar, ready, empty, O, LSE, o_row0, lse_row0, m0, n_tiles, seqlen,
                      heads * HEAD_DIM, qk_scale, CAUSAL, BLOCK_N, HEAD_DIM, STAGES, OVERLAP,
                      gl.num_warps())),
         (_consumer, (q_hi, k_bufs, v_bufs, q_bar, ready, empty, O, LSE, o_row0, lse_row0, m0 + HALF_M, n_tiles,
                      seqlen, heads * HEAD_DIM, qk_scale, CAUSAL, BLOCK_N, HEAD_DIM, STAGES, OVERLAP, 4)),
         (_producer, (q_desc, k_desc, v_desc, q_lo, q_hi, k_bufs, v_bufs, q_bar, ready, empty, m0, n_tiles,
                      BLOCK_N, STAGES))],
        [4, 1], [240, 24])


# (BLOCK_N, STAGES) per head dim: shared memory is 2 Q halves + STAGES x (K + V) tiles
# (H200, bf16, B2 S8192, scripts/gluon_attn_fwd.py --sweep, TFLOP/s causal / full): d64 256x2 plain 399/435 (128x4
# overlapped 391/418, 128x2 plain 367/393); d128 128x3 overlapped 528/552 (128x2 plain 502/521, 128x2 overlapped
# 437/442: the overlapped loop holds a slot longer and needs the third); d256 64x2 plain 555/554 (overlapped 470/464).
TILES = {64: (256, 2), 128: (128, 3), 256: (64, 2)}
OVERLAP = {64: False, 128: True, 256: False}


def _sig(dt):
    sig = {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "O": f"*{dt}", "LSE": "*fp32", "seqlen": "i32",
           "heads": "i32", "kv_heads": "i32"}
    sig.update({f"stride_{t}{a}": "i64" for t in "qkv" for a in "bsh"})
    sig["qk_scale"] = "fp32"
    return sig


def _specs():
    spec = KernelSpec(flash_attn_ws_fwd_kernel)
    for dt in DTYPES:
        for d in HEAD_DIMS:
            block_n, stages = TILES[d]
            for causal in (False, True):
                spec.variants.append(Variant(
                    key={"qkv_dtype": dt, "head_dim": d, "causal": causal}, signature=_sig(dt),
                    constexprs={"CAUSAL": causal, "BLOCK_N": block_n, "HEAD_DIM": d, "STAGES": stages,
                                "OVERLAP": OVERLAP[d]},
                    num_warps=4, aligned=True, archs=(90,)))
    return [spec]


KERNELS = _specs()
