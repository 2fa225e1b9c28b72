"""Cross-entropy kernels (also the per-chunk kernel of fused_linear_cross_entropy) and their specializations.

For one row x of V logits, target y, class weights w (all ones without a weight), smoothing e and soft-cap c:
  x' = c * tanh(x / c)  (x' = x without a soft-cap),  lse = logsumexp(x'),  p = softmax(x')
  ce = (1 - e) * w[y] * (lse - x'[y]) + (e / V) * sum_j w[j] * (lse - x'[j])      (F.cross_entropy's terms)
  z  = lse_square_scale * lse^2                                                    (z-loss, added to the loss)
Reductions (as F.cross_entropy for ce, as Liger-Kernel for z): "mean" is sum(ce) / D_loss + sum(z) / D_z
with D_loss = sum of w[y] over non-ignored rows (their count without weights) and D_z = their count;
"sum" sums both; "none" gives ce + z per row. Ignored rows contribute 0 and get a zero gradient.
With a_loss, a_z the scales of one row's ce and z in the reduced loss (grad_output / D for "mean"):
  d x'[j] = p[j] * (a_loss * ((1 - e) * w[y] + (e / V) * sum(w)) + a_z * 2 * lse_square_scale * lse)
            - a_loss * (e / V) * w[j] - [j == y] * a_loss * (1 - e) * w[y]
  d x[j]  = d x'[j] * (1 - (x'[j] / c)^2)
Everything the reduction needs stays on the device (no host synchronization, CUDA-graph capturable):
cross_entropy_stats_kernel writes STATS = [D_loss, D_z, sum(w)] before the row kernels run.
A non-ignored target outside [0, V) gives a NaN loss for its row (and a NaN mean) instead of a fault.

cross_entropy_fwd_kernel (inference, reduction "none", and fused_linear_cross_entropy's chunks): one program
per row; the row is streamed in BLOCK_N chunks with an online softmax (running row max and rescaled sum, one
read). fused_linear_cross_entropy's chunks use store_grad: the kernel then reads the row a second time and writes
the gradient over the logits in place (their only use).

Training with "mean"/"sum" (cross_entropy_fwd_grad_kernel): the forward also writes the gradient for
grad_output 1 into a new buffer (read the logits once from memory and once from L2, write the gradient once:
2 bytes moved per logit byte instead of 3 for separate passes). The backward (cross_entropy_bwd_kernel with
skip_unit) returns at once when grad_loss == 1 and grad_z == 0, read on the device; otherwise it recomputes
the general gradient into that buffer.
"""
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._rows import prefetch_l2
from triton_src.softmax import _exp

# STATS_BLOCK / FINALIZE_BLOCK at 8 warps: 4096 targets or rows per step (H200, 4096 rows: the stats kernel 1.9 us
# and the finalize 4.2 us of device time, against 3.4 and 5.1 at 1024 x 4 warps).
CPP_CONSTANTS = {
    "ROW_BLOCKS": 3,
    "STATS_BLOCK": 4096,
    "FINALIZE_BLOCK": 4096,
    "COLSUM_BLOCK_N": 128,
}

# Row block sizes by vocabulary: the smallest that covers V, 8192 (16 warps) beyond. Not yet tuned on the H200.
ROW_BLOCKS = {1024: 4, 4096: 8, 8192: 16}
# The FAST training forward takes 16384 x 32 warps above 65536 classes and 2048 x 4 warps (4 programs per SM)
# from 4097 to 65536 (the launcher's grad_row_block). H200, bf16, 4096 rows, scripts/tune_cross_entropy.py:
# 128256 classes 0.620 ms against 0.705 at 8192 x 16; 32000 classes 0.170 against 0.214. The general loops
# would spill at 16384 (ptxas: 436 bytes at 64 registers), so only FAST variants are built at these blocks.
GRAD_ROW_BLOCKS = {**ROW_BLOCKS, 2048: 4, 16384: 32}
# The training forward's tail split (TAIL) is built into the one-program-per-SM variants only: there the rows left
# over after the last full round are a whole row time each (4096 rows on 132 SMs: 4 programs took a 32nd row while
# 128 were done, ~10 us of 612 at 128256 classes, scripts/ce_pdl_probe.py); at 2048 x 4 warps (4 programs per SM)
# the code made ptxas spill (32 bytes) and 4096 rows leave 400 of 528 programs a row, no split; the unaligned
# variants (a vocabulary not a multiple of 16 bytes) spilled 424 bytes with it (20 without): aligned ones only.
TAIL_ROW_BLOCK = 16384


@triton.jit
def _softcapped(x, softcap, has_softcap):
    if has_softcap:
        x = softcap * libdevice.tanh(x / softcap)
    return x


