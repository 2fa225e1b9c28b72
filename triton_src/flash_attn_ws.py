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
from triton._C.libtriton import ir
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

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
def _sequence(CU, b, seqlen, is_varlen):
    # (first row, length) of sequence b: cu_seqlens[b] and its length in a packed batch; in a fixed-length batch
    # row 0 of the sequence's own slice and the common length
    start = b * 0
    if is_varlen:
        start = gl.load(CU + b).to(gl.int64)
        seqlen = gl.load(CU + b + 1) - gl.load(CU + b)
    return start, seqlen


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
def flash_attn_ws_fwd_kernel(Q, K, V, O, LSE, CU, seqlen, total, is_varlen, heads, kv_heads, stride_qb, stride_qs,
                             stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, qk_scale,
                             CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                             STAGES: gl.constexpr, OVERLAP: gl.constexpr):
    # Fixed length: q [B, S, heads, D], k, v [B, S, kv_heads, D], o contiguous [B, S, heads, D], LSE [B, heads, S].
    # Packed (is_varlen, the same cu_seqlens CU for queries and keys): q [total, heads, D], k, v [total, kv_heads,
    # D] (stride_*b 0), o contiguous [total, heads, D], LSE [heads, total]; seqlen is then the longest sequence.
    # Unit stride along D, the other strides (in elements) multiples of 16 bytes (TMA's rule, the launcher checks);
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
    start, seqlen = _sequence(CU, b, seqlen, is_varlen)
    if m0 >= seqlen:
        return  # a tile past a shorter packed sequence's end
    tok0 = b * seqlen  # the sequence's first row in o
    lse_row0 = (b * heads + h) * seqlen
    if is_varlen:
        tok0 = start
        lse_row0 = h * total + start
    dtype: gl.constexpr = Q.dtype.element_ty
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HALF_M, HEAD_DIM], dtype)
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    # [S, D] views of this (sequence, head): TMA zero-fills rows past the end, nothing of another sequence is read
    q_desc = tma.make_tensor_descriptor(Q + b * stride_qb + start * stride_qs + h * stride_qh, [seqlen, HEAD_DIM],
                                        [stride_qs, 1], [HALF_M, HEAD_DIM], q_layout)
    k_desc = tma.make_tensor_descriptor(K + b * stride_kb + start * stride_ks + hk * stride_kh, [seqlen, HEAD_DIM],
                                        [stride_ks, 1], [BLOCK_N, HEAD_DIM], kv_layout)
    v_desc = tma.make_tensor_descriptor(V + b * stride_vb + start * stride_vs + hk * stride_vh, [seqlen, HEAD_DIM],
                                        [stride_vs, 1], [BLOCK_N, HEAD_DIM], kv_layout)
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
    o_row0 = (tok0 * heads + h) * HEAD_DIM  # element offset of (the sequence's row 0, h, 0); a row: heads * HEAD_DIM
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
    sig = {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "O": f"*{dt}", "LSE": "*fp32", "CU": "*i32", "seqlen": "i32",
           "total": "i32", "is_varlen": "i1", "heads": "i32", "kv_heads": "i32"}
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
    bwd = KernelSpec(flash_attn_ws_bwd_kernel)
    convert = KernelSpec(flash_attn_ws_dq_convert_kernel)
    for dt in DTYPES:
        for d in BWD_HEAD_DIMS:
            for causal in (False, True):
                bwd.variants.append(Variant(
                    key={"qkv_dtype": dt, "head_dim": d, "causal": causal}, signature=_bwd_sig(dt),
                    constexprs={"CAUSAL": causal, "HEAD_DIM": d, "STAGES": BWD_STAGES[d]},
                    num_warps=4, aligned=True, archs=(90,)))
            convert.variants.append(Variant(
                key={"qkv_dtype": dt, "head_dim": d},
                signature={"DQ_ACC": "*fp32", "DQ": f"*{dt}", "seqlen": "i32", "heads": "i32", "scale": "fp32"},
                constexprs={"HEAD_DIM": d, "BLOCK_M": CONVERT_BLOCK_M}, num_warps=4, aligned=True, archs=(90,)))
    return [spec, bwd, convert]


def _bwd_sig(dt):
    sig = {"Q": f"*{dt}", "K": f"*{dt}", "V": f"*{dt}", "DO": f"*{dt}", "LSE": "*fp32", "DELTA": "*fp32",
           "DQ": "*fp32", "DK": f"*{dt}", "DV": f"*{dt}", "CU": "*i32", "seqlen": "i32", "total": "i32",
           "is_varlen": "i1", "heads": "i32", "kv_heads": "i32"}
    sig.update({f"stride_{t}{a}": "i64" for t in ("q", "k", "v", "do") for a in "bsh"})
    sig.update({"qk_scale": "fp32", "scale": "fp32"})
    return sig