@triton.jit
def _write_grad(x_row, dx_row, W, y, n_cols, lse, w_y, w_sum, a_loss, a_z, label_smoothing, lse_square_scale,
                softcap, has_weight, has_softcap, BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr,
                STREAM: tl.constexpr = False):
    # STREAM (the fused forward's second read of a row, from L2): chunks last to first, the most recently read
    # first (should the rows in flight outgrow L2, an LRU cache then still holds the row's tail instead of
    # evicting each chunk just before its reuse); the next chunk is loaded before this one is processed; the row
    # and its gradient are marked first to leave L2 (no further use).
    eps = label_smoothing / n_cols
    coef_p = a_loss * ((1.0 - label_smoothing) * w_y + eps * w_sum) + a_z * 2.0 * lse_square_scale * lse
    coef_y = a_loss * (1.0 - label_smoothing) * w_y
    coef_w = a_loss * eps
    cols = tl.arange(0, BLOCK_N)
    if STREAM:
        last = tl.cdiv(n_cols, BLOCK_N) * BLOCK_N - BLOCK_N
        x_next = tl.load(x_row + last + cols, mask=last + cols < n_cols, other=0.0, eviction_policy="evict_first")
    for i in range(0, n_cols, BLOCK_N):
        if STREAM:
            start = last - i
        else:
            start = i
        c = start + cols
        cm = c < n_cols
        if STREAM:
            x = x_next.to(tl.float32)
            x_next = tl.load(x_row + c - BLOCK_N, mask=c >= BLOCK_N, other=0.0, eviction_policy="evict_first")
        else:
            x = tl.load(x_row + c, mask=cm, other=0.0).to(tl.float32)
        dcap = tl.full([BLOCK_N], 1.0, tl.float32)
        if has_softcap:
            t = libdevice.tanh(x / softcap)
            x = softcap * t
            dcap = 1.0 - t * t
        g = _exp(x - lse, ACCURATE) * coef_p - tl.where(c == y, coef_y, 0.0)
        if has_weight:
            g -= coef_w * tl.load(W + c, mask=cm, other=0.0)
        else:
            g -= coef_w
        g = g * dcap
        if STREAM:
            tl.store(dx_row + c, g.to(dx_row.dtype.element_ty), mask=cm, eviction_policy="evict_first")
        else:
            tl.store(dx_row + c, g.to(dx_row.dtype.element_ty), mask=cm)


@triton.jit
def _zero_row(dx_row, n_cols, BLOCK_N: tl.constexpr):
    cols = tl.arange(0, BLOCK_N)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        tl.store(dx_row + c, tl.zeros([BLOCK_N], dtype=dx_row.dtype.element_ty), mask=c < n_cols)


@triton.jit
def _target(Y, W, row, n_cols, ignore_index, has_weight):
    # (target, weight of the target): NaN weight for a non-ignored target outside [0, n_cols).
    y = tl.load(Y + row)
    in_range = (y >= 0) & (y < n_cols)
    w_y = tl.where(in_range, 1.0, float("nan"))
    if has_weight:
        w_y = tl.where(in_range, tl.load(W + tl.where(in_range, y, 0)), float("nan"))
    return y, in_range, w_y


@triton.jit
def _shifted_sums(x_row, W, n_cols, shift, label_smoothing, softcap, has_weight, has_softcap,
                  BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr):
    # (sum_j exp(x'[j] - shift), sum_j w[j] * x'[j]) of one row. Per-lane accumulators and no reduction inside
    # the loop: no barrier between chunks, so the loads stream like the backward's (the next chunk is loaded
    # before this one is summed). The loads ask L2 to keep the row: the gradient pass reads it again.
    cols = tl.arange(0, BLOCK_N)
    d = tl.zeros([BLOCK_N], dtype=tl.float32)
    wx = tl.zeros([BLOCK_N], dtype=tl.float32)
    x_next = tl.load(x_row + cols, mask=cols < n_cols, other=0.0, eviction_policy="evict_last")
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        x = _softcapped(x_next.to(tl.float32), softcap, has_softcap)
        x_next = tl.load(x_row + BLOCK_N + c, mask=c + BLOCK_N < n_cols, other=0.0, eviction_policy="evict_last")
        d += tl.where(cm, _exp(x - shift, ACCURATE), 0.0)
        if label_smoothing > 0:
            if has_weight:
                wx += tl.where(cm, x * tl.load(W + c, mask=cm, other=0.0), 0.0)
            else:
                wx += tl.where(cm, x, 0.0)
    return tl.sum(d, axis=0), tl.sum(wx, axis=0)


@triton.jit
def _row_max(x_row, n_cols, softcap, has_softcap, BLOCK_N: tl.constexpr):
    cols = tl.arange(0, BLOCK_N)
    m = tl.full([BLOCK_N], -float("inf"), tl.float32)
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        x = _softcapped(tl.load(x_row + c, mask=c < n_cols, other=0.0).to(tl.float32), softcap, has_softcap)
        m = tl.maximum(m, tl.where(c < n_cols, x, -float("inf")))
    return tl.max(m, axis=0)


LOG2E = tl.constexpr(1.4426950408889634)
# The most parts a tail row of the training forward is split into (cross_entropy_fwd_grad_kernel's TAIL).
MAX_TAIL_PARTS = tl.constexpr(64)