# ---------------------------------------------------------------------------------------------------
# Backward (FlashAttention-3's algorithm on the forward's pattern)
#
# One program per (batch x KV head, 128-key tile); it loops over the query heads of its GQA group and, for each,
# over the 64-query tiles that see its keys. The producer warp streams Q and dO tiles through a STAGES-deep ring
# (one 3-D TMA descriptor per tensor over [S, group, D], so a GQA group's heads come from one descriptor) together
# with the tile's LSE and delta = rowsum(dO * O) (plain loads into shared memory: their rows are 4-byte aligned
# only); two consumer warpgroups own 64 keys each and keep their dK, dV rows in registers:
#     S^T = K Q^T,  dP^T = V dO^T            (wgmma from shared memory)
#     P^T = exp2(S^T * scale * log2 e - lse * log2 e),  dS^T = P^T (dP^T - delta)
#     dV += P^T dO,  dK += dS^T Q            (P^T, dS^T as register operands)
#     dQ  = dS K                             (dS^T through shared memory, both warpgroups' halves; each
#                                             warpgroup multiplies by half of K's columns)
# Each warpgroup adds its [64, D/2] dQ piece to an fp32 [B, H, S, D] buffer (zeroed by the launcher) with one
# TMA reduce-add (cp.reduce.async.bulk.tensor: the L2 does the adds, a 16 KB tile per instruction; per-element
# atomics from registers took twice the whole kernel's time); flash_attn_ws_dq_convert_kernel then scales, casts
# and transposes it to dq's layout. dK and dV are stored once per program, deterministic.
BWD_HALF_N = gl.constexpr(64)  # keys per consumer warpgroup; a program's key tile is two of them
BWD_BLOCK_M = gl.constexpr(64)  # queries per step
BWD_HEAD_DIMS = (64, 128)
BWD_STAGES = {64: 2, 128: 2}
CONVERT_BLOCK_M = 64
CPP_CONSTANTS["WS_BWD_BLOCK_N"] = 2 * BWD_HALF_N.value
CPP_CONSTANTS["WS_DQ_CONVERT_BLOCK_M"] = CONVERT_BLOCK_M


@builtin
def _tma_reduce_add(tensor_desc, coord, src, _semantic=None):
    # cp.reduce.async.bulk.tensor .add from shared memory (Gluon 3.6 has the op in its builder but no wrapper);
    # completion is tracked like a TMA store: tma.store_wait
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle)


@gluon.jit
def _bwd_producer(q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_smem, v_smem, lse_bufs, delta_bufs, kv_bar,
                  ready, empty, LSE, DELTA, stat_row0, head_rows, seqlen, n0, m_first, n_m, rot, n_iters,
                  STAGES: gl.constexpr):
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [n0, 0], kv_bar, k_smem)
    tma.async_copy_global_to_shared(v_desc, [n0, 0], kv_bar, v_smem)
    stat_layout: gl.constexpr = gl.BlockedLayout([2], [32], [1], [0])
    offs = gl.arange(0, BWD_BLOCK_M, layout=stat_layout)
    for it in range(n_iters):
        s = it % STAGES
        g = it // n_m
        m0 = (m_first + (it % n_m + rot) % n_m) * BWD_BLOCK_M
        rows = m0 + offs
        in_seq = rows < seqlen
        row0 = stat_row0 + g * head_rows  # statistics of query head h0 + g
        # rows past the end: lse +inf makes P 0 there
        lse = gl.load(LSE + row0 + rows, mask=in_seq, other=float("inf"))
        delta = gl.load(DELTA + row0 + rows, mask=in_seq, other=0.0)
        mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
        lse_bufs.index(s).store(lse * LOG2E)
        delta_bufs.index(s).store(delta)
        gl.thread_barrier()  # every lane's statistics are in shared memory before the arrive below releases them
        mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [m0, g, 0], ready.index(s), q_bufs.index(s))
        tma.async_copy_global_to_shared(do_desc, [m0, g, 0], ready.index(s), do_bufs.index(s))