@triton.jit
def _fast_exp(x, shift, ACCURATE: tl.constexpr):
    # exp(x - shift). 16-bit logits: the bare ex2.approx.ftz of (x - shift) * log2(e) (exp of -inf is 0),
    # without tl.exp's denormal fix-ups, which alone cost 3 instructions per element. Not one FFMA of
    # x * log2(e) - shift * log2(e): that leaves the rounding of shift * log2(e) in the target's own term, whose
    # exp must be exactly 1 (a one-class row's gradient is then exactly 0).
    if ACCURATE:
        return libdevice.exp(x - shift)
    else:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [(x - shift) * LOG2E],
                                         dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _fast_sums(x_row, n_cols, shift, BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr, AHEAD2: tl.constexpr,
               PREFETCH: tl.constexpr = False):
    # sum_j exp(x[j] - shift) of one row without a weight, soft-cap or smoothing (FAST): full chunks without
    # masks (the prefetch address is clamped to the last full chunk instead of masked), then the masked tail
    # with -inf as padding (exp gives 0: no select). The loads ask L2 to keep the row for the gradient pass.
    # AHEAD2: two chunks in flight ahead of the one summed, the loop taking chunks in pairs so that each of the
    # two registers is refilled straight from its load (a register copy would wait on the load in flight).
    # H200, bf16, 4096 rows (benchmarks/bench_cross_entropy.py): the no-grad forward 0.238 instead of 0.250 ms at
    # 128256 classes, the training forward at 2048 x 4 warps 0.175 instead of 0.195 ms fwd+bwd at 32000; the
    # training forward at 16384 x 32 warps was 1-3 % slower with it (0.653 against 0.633 ms at 128256), so it
    # keeps one chunk ahead. PREFETCH (with one chunk ahead): the full chunk two after the one loaded is also asked
    # of L2 (prefetch_l2, no registers): H200, 4096 rows bf16 (scripts/ce_split_proto.py), the training forward at
    # 16384 x 32 warps 0.588 instead of 0.613 ms at 128256 classes, 1.259 instead of 1.335 at 256000; one or three
    # chunks ahead, a 128-byte address step, or the next row's first chunk prefetched during the gradient pass
    # were no better.
    cols = tl.arange(0, BLOCK_N)
    n_full = (n_cols // BLOCK_N) * BLOCK_N
    d = tl.zeros([BLOCK_N], dtype=tl.float32)
    if n_full > 0:
        last = n_full - BLOCK_N
        if AHEAD2:
            a = tl.load(x_row + cols, eviction_policy="evict_last")
            b = tl.load(x_row + tl.minimum(BLOCK_N, last) + cols, eviction_policy="evict_last")
            pairs_end = (n_full // (2 * BLOCK_N)) * (2 * BLOCK_N)
            for start in range(0, pairs_end, 2 * BLOCK_N):
                xa = a.to(tl.float32)
                a = tl.load(x_row + tl.minimum(start + 2 * BLOCK_N, last) + cols, eviction_policy="evict_last")
                d += _fast_exp(xa, shift, ACCURATE)
                xb = b.to(tl.float32)
                b = tl.load(x_row + tl.minimum(start + 3 * BLOCK_N, last) + cols, eviction_policy="evict_last")
                d += _fast_exp(xb, shift, ACCURATE)
            if pairs_end < n_full:  # an odd count: a holds the last full chunk
                d += _fast_exp(a.to(tl.float32), shift, ACCURATE)
        else:
            x_next = tl.load(x_row + cols, eviction_policy="evict_last")
            for start in range(0, n_full, BLOCK_N):
                if PREFETCH:
                    nbytes: tl.constexpr = BLOCK_N * x_row.dtype.element_ty.primitive_bitwidth // 8
                    prefetch_l2((x_row + start + 2 * BLOCK_N).to(tl.pointer_type(tl.int8)), nbytes,
                                start + 2 * BLOCK_N < n_full, 32, nbytes // 32)
                x = x_next.to(tl.float32)
                x_next = tl.load(x_row + tl.minimum(start + BLOCK_N, last) + cols, eviction_policy="evict_last")
                d += _fast_exp(x, shift, ACCURATE)
    if n_full < n_cols:
        c = n_full + cols
        x = tl.load(x_row + c, mask=c < n_cols, other=-float("inf"), eviction_policy="evict_last").to(tl.float32)
        d += _fast_exp(x, shift, ACCURATE)
    return tl.sum(d, axis=0)


@triton.jit
def _fast_write_grad(x_row, dx_row, y, x_y, n_cols, lse, coef_p, coef_y, BLOCK_N: tl.constexpr,
                     ACCURATE: tl.constexpr):
    # The FAST gradient pass: d x[j] = p[j] * coef_p, then d x[y] -= coef_y as one store after a barrier
    # (instead of a compare and select on every element). Order as _write_grad's STREAM: the masked tail (read
    # last) first, then the full chunks last to first, each prefetched one ahead; row and gradient marked to
    # leave L2 first.
    cols = tl.arange(0, BLOCK_N)
    n_full = (n_cols // BLOCK_N) * BLOCK_N
    if n_full < n_cols:
        c = n_full + cols
        cm = c < n_cols
        x = tl.load(x_row + c, mask=cm, other=-float("inf"), eviction_policy="evict_first").to(tl.float32)
        g = _fast_exp(x, lse, ACCURATE) * coef_p
        tl.store(dx_row + c, g.to(dx_row.dtype.element_ty), mask=cm, eviction_policy="evict_first")
    if n_full > 0:
        x_next = tl.load(x_row + n_full - BLOCK_N + cols, eviction_policy="evict_first")
        for i in range(0, n_full, BLOCK_N):
            start = n_full - BLOCK_N - i
            x = x_next.to(tl.float32)
            x_next = tl.load(x_row + tl.maximum(start - BLOCK_N, 0) + cols, eviction_policy="evict_first")
            g = _fast_exp(x, lse, ACCURATE) * coef_p
            tl.store(dx_row + start + cols, g.to(dx_row.dtype.element_ty), eviction_policy="evict_first")
    # Every thread's chunk stores are ordered before the target's store (bar.sync orders the block's global
    # memory accesses); the target's value is computed as its chunk did, less coef_y.
    tl.debug_barrier()
    g_y = _fast_exp(x_y, lse, ACCURATE) * coef_p - coef_y
    tl.store(dx_row + y, g_y.to(dx_row.dtype.element_ty))


@triton.jit
def _fast_lse(x_row, n_cols, x_y, BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr, AHEAD2: tl.constexpr,
              PREFETCH: tl.constexpr = False):
    # lse of a FAST row from the sum of exp(x - x[y]) (>= 1: nothing underflows to a wrong result); a logit ~88
    # above the target's, or a NaN/inf, makes that sum overflow or NaN: the row is then summed again behind its
    # exact max.
    d = _fast_sums(x_row, n_cols, x_y, BLOCK_N, ACCURATE, AHEAD2, PREFETCH)
    return _fast_lse_of_sum(x_row, n_cols, x_y, d, BLOCK_N, ACCURATE, AHEAD2)


@triton.jit
def _fast_lse_of_sum(x_row, n_cols, x_y, d, BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr, AHEAD2: tl.constexpr):
    # lse from d = sum_j exp(x[j] - x[y]), or from the row summed again behind its exact max when d is not usable
    lse = x_y + tl.log(d)
    if (d < 0.5) | (d > 3.0e38) | (d != d):
        m = _row_max(x_row, n_cols, 1.0, False, BLOCK_N)
        shift = tl.where(m == -float("inf"), 0.0, m)  # all -inf: exp(-inf - 0) = 0 and lse = -inf
        lse = shift + tl.log(_fast_sums(x_row, n_cols, shift, BLOCK_N, ACCURATE, AHEAD2))
    return lse


@triton.jit
def _fast_tail(X, Y, LOSS_ROW, Z_ROW, LSE, DX, SYNC, SLOTS, n_main, n_tail, parts, n_cols_v,
               stride_x_v, stride_dx_v, ignore_index, lse_square_scale, a_loss, a_z, BLOCK_N: tl.constexpr,
               ALIGN: tl.constexpr, ACCURATE: tl.constexpr, MAX_PARTS: tl.constexpr):
    # The last n_tail rows (fewer than half the programs), each split over `parts` column ranges, so that they do
    # not fall to n_tail programs while the others are done (4096 rows on 132 SMs: 4 programs took a 32nd row,
    # ~10 us at 128256 classes). Work is drawn from a ticket counter (SYNC[0], zeroed by the stats kernel):
    # tickets [0, n_tail * parts) are phase A (a part's sum of exp(x - x[y]) into SLOTS, then SYNC[1 + t] += 1
    # with release), [n_tail * parts, 2 n_tail * parts) phase B (wait, with acquire, until the row's parts have
    # all counted; lse from the parts' sums in a fixed order; the part's gradient). Every phase A ticket is drawn
    # before any phase B one, and phase A never waits: no program waits on one that is not running (no deadlock
    # whatever the residency).
    n_cols = n_cols_v * ALIGN
    n_a = n_tail * parts
    part_v = tl.cdiv(n_cols_v, parts)
    k = tl.atomic_add(SYNC, 1, sem="relaxed")
    while k < 2 * n_a:
        phase_b = k >= n_a
        kk = tl.where(phase_b, k - n_a, k)
        t = kk // parts
        part = kk % parts
        row = (n_main + t).to(tl.int64)
        x_row = X + row * (stride_x_v * ALIGN)
        dx_row = DX + row * (stride_dx_v * ALIGN)
        y, in_range, w_y = _target(Y, Y, row, n_cols, ignore_index, False)
        yc = tl.where(in_range, y, 0)
        x_y = tl.load(x_row + yc).to(tl.float32)
        c0 = part * part_v * ALIGN
        c1 = tl.minimum(part * part_v + part_v, n_cols_v) * ALIGN
        cols = tl.arange(0, BLOCK_N)
        if not phase_b:
            d = tl.zeros([BLOCK_N], dtype=tl.float32)
            if y != ignore_index:
                for start in range(c0, c1, BLOCK_N):
                    c = start + cols
                    x = tl.load(x_row + c, mask=c < c1, other=-float("inf")).to(tl.float32)
                    d += _fast_exp(x, x_y, ACCURATE)
            tl.store(SLOTS + kk, tl.sum(d, axis=0))
            tl.debug_barrier()  # every thread's part of the store before the release
            tl.atomic_add(SYNC + 1 + t, 1, sem="release")
        else:
            done = tl.atomic_add(SYNC + 1 + t, 0, sem="acquire")
            while done < parts:
                done = tl.atomic_add(SYNC + 1 + t, 0, sem="acquire")
            if y == ignore_index:
                if part == 0:
                    tl.store(LOSS_ROW + row, 0.0)
                    tl.store(Z_ROW + row, 0.0)
                    tl.store(LSE + row, 0.0)
                for start in range(c0, c1, BLOCK_N):
                    c = start + cols
                    tl.store(dx_row + c, tl.zeros([BLOCK_N], dtype=DX.dtype.element_ty), mask=c < c1)
            else:
                offs = tl.arange(0, MAX_PARTS)
                d = tl.sum(tl.load(SLOTS + t * parts + offs, mask=offs < parts, other=0.0, cache_modifier=".cg"),
                           axis=0)
                lse = _fast_lse_of_sum(x_row, n_cols, x_y, d, BLOCK_N, ACCURATE, False)
                if part == 0:
                    tl.store(LOSS_ROW + row, tl.where(in_range, w_y * (lse - x_y), float("nan")))
                    tl.store(Z_ROW + row, lse_square_scale * lse * lse)
                    tl.store(LSE + row, lse)
                coef_p = a_loss * w_y + a_z * 2.0 * lse_square_scale * lse
                coef_y = tl.where(in_range, a_loss * w_y, 0.0)
                for start in range(c0, c1, BLOCK_N):
                    c = start + cols
                    cm = c < c1
                    x = tl.load(x_row + c, mask=cm, other=-float("inf")).to(tl.float32)
                    g = _fast_exp(x, lse, ACCURATE) * coef_p - tl.where(c == yc, coef_y, 0.0)
                    tl.store(dx_row + c, g.to(DX.dtype.element_ty), mask=cm)
        k = tl.atomic_add(SYNC, 1, sem="relaxed")


@triton.jit
def cross_entropy_stats_kernel(Y, W, STATS, SYNC, n_rows, n_cols, ignore_index, has_weight, n_sync,
                               BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    # One program: STATS = [D_loss, D_z, sum(w)] (see the module docstring), and SYNC[0, n_sync) zeroed (the
    # training forward's tail counters). PDL: the next kernel (the training forward, launched as a programmatic
    # dependent) may start at once; it waits for STATS where it needs them.
    if PDL:
        gdc_launch_dependents()
    offs = tl.arange(0, BLOCK)
    count = tl.zeros([BLOCK], dtype=tl.float32)
    wsum_y = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n_rows, BLOCK):
        r = start + offs
        y = tl.load(Y + r, mask=r < n_rows, other=ignore_index)
        valid = (r < n_rows) & (y != ignore_index)
        count += valid.to(tl.float32)
        if has_weight:
            in_range = (y >= 0) & (y < n_cols)
            w = tl.load(W + tl.where(in_range, y, 0), mask=valid & in_range, other=0.0)
            wsum_y += tl.where(valid & (~in_range), float("nan"), w)
    n_valid = tl.sum(count, axis=0)
    for zstart in range(0, n_sync, BLOCK):
        z = zstart + offs
        tl.store(SYNC + z, tl.zeros([BLOCK], dtype=tl.int32), mask=z < n_sync)
    if has_weight:
        w_all = tl.zeros([BLOCK], dtype=tl.float32)
        for cstart in range(0, n_cols, BLOCK):
            c = cstart + offs
            w_all += tl.load(W + c, mask=c < n_cols, other=0.0)
        tl.store(STATS, tl.sum(wsum_y, axis=0))
        tl.store(STATS + 2, tl.sum(w_all, axis=0))
    else:
        tl.store(STATS, n_valid)
        tl.store(STATS + 2, n_cols.to(tl.float32))
    tl.store(STATS + 1, n_valid)


@triton.jit
def cross_entropy_fwd_kernel(X, Y, W, STATS, LOSS_ROW, Z_ROW, LSE, n_cols_v, stride_x_v, ignore_index,
                             label_smoothing, lse_square_scale, softcap, has_weight, has_softcap, store_grad, mean,
                             BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, ACCURATE: tl.constexpr, FAST: tl.constexpr):
    # FAST (no weight, soft-cap or label smoothing; the launcher checks): _fast_lse and, with store_grad,
    # _fast_write_grad in place, as the training forward's FAST path.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride passes 2^31 beyond 8192 rows of 262144
    x_row = X + row * (stride_x_v * ALIGN)
    y, in_range, w_y = _target(Y, W, row, n_cols, ignore_index, has_weight)
    if y == ignore_index:
        tl.store(LOSS_ROW + row, 0.0)
        tl.store(Z_ROW + row, 0.0)
        tl.store(LSE + row, 0.0)
        if store_grad:
            _zero_row(x_row, n_cols, BLOCK_N)
        return
    if FAST:
        x_y = tl.load(x_row + tl.where(in_range, y, 0)).to(tl.float32)
        lse = _fast_lse(x_row, n_cols, x_y, BLOCK_N, ACCURATE, True)
        tl.store(LOSS_ROW + row, tl.where(in_range, w_y * (lse - x_y), float("nan")))
        tl.store(Z_ROW + row, lse_square_scale * lse * lse)
        tl.store(LSE + row, lse)
        if store_grad:
            a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
            a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
            _fast_write_grad(x_row, x_row, tl.where(in_range, y, 0), x_y, n_cols, lse,
                             a_loss * w_y + a_z * 2.0 * lse_square_scale * lse, tl.where(in_range, a_loss * w_y, 0.0),
                             BLOCK_N, ACCURATE)
        return
    x_y = _softcapped(tl.load(x_row + tl.where(in_range, y, 0)).to(tl.float32), softcap, has_softcap)
    cols = tl.arange(0, BLOCK_N)
    # Online softmax over BLOCK_N chunks with a running row max m and sum d (scalars): one exp per element and
    # one per chunk. (A per-lane running max kept [BLOCK_N] tiles of m and d live: 114 registers at 8192 x 16
    # warps, one program per SM, and twice the instructions per element; ptxas via scripts/ptxas_report.py.)
    m = tl.max(tl.full([BLOCK_N], -float("inf"), tl.float32), axis=0)
    d = tl.sum(tl.zeros([BLOCK_N], dtype=tl.float32), axis=0)
    wx = d  # sum of w[j] * x'[j], for label smoothing
    for start in range(0, n_cols, BLOCK_N):
        c = start + cols
        cm = c < n_cols
        x = _softcapped(tl.load(x_row + c, mask=cm, other=0.0).to(tl.float32), softcap, has_softcap)
        x = tl.where(cm, x, -float("inf"))
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # A row that is -inf so far keeps m = -inf: shift by 0 then, so that exp(-inf - shift) is 0, not NaN.
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        d = d * _exp(m - shift, ACCURATE) + tl.sum(_exp(x - shift, ACCURATE), axis=0)
        m = m_new
        if label_smoothing > 0:
            if has_weight:
                wx += tl.sum(tl.where(cm, x * tl.load(W + c, mask=cm, other=0.0), 0.0), axis=0)
            else:
                wx += tl.sum(tl.where(cm, x, 0.0), axis=0)
    lse = m + tl.log(d)
    w_sum = tl.load(STATS + 2)
    ce = (1.0 - label_smoothing) * w_y * (lse - x_y)
    if label_smoothing > 0:
        ce += (label_smoothing / n_cols) * (w_sum * lse - wx)
    ce = tl.where(in_range, ce, float("nan"))
    tl.store(LOSS_ROW + row, ce)
    tl.store(Z_ROW + row, lse_square_scale * lse * lse)
    tl.store(LSE + row, lse)
    if store_grad:
        # The gradient of the reduced loss for grad_output 1 (the caller scales it), over the logits.
        a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
        a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
        _write_grad(x_row, x_row, W, y, n_cols, lse, w_y, w_sum, a_loss, a_z, label_smoothing, lse_square_scale,
                    softcap, has_weight, has_softcap, BLOCK_N, ACCURATE)


@triton.jit
def cross_entropy_fwd_grad_kernel(X, Y, W, STATS, LOSS_ROW, Z_ROW, LSE, DX, SYNC, SLOTS, n_rows, n_cols_v, stride_x_v,
                                  stride_dx_v, ignore_index, label_smoothing, lse_square_scale, softcap, has_weight,
                                  has_softcap, mean, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                                  ACCURATE: tl.constexpr, FAST: tl.constexpr, PDL: tl.constexpr = False,
                                  TAIL: tl.constexpr = False):
    # The training forward of "mean"/"sum": per-row loss terms as cross_entropy_fwd_kernel, and the gradient of
    # the reduced loss for grad_output 1 into DX (a new buffer: the logits stay intact). Persistent: each program
    # takes rows pid, pid + programs, ...; about one row per SM is in flight, so that the gradient pass's second
    # read of the row (256 KB at 128256 bf16 classes, 33 MB over 132 SMs) is served by L2.
    # lse without a running max: the sum of exp(x' - x'[y]) (the target's own logit as the shift, so the sum is
    # >= 1 and nothing underflows to a wrong result) cannot overflow unless a logit exceeds the target's by ~88;
    # then (or for a NaN/inf logit) the row is summed again behind its exact max.
    # FAST (no weight, soft-cap or label smoothing; the launcher checks): _fast_sums / _fast_write_grad, about
    # 10 instead of 35 instructions per logit (SASS); the general loops were issue-bound (ncu: 57 % SM
    # throughput, 48 % DRAM, at 4 warps per scheduler).
    # PDL (launched as a programmatic dependent of the stats kernel): the program starts while the stats kernel
    # may still run and waits for it (griddepcontrol.wait) only after its first row's sums, where STATS is first
    # needed; nothing before the wait reads what the stats kernel writes (every earlier kernel has completed:
    # the stats kernel is not itself a dependent launch). The finalize kernel may be launched at once.
    # TAIL (FAST): when the rows leave n_tail = n_rows % programs over, with at least 2 programs per such row,
    # those rows are split over the programs (_fast_tail; SYNC holds 1 + n_tail zeroed counters, SLOTS one float
    # per part) instead of falling to n_tail programs.
    n_cols = n_cols_v * ALIGN
    n_main = n_rows
    if TAIL:
        n_tail = n_rows % tl.num_programs(0)
        parts = tl.minimum(tl.num_programs(0) // tl.maximum(n_tail, 1), MAX_TAIL_PARTS)
        if (n_tail > 0) & (parts >= 2):
            n_main = n_rows - n_tail
    if PDL:
        gdc_launch_dependents()
        w_sum = 0.0
        a_loss = 0.0
        a_z = 0.0
        ready = 0
    else:
        w_sum = tl.load(STATS + 2)
        a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
        a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
    for r in range(tl.program_id(0), n_main, tl.num_programs(0)):
        row = tl.cast(r, tl.int64)  # int64: row * stride passes 2^31 beyond 8192 rows of 262144
        x_row = X + row * (stride_x_v * ALIGN)
        dx_row = DX + row * (stride_dx_v * ALIGN)
        y, in_range, w_y = _target(Y, W, row, n_cols, ignore_index, has_weight)
        if y == ignore_index:
            tl.store(LOSS_ROW + row, 0.0)
            tl.store(Z_ROW + row, 0.0)
            tl.store(LSE + row, 0.0)
            _zero_row(dx_row, n_cols, BLOCK_N)
        else:
            if FAST:
                x_y = tl.load(x_row + tl.where(in_range, y, 0)).to(tl.float32)
                lse = _fast_lse(x_row, n_cols, x_y, BLOCK_N, ACCURATE, BLOCK_N < 16384, BLOCK_N >= 16384)
                wx = 0.0
            else:
                x_y = _softcapped(tl.load(x_row + tl.where(in_range, y, 0)).to(tl.float32), softcap, has_softcap)
                d, wx = _shifted_sums(x_row, W, n_cols, x_y, label_smoothing, softcap, has_weight, has_softcap,
                                      BLOCK_N, ACCURATE)
                lse = x_y + tl.log(d)
                if (d < 0.5) | (d > 3.0e38) | (d != d):
                    m = _row_max(x_row, n_cols, softcap, has_softcap, BLOCK_N)
                    shift = tl.where(m == -float("inf"), 0.0, m)  # all -inf: exp(-inf - 0) = 0 and lse = -inf
                    d, wx = _shifted_sums(x_row, W, n_cols, shift, label_smoothing, softcap, has_weight,
                                          has_softcap, BLOCK_N, ACCURATE)
                    lse = shift + tl.log(d)
            if PDL:
                if ready == 0:
                    gdc_wait()
                    w_sum = tl.load(STATS + 2)
                    a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
                    a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
                    ready = 1
            ce = (1.0 - label_smoothing) * w_y * (lse - x_y)
            if label_smoothing > 0:
                ce += (label_smoothing / n_cols) * (w_sum * lse - wx)
            ce = tl.where(in_range, ce, float("nan"))
            tl.store(LOSS_ROW + row, ce)
            tl.store(Z_ROW + row, lse_square_scale * lse * lse)
            tl.store(LSE + row, lse)
            if FAST:
                # _write_grad's coefficients with w = 1 and no smoothing; a target outside [0, V) (NaN loss)
                # writes no target term (its address is not read or written)
                coef_p = a_loss * w_y + a_z * 2.0 * lse_square_scale * lse
                _fast_write_grad(x_row, dx_row, tl.where(in_range, y, 0), x_y, n_cols, lse, coef_p,
                                 tl.where(in_range, a_loss * w_y, 0.0), BLOCK_N, ACCURATE)
            else:
                _write_grad(x_row, dx_row, W, y, n_cols, lse, w_y, w_sum, a_loss, a_z, label_smoothing,
                            lse_square_scale, softcap, has_weight, has_softcap, BLOCK_N, ACCURATE, True)
    if TAIL:
        if n_main < n_rows:
            if PDL:
                if ready == 0:  # SYNC is zeroed by the stats kernel
                    gdc_wait()
                    a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
                    a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
            _fast_tail(X, Y, LOSS_ROW, Z_ROW, LSE, DX, SYNC, SLOTS, n_main, n_rows - n_main, parts, n_cols_v,
                       stride_x_v, stride_dx_v, ignore_index, lse_square_scale, a_loss, a_z, BLOCK_N, ALIGN,
                       ACCURATE, MAX_TAIL_PARTS)
    if PDL:
        # every program waits once (a program whose rows were all ignored has not): the kernel then completes
        # only after the stats kernel, so a dependent of this kernel that waits for it may read STATS
        gdc_wait()


@triton.jit
def cross_entropy_bwd_kernel(X, Y, W, STATS, LSE, GRAD_LOSS, GRAD_Z, DX, n_rows, n_cols_v, stride_x_v, stride_dx_v,
                             grad_stride, ignore_index, label_smoothing, lse_square_scale, softcap, has_weight,
                             has_softcap, mean, skip_unit, has_grad_z, BLOCK_N: tl.constexpr,
                             ALIGN: tl.constexpr, ACCURATE: tl.constexpr, PDL: tl.constexpr = False):
    # GRAD_LOSS and GRAD_Z (the logits' dtype) hold one value per row (grad_stride 1, reduction "none") or one
    # scalar (grad_stride 0); without has_grad_z the z_loss has no gradient (taken as 0; GRAD_Z is then any valid
    # pointer, not read). Rows pid, pid + programs, ... With skip_unit, DX already holds the gradient for
    # grad_loss 1 and grad_z 0 (cross_entropy_fwd_grad_kernel's): every program reads the two scalars and
    # returns when they are exactly that, which the host cannot know without a synchronization.
    # PDL (a programmatic dependent launch): every program first waits for the kernel before it.
    if PDL:
        gdc_wait()
    n_cols = n_cols_v * ALIGN
    unit = skip_unit & (tl.load(GRAD_LOSS).to(tl.float32) == 1.0)
    if has_grad_z:
        unit = unit & (tl.load(GRAD_Z).to(tl.float32) == 0.0)
    for r in range(tl.program_id(0), tl.where(unit, 0, n_rows), tl.num_programs(0)):
        row = tl.cast(r, tl.int64)
        dx_row = DX + row * (stride_dx_v * ALIGN)
        y, in_range, w_y = _target(Y, W, row, n_cols, ignore_index, has_weight)
        if y == ignore_index:
            _zero_row(dx_row, n_cols, BLOCK_N)
        else:
            g_loss = tl.load(GRAD_LOSS + row * grad_stride).to(tl.float32)
            g_z = g_loss  # z is also part of the loss
            if has_grad_z:
                g_z += tl.load(GRAD_Z + row * grad_stride).to(tl.float32)
            a_loss = tl.where(mean, g_loss / tl.load(STATS), g_loss)
            a_z = tl.where(mean, g_z / tl.load(STATS + 1), g_z)
            _write_grad(X + row * (stride_x_v * ALIGN), dx_row, W, y, n_cols, tl.load(LSE + row), w_y,
                        tl.load(STATS + 2), a_loss, a_z, label_smoothing, lse_square_scale, softcap, has_weight,
                        has_softcap, BLOCK_N, ACCURATE)


@triton.jit
def cross_entropy_finalize_kernel(LOSS_ROW, Z_ROW, STATS, LOSS, Z, n_rows, reduction, BLOCK: tl.constexpr,
                                  PDL: tl.constexpr = False):
    # reduction 0 ("none"): a grid over rows writes ce + z and z per row. 1 ("mean") and 2 ("sum"): one
    # program writes the two scalars. PDL (a programmatic dependent launch): waits for the row kernel first, and
    # lets the next kernel (the backward's) be launched.
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    offs = tl.arange(0, BLOCK)
    if reduction == 0:
        r = tl.program_id(0).to(tl.int64) * BLOCK + offs
        rm = r < n_rows
        z_r = tl.load(Z_ROW + r, mask=rm, other=0.0)
        tl.store(LOSS + r, (tl.load(LOSS_ROW + r, mask=rm, other=0.0) + z_r).to(LOSS.dtype.element_ty), mask=rm)
        tl.store(Z + r, z_r.to(Z.dtype.element_ty), mask=rm)
    else:
        acc_ce = tl.zeros([BLOCK], dtype=tl.float32)
        acc_z = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_rows, BLOCK):
            r = start + offs
            acc_ce += tl.load(LOSS_ROW + r, mask=r < n_rows, other=0.0)
            acc_z += tl.load(Z_ROW + r, mask=r < n_rows, other=0.0)
        mean = reduction == 1
        ce = tl.sum(acc_ce, axis=0) / tl.where(mean, tl.load(STATS), 1.0)
        z = tl.sum(acc_z, axis=0) / tl.where(mean, tl.load(STATS + 1), 1.0)
        tl.store(LOSS, (ce + z).to(LOSS.dtype.element_ty))
        tl.store(Z, z.to(Z.dtype.element_ty))


@triton.jit
def column_sum_accumulate_kernel(X, ACC, n_rows, n_cols, stride_x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # ACC[j] += sum_i X[i, j] in fp32 (fused_linear_cross_entropy's bias gradient, one chunk at a time).
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cm = cols < n_cols
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in range(0, n_rows, BLOCK_M):
        r = (start + tl.arange(0, BLOCK_M)).to(tl.int64)
        mask = (r < n_rows)[:, None] & cm[None, :]
        acc += tl.load(X + r[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(ACC + cols, tl.load(ACC + cols, mask=cm, other=0.0) + tl.sum(acc, axis=0), mask=cm)


# ---------------------------------------------------------------------------------------------------
# Specializations


def _align(dtype):
    return 16 // ELEMENT_SIZE[dtype]


_ROW_SCALARS = {"ignore_index": "i64", "label_smoothing": "fp32", "lse_square_scale": "fp32", "softcap": "fp32",
                "has_weight": "i1", "has_softcap": "i1"}


def _fwd_sig(dt):
    return {"X": f"*{dt}", "Y": "*i64", "W": "*fp32", "STATS": "*fp32", "LOSS_ROW": "*fp32", "Z_ROW": "*fp32",
            "LSE": "*fp32", "n_cols_v": "i32", "stride_x_v": "i64", **_ROW_SCALARS, "store_grad": "i1",
            "mean": "i1"}


def _fwd_grad_sig(dt):
    return {"X": f"*{dt}", "Y": "*i64", "W": "*fp32", "STATS": "*fp32", "LOSS_ROW": "*fp32", "Z_ROW": "*fp32",
            "LSE": "*fp32", "DX": f"*{dt}", "SYNC": "*i32", "SLOTS": "*fp32", "n_rows": "i32", "n_cols_v": "i32",
            "stride_x_v": "i64", "stride_dx_v": "i64", **_ROW_SCALARS, "mean": "i1"}


def _bwd_sig(dt):
    return {"X": f"*{dt}", "Y": "*i64", "W": "*fp32", "STATS": "*fp32", "LSE": "*fp32", "GRAD_LOSS": f"*{dt}",
            "GRAD_Z": f"*{dt}", "DX": f"*{dt}", "n_rows": "i32", "n_cols_v": "i32", "stride_x_v": "i64",
            "stride_dx_v": "i64", "grad_stride": "i64", **_ROW_SCALARS, "mean": "i1", "skip_unit": "i1", "has_grad_z": "i1"}


def _specs():
    stats = KernelSpec(cross_entropy_stats_kernel)
    fwd = KernelSpec(cross_entropy_fwd_kernel)
    fwd_grad = KernelSpec(cross_entropy_fwd_grad_kernel)
    bwd = KernelSpec(cross_entropy_bwd_kernel)
    fin = KernelSpec(cross_entropy_finalize_kernel)
    colsum = KernelSpec(column_sum_accumulate_kernel)
    stats.variants.append(Variant(
        key={}, signature={"Y": "*i64", "W": "*fp32", "STATS": "*fp32", "SYNC": "*i32", "n_rows": "i64",
                           "n_cols": "i32", "ignore_index": "i64", "has_weight": "i1", "n_sync": "i32"},
        constexprs={"BLOCK": CPP_CONSTANTS["STATS_BLOCK"], "PDL": True}, num_warps=8))
    for dt in ("fp32", "bf16", "fp16"):
        accurate = dt == "fp32"
        for block_n, warps in GRAD_ROW_BLOCKS.items():
            for aligned in (False, True):
                common = {"BLOCK_N": block_n, "ALIGN": _align(dt) if aligned else 1, "ACCURATE": accurate}
                key = {"x_dtype": dt, "block_n": block_n, "aligned": aligned}
                for fast in (False, True) if block_n in ROW_BLOCKS else (True,):
                    fwd_grad.variants.append(Variant(key={**key, "fast": fast}, signature=_fwd_grad_sig(dt),
                                                     constexprs={**common, "FAST": fast, "PDL": True,
                                                                 "TAIL": block_n == TAIL_ROW_BLOCK and aligned},
                                                     num_warps=warps, aligned=aligned, launch_pdl=True))
                if block_n not in ROW_BLOCKS:
                    continue
                for fast in (False, True):
                    fwd.variants.append(Variant(key={**key, "fast": fast}, signature=_fwd_sig(dt),
                                                constexprs={**common, "FAST": fast}, num_warps=warps,
                                                aligned=aligned))
                bwd.variants.append(Variant(key=key, signature=_bwd_sig(dt), constexprs={**common, "PDL": True},
                                            num_warps=warps, aligned=aligned, launch_pdl=True))
        fin.variants.append(Variant(
            key={"out_dtype": dt},
            signature={"LOSS_ROW": "*fp32", "Z_ROW": "*fp32", "STATS": "*fp32", "LOSS": f"*{dt}", "Z": f"*{dt}",
                       "n_rows": "i64", "reduction": "i32"},
            constexprs={"BLOCK": CPP_CONSTANTS["FINALIZE_BLOCK"], "PDL": True}, num_warps=8, launch_pdl=True))
        colsum.variants.append(Variant(
            key={"x_dtype": dt},
            signature={"X": f"*{dt}", "ACC": "*fp32", "n_rows": "i32", "n_cols": "i32", "stride_x": "i64"},
            constexprs={"BLOCK_M": 32, "BLOCK_N": CPP_CONSTANTS["COLSUM_BLOCK_N"]}, num_warps=4))
    return [stats, fwd, fwd_grad, bwd, fin, colsum]


KERNELS = _specs()