@gluon.jit
def _bwd_consumer(q_bufs, do_bufs, k_smem, v_smem, ds_smem, dq_smem, lse_bufs, delta_bufs, kv_bar, ready, empty,
                  ds_bar, dq_desc, DK, DV, wg, n0, m_first, n_m, rot, n_iters, seqlen, tok0, stat_row0, head_rows, h0,
                  heads, kv_heads, qk_scale, scale, CAUSAL: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                  num_warps: gl.constexpr):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BWD_BLOCK_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, HEAD_DIM // 2, 16])
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    col_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
    dtype: gl.constexpr = DK.dtype.element_ty
    two_d: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BWD_BLOCK_M, HEAD_DIM], dtype)
    r0 = n0 + wg * BWD_HALF_N  # this warpgroup's first key
    k_w = k_smem.slice(wg * BWD_HALF_N, BWD_HALF_N, dim=0)
    v_w = v_smem.slice(wg * BWD_HALF_N, BWD_HALF_N, dim=0)
    k_cols = k_smem.slice(wg * (HEAD_DIM // 2), HEAD_DIM // 2, dim=1)  # B operand of this warpgroup's dQ half
    dk = gl.zeros([BWD_HALF_N, HEAD_DIM], gl.float32, layout=acc_layout)
    dv = gl.zeros([BWD_HALF_N, HEAD_DIM], gl.float32, layout=acc_layout)
    s_zero = gl.zeros([BWD_HALF_N, BWD_BLOCK_M], gl.float32, layout=s_layout)
    dq_zero = gl.zeros([BWD_BLOCK_M, HEAD_DIM // 2], gl.float32, layout=dq_layout)
    keys = r0 + gl.arange(0, BWD_HALF_N, layout=gl.SliceLayout(1, s_layout))
    cols0 = gl.arange(0, BWD_BLOCK_M, layout=col_layout)
    mbarrier.wait(kv_bar, 0)
    for it in range(n_iters):
        s = it % STAGES
        d = it % 2
        g = it // n_m
        m0 = (m_first + (it % n_m + rot) % n_m) * BWD_BLOCK_M
        mbarrier.wait(ready.index(s), (it // STAGES) & 1)
        q_t = q_bufs.index(s)._reinterpret(dtype, [BWD_BLOCK_M, HEAD_DIM], two_d)
        do_t = do_bufs.index(s)._reinterpret(dtype, [BWD_BLOCK_M, HEAD_DIM], two_d)
        st = warpgroup_mma(k_w, q_t.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dpt = warpgroup_mma(v_w, do_t.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        lse2 = lse_bufs.index(s).load(col_layout)
        delta = delta_bufs.index(s).load(col_layout)
        st = warpgroup_mma_wait(num_outstanding=1, deps=(st,))
        pt = _exp2(st * qk_scale - lse2[None, :])
        if CAUSAL:
            if m0 < r0 + BWD_HALF_N:  # the tile crosses (or lies before) this warpgroup's diagonal
                pt = gl.where((m0 + cols0)[None, :] >= keys[:, None], pt, 0.0)
        dv = warpgroup_mma(gl.convert_layout(pt.to(dtype), op_layout), do_t, dv, is_async=True)
        dpt = warpgroup_mma_wait(num_outstanding=1, deps=(dpt,))
        dst = (pt * (dpt - delta[None, :])).to(dtype)
        ds_smem.index(d).slice(wg * BWD_HALF_N, BWD_HALF_N, dim=0).store(dst)
        dk = warpgroup_mma(gl.convert_layout(dst, op_layout), q_t, dk, is_async=True)
        fence_async_shared()
        gl.thread_barrier()
        mbarrier.arrive(ds_bar.index(d), count=1)
        mbarrier.wait(ds_bar.index(d), (it // 2) & 1)
        dq = warpgroup_mma(ds_smem.index(d).permute((1, 0)), k_cols, dq_zero, use_acc=False, is_async=True)
        dq, dv, dk = warpgroup_mma_wait(num_outstanding=0, deps=(dq, dv, dk))
        mbarrier.arrive(empty.index(s), count=1)
        tma.store_wait(0)  # the previous step's reduce has read dq_smem
        gl.thread_barrier()
        dq_smem.store(dq)
        fence_async_shared()
        gl.thread_barrier()
        # rows of the [B * H * S, D] (packed: [H * total, D]) buffer; rows past this sequence's end carry zeros (P
        # is 0 there), so adding them into the next rows changes nothing, and TMA drops rows past the buffer
        dq_row = (stat_row0 + g * head_rows + m0).to(gl.int32)
        _tma_reduce_add(dq_desc, [dq_row, wg * (HEAD_DIM // 2)], dq_smem)
    # dK = scale * sum dS^T Q, dV = sum P^T dO: contiguous [B, S, kv_heads, D] or [total, kv_heads, D], rows inside
    # the sequence
    o_rows = r0 + gl.arange(0, BWD_HALF_N, layout=gl.SliceLayout(1, acc_layout))
    o_cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, acc_layout))
    hk = h0 // (heads // kv_heads)
    offs = (((tok0 + o_rows.to(gl.int64)) * kv_heads + hk) * HEAD_DIM)[:, None] + o_cols[None, :]
    keep = (o_rows < seqlen)[:, None]
    gl.store(DK + offs, (dk * scale).to(dtype), mask=keep)
    gl.store(DV + offs, dv.to(dtype), mask=keep)
    tma.store_wait(0)


@gluon.jit
def flash_attn_ws_bwd_kernel(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, CU, seqlen, total, is_varlen, heads, kv_heads,
                             stride_qb, stride_qs, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs,
                             stride_vh, stride_dob, stride_dos, stride_doh, qk_scale, scale, CAUSAL: gl.constexpr,
                             HEAD_DIM: gl.constexpr, STAGES: gl.constexpr):
    # Fixed length: q, do [B, S, heads, D], k, v [B, S, kv_heads, D] (unit stride along D, other strides 16-byte
    # multiples); LSE, DELTA [B, heads, S] fp32; DQ [B, heads, S, D] fp32, zeroed; DK, DV [B, S, kv_heads, D]
    # contiguous; total = B * S. Packed (is_varlen, cu_seqlens CU for queries and keys alike): [total, ...] tensors
    # (stride_*b 0), LSE, DELTA [heads, total], DQ [heads, total, D], seqlen the longest sequence.
    # heads * total < 2^31; qk_scale = scale * log2(e)
    gl.static_assert(gl.num_warps() == 4)
    # Causal: grid (batch x KV head, key tile), so the first wave holds the first key tiles (the most queries) of
    # every head. Without a mask every program has the same work: grid (key tile, batch x KV head), so that a
    # wave's programs share a few heads' Q, dO and dQ rows in L2
    if CAUSAL:
        bhk = gl.program_id(0)
        n0 = gl.program_id(1) * (2 * BWD_HALF_N)
    else:
        bhk = gl.program_id(1)
        n0 = gl.program_id(0) * (2 * BWD_HALF_N)
    b = (bhk // kv_heads).to(gl.int64)
    hk = bhk % kv_heads
    group = heads // kv_heads
    h0 = hk * group
    start, seqlen = _sequence(CU, b, seqlen, is_varlen)
    if n0 >= seqlen:
        return  # a key tile past a shorter packed sequence's end
    tok0 = b * seqlen  # the sequence's first row in dk, dv
    stat_row0 = (b * heads + h0) * seqlen  # row of (sequence, head h0) in LSE, DELTA and DQ's [rows, D]
    head_rows = seqlen  # rows from one head to the next there
    if is_varlen:
        tok0 = start
        stat_row0 = h0 * total + start
        head_rows = total
    m_first = 0
    if CAUSAL:
        m_first = n0 // BWD_BLOCK_M
    n_m = gl.cdiv(seqlen, BWD_BLOCK_M) - m_first
    # Without a mask every key tile's program would start at query tile 0 and add into the same dQ rows at the
    # same time; each starts at its own diagonal instead (causal programs start there anyway)
    rot = (n0 // BWD_BLOCK_M) % n_m
    if CAUSAL:
        rot = 0
    n_iters = n_m * group
    dtype: gl.constexpr = Q.dtype.element_ty
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([2 * BWD_HALF_N, HEAD_DIM], dtype)
    q3_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BWD_BLOCK_M, 1, HEAD_DIM], dtype)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([2 * BWD_HALF_N, BWD_BLOCK_M], dtype)
    dq_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BWD_BLOCK_M, HEAD_DIM // 2], gl.float32)
    stat_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_desc = tma.make_tensor_descriptor(Q + b * stride_qb + start * stride_qs + h0 * stride_qh,
                                        [seqlen, group, HEAD_DIM], [stride_qs, stride_qh, 1],
                                        [BWD_BLOCK_M, 1, HEAD_DIM], q3_layout)
    do_desc = tma.make_tensor_descriptor(DO + b * stride_dob + start * stride_dos + h0 * stride_doh,
                                         [seqlen, group, HEAD_DIM], [stride_dos, stride_doh, 1],
                                         [BWD_BLOCK_M, 1, HEAD_DIM], q3_layout)
    k_desc = tma.make_tensor_descriptor(K + b * stride_kb + start * stride_ks + hk * stride_kh, [seqlen, HEAD_DIM],
                                        [stride_ks, 1], [2 * BWD_HALF_N, HEAD_DIM], kv_layout)
    v_desc = tma.make_tensor_descriptor(V + b * stride_vb + start * stride_vs + hk * stride_vh, [seqlen, HEAD_DIM],
                                        [stride_vs, 1], [2 * BWD_HALF_N, HEAD_DIM], kv_layout)
    dq_desc = tma.make_tensor_descriptor(DQ, [heads * total, HEAD_DIM], [HEAD_DIM, 1],
                                         [BWD_BLOCK_M, HEAD_DIM // 2], dq_layout)
    k_smem = gl.allocate_shared_memory(dtype, [2 * BWD_HALF_N, HEAD_DIM], kv_layout)
    v_smem = gl.allocate_shared_memory(dtype, [2 * BWD_HALF_N, HEAD_DIM], kv_layout)
    q_bufs = gl.allocate_shared_memory(dtype, [STAGES, BWD_BLOCK_M, 1, HEAD_DIM], q3_layout)
    do_bufs = gl.allocate_shared_memory(dtype, [STAGES, BWD_BLOCK_M, 1, HEAD_DIM], q3_layout)
    lse_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, BWD_BLOCK_M], stat_layout)
    delta_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, BWD_BLOCK_M], stat_layout)
    ds_smem = gl.allocate_shared_memory(dtype, [2, 2 * BWD_HALF_N, BWD_BLOCK_M], ds_layout)
    dq_lo = gl.allocate_shared_memory(gl.float32, [BWD_BLOCK_M, HEAD_DIM // 2], dq_layout)
    dq_hi = gl.allocate_shared_memory(gl.float32, [BWD_BLOCK_M, HEAD_DIM // 2], dq_layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    ds_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=2)  # one release per consumer warpgroup
    for d in gl.static_range(2):
        mbarrier.init(ds_bar.index(d), count=2)  # both halves of dS^T are in shared memory
    gl.warp_specialize(
        [(_bwd_consumer, (q_bufs, do_bufs, k_smem, v_smem, ds_smem, dq_lo, lse_bufs, delta_bufs, kv_bar, ready,
                          empty, ds_bar, dq_desc, DK, DV, 0, n0, m_first, n_m, rot, n_iters, seqlen, tok0,
                          stat_row0, head_rows, h0, heads, kv_heads, qk_scale, scale, CAUSAL, HEAD_DIM, STAGES,
                          gl.num_warps())),
         (_bwd_consumer, (q_bufs, do_bufs, k_smem, v_smem, ds_smem, dq_hi, lse_bufs, delta_bufs, kv_bar, ready,
                          empty, ds_bar, dq_desc, DK, DV, 1, n0, m_first, n_m, rot, n_iters, seqlen, tok0,
                          stat_row0, head_rows, h0, heads, kv_heads, qk_scale, scale, CAUSAL, HEAD_DIM, STAGES, 4)),
         (_bwd_producer, (q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_smem, v_smem, lse_bufs, delta_bufs,
                          kv_bar, ready, empty, LSE, DELTA, stat_row0, head_rows, seqlen, n0, m_first, n_m, rot,
                          n_iters, STAGES))],
        [4, 1], [240, 24])


@gluon.jit
def flash_attn_ws_dq_convert_kernel(DQ_ACC, DQ, seqlen, heads, scale, HEAD_DIM: gl.constexpr,
                                    BLOCK_M: gl.constexpr):
    # dq[b, s, h, :] = scale * dq_acc[b, h, s, :], cast; dq contiguous [B, S, heads, D]
    layout: gl.constexpr = gl.BlockedLayout([1, 4], [32 * 4 // HEAD_DIM, HEAD_DIM // 4], [gl.num_warps(), 1],
                                            [1, 0])
    bh = gl.program_id(0).to(gl.int64)
    rows = gl.program_id(1) * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    keep = (rows < seqlen)[:, None]
    x = gl.load(DQ_ACC + (bh * seqlen + rows)[:, None] * HEAD_DIM + cols[None, :], mask=keep)
    b = bh // heads
    h = bh % heads
    dst = ((b * seqlen + rows) * heads + h)[:, None] * HEAD_DIM + cols[None, :]
    gl.store(DQ + dst, (x * scale).to(DQ.dtype.element_ty), mask=keep)


KERNELS = _specs()
