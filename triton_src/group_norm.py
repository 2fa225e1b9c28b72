"""GroupNorm kernels (x [N, C, *], statistics over each group of C / G channels and all spatial elements).

y = (x - mean) * rstd * weight[c] + bias[c], rstd = 1 / sqrt(var + eps), biased variance (F.group_norm).
Persistent programs, each taking (sample, group) pairs in turn. The group is the contiguous block [C/G, HW] of
x (HW = product of the spatial dims), walked as [BLOCK_C, BLOCK_HW] tiles so that each row of a tile is one
channel: the affine weights and the per-channel gradient sums are then per tile row. The forward reads the
group twice (sums of x - shift and of its square, shifted against cancellation; then y), the backward twice
(sums, then dx); groups that fit one tile are read once, and the next group's tile is loaded early. 16-bit groups
of 16385-65536 elements with a spatial size in REG_HW take group_norm_fwd_regs_kernel instead: the whole group in
registers, read once, the group half a wave later prefetched into L2; on sm_90, those of exactly 65536 elements
with a spatial size that is a multiple of 256 take group_norm_fwd_split16_kernel (a quarter of the group in
registers, the rest in shared memory, two programs an SM). The grid is
as many programs as are resident (a few per SM for one-tile groups): a grid sized to keep the groups in flight
within L2 (for the second read) measured slower on the H200 (see group_programs in csrc/ops/group_norm.cpp). The
forward's sums load one tile ahead (105.5 us against 125 for [32, 512, 64, 64] bf16, JIT at one program per
group); it still reads x from memory twice there (64 % of copy counting one read and one write).
dweight/dbias: each program writes its channels' sums into an fp32 [2, N, C] buffer that a second kernel
reduces over N into dweight and dbias in the parameters' dtype; one-tile groups of at most OWN_MAX_N samples
instead run G programs that sum over the samples themselves (no second kernel). The BIG16 groups' backward is split
into two kernels over many small programs (SPLIT_* below). Weight and bias reach the kernels in x's dtype
when both have it, else as fp32.
"""
import triton
import triton.language as tl

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from build_tools.spec import ELEMENT_SIZE, KernelSpec, Variant
from triton_src._rows import pdl_start, prefetch_l2

# Tile shapes [BLOCK_C, BLOCK_HW] by spatial size: BLOCK_HW is the smallest listed power of 4 >= HW, up to
# 4096 (so lanes idle on the spatial axis are < 3/4); BLOCK_C = TILE / BLOCK_HW, capped at 64 channels.
HW_BLOCKS = (1, 4, 16, 64, 256, 1024, 4096)
TILE = 4096
MAX_BLOCK_C = 64

# 16-bit groups of REG_MIN_GROUP + 1 to REG_TILES[-1] elements whose spatial size is in REG_HW: the whole group
# held in registers as [TILE / HW, HW] (group_norm_fwd_regs_kernel), x read once.
REG_HW = (256, 1024, 4096, 16384)
REG_TILES = (32768, 65536)
# warps by tile (H200 bf16, scripts/tune_group_norm.py --regs, ahead = half the SMs): [32, 512, 64, 64] 76.0-76.1 us
# at 32 warps, 76.5-77.7 at 16, 78.8-83.3 at 8; [16, 256, 64, 64] (tile 32768) 28.1-28.9 at 8 / 16 / 32 alike
REG_WARPS = {32768: 16, 65536: 32}

# BIG: groups of more than one TILE that fit one [big / BLOCK_HW, BLOCK_HW] tile (16-byte aligned) take it whole:
# read once, as the one-tile groups, instead of twice as [BLOCK_C, BLOCK_HW] tiles. The key's `big` is the tile's
# size: BIG_TILE (8 warps, spatial blocks BIG_HW, any dtype) or, for 16-bit x, BIG16_TILE (16 warps, BIG16_HW,
# one program per SM). These variants are launched as programmatic dependents (pdl_start), and the dweight/dbias
# reduction after their backward too. H200 bf16, fwd + bwd + reduction timed as the benchmarks
# (scripts/gn_probe.py chain / big16, JIT; the tile path's time first, torch.compile's fwd+bwd last):
#   [8, 1024, 16, 16] (32 x 256): 20.7 us as two 16 x 256 tiles; one 32 x 256 tile 18.2 with PDL, 21.0 without;
#     torch.compile 30.0;
#   [16, 320, 32, 32] (10 x 1024): 41.4 as 4 x 1024 tiles; one 16 x 1024 tile at 16 warps, one program per SM,
#     36.3 with PDL (37.7 without; 38.7-40.2 at 2 per SM; 36.8 at 32 warps); torch.compile 43.4;
#   [16, 1280, 16, 16] (40 x 256): 42.0 as 16 x 256 tiles; one 64 x 256 tile 35.3 (35.5 without PDL); torch.compile
#     38.2-38.6.
BIG_TILE = 8192
BIG_HW = (256, 1024, 4096)
BIG16_TILE = 16384
BIG16_HW = (256, 1024)
# SPLIT: the BIG16 groups' backward in two passes over many small programs, launched as programmatic dependents:
# group_norm_bwd_sums_kernel (per-(sample, channel) sums of dy and dy * xh, [SPLIT_SUMS_TILE / BLOCK_HW, BLOCK_HW]
# rows per program), then group_norm_bwd_dx_kernel (dx of [SPLIT_DX_TILE / BLOCK_HW, BLOCK_HW] rows of one group,
# from the group's channel sums), then the dweight / dbias reduction. H200 bf16, the backward alone
# (scripts/gn_probe.py split, JIT): [16, 1280, 16, 16] 21.98 us against 25.73 for one BIG16 tile per program
# (torch.compile 24.94); [16, 320, 32, 32] 21.70 against 25.5-26.3. It loses where the tile programs are many and
# small ([8, 1024, 16, 16], [64, 128, 32, 32]), so it serves the BIG16 groups only.
SPLIT_SUMS_TILE = 4096
SPLIT_DX_TILE = 2048

# SPLIT16: 16-bit groups of exactly SPLIT16_GROUP elements whose spatial size is a multiple of 256 (x seen as
# [numel / 256, 256] rows, each row in one channel) take group_norm_fwd_split16_kernel on sm_90: one program of
# 16 warps per group with SPLIT16_REG_ROWS of its 256 rows in registers and the others in shared memory (96 KB),
# so that two programs share an SM. H200, bf16 [32, 512, 64, 64], timed as the benchmarks
# (scripts/gn_half_probe.py, JIT): 71.8 us (88 % of copy) against 76.4 for the register kernel; registers / shared
# rows 96 / 160 73.3-73.8, 128 / 128 75.6-76.6; [16, 512, 64, 64] 39.6 against 44.6.
SPLIT16_GROUP = 65536
SPLIT16_REG_ROWS = 64
SPLIT16_WARPS = 16

CPP_CONSTANTS = {
    "SPLIT16_GROUP": SPLIT16_GROUP,
    "MAX_BLOCK_HW": HW_BLOCKS[-1],
    "MIN_ALIGNED_BLOCK_HW": 64,
    "REDUCE_BLOCK_C": 128,
    "WIDE_BLOCK_C": 4,
    "WIDE_FWD_MIN_HW": 16384,
    # one-tile groups: programs per SM (H200, [64, 128, 32, 32] bf16, scripts/tune_group_norm.py: forward 17.2 us
    # at 2 per SM, 18.0 at 4, 25.9 at one program per group; backward 25.8 at 2, 24.6 at 4, 29.4)
    "ONE_TILE_FWD_PER_SM": 2,
    "ONE_TILE_BWD_PER_SM": 4,
    # the backward of one-tile groups at up to OWN_MAX_N samples: a grid of G programs that sum dweight / dbias over
    # the samples themselves (own), with no reduction kernel after
    "OWN_MAX_N": 4,
    "REG_MIN_GROUP": REG_TILES[0] // 2,
    "REG_SMALL_TILE": REG_TILES[0],
    "REG_MAX_GROUP": REG_TILES[-1],
    "TILE": TILE,
    "MAX_BLOCK_C": MAX_BLOCK_C,
    "BIG_TILE": BIG_TILE,
    "BIG16_TILE": BIG16_TILE,
}


@triton.jit
def _tile(base, c0, hw0, CPG, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Offsets and mask of the [BLOCK_C, BLOCK_HW] tile at channel c0, spatial hw0 of one group."""
    cs = c0 + tl.arange(0, BLOCK_C)
    hs = hw0 + tl.arange(0, BLOCK_HW)
    mask = (cs < CPG)[:, None] & (hs < HW)[None, :]
    return base + cs.to(tl.int64)[:, None] * HW + hs[None, :], mask, cs


@triton.jit
def _tile_at(base, t, n_hw, CPG, HW, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """_tile of the group's t-th tile, tiles numbered channel block by channel block."""
    return _tile(base, (t // n_hw) * BLOCK_C, (t % n_hw) * BLOCK_HW, CPG, HW, BLOCK_C, BLOCK_HW)


@triton.jit
def _channel_affine(W, B, ch, cm, mean, rstd, has_weight, has_bias, BLOCK_C: tl.constexpr):
    """Per-channel (scale, shift) with y = x * scale + shift = (x - mean) * rstd * weight + bias."""
    if has_weight:
        scale = tl.load(W + ch, mask=cm, other=0.0).to(tl.float32) * rstd
    else:
        scale = tl.zeros([BLOCK_C], dtype=tl.float32) + rstd
    if has_bias:
        shift = tl.load(B + ch, mask=cm, other=0.0).to(tl.float32) - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


@triton.jit
def _fwd_one_tile(X, W, B, Y, MEAN, RSTD, N, CPG, HW, G, eps, has_weight, has_bias, store_stats,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """Groups that fit one tile: each is read once (statistics from registers, two-pass exact), and the next
    group's tile is loaded before this one is reduced (the persistent row kernels' early load)."""
    offs, mask, cs = _tile(0, 0, 0, CPG, HW, BLOCK_C, BLOCK_HW)
    size = CPG.to(tl.int64) * HW
    n_groups = N * G
    count = (CPG * HW).to(tl.float32)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    nxt = tl.load(X + tl.cast(pid, tl.int64) * size + offs, mask=mask & (pid < n_groups), other=0.0)
    for grp in range(pid, n_groups, nprog):
        x = nxt.to(tl.float32)
        nxt = tl.load(X + tl.cast(grp + nprog, tl.int64) * size + offs, mask=mask & (grp + nprog < n_groups), other=0.0)
        mean = tl.sum(tl.sum(x, axis=1), axis=0) / count
        d = tl.where(mask, x - mean, 0.0)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(tl.sum(d * d, axis=1), axis=0) / count + eps)
        if store_stats:
            tl.store(MEAN + grp, mean)
            tl.store(RSTD + grp, rstd)
        ch = (grp % G) * CPG + cs
        cm = cs < CPG
        if has_weight:
            scale = tl.load(W + ch, mask=cm, other=0.0).to(tl.float32) * rstd
        else:
            scale = tl.zeros([BLOCK_C], dtype=tl.float32) + rstd
        y = d * scale[:, None]
        if has_bias:
            y += tl.load(B + ch, mask=cm, other=0.0).to(tl.float32)[:, None]
        tl.store(Y + tl.cast(grp, tl.int64) * size + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def group_norm_fwd_kernel(X, W, B, Y, MEAN, RSTD, N, C, CPG, HW_v, G, eps, has_weight, has_bias, store_stats,
                          BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ALIGN: tl.constexpr,
                          PDL: tl.constexpr = False):
    pdl_start(PDL)
    # Persistent: program p takes groups p, p + programs, ... The sums pass loads one tile ahead and asks L2 to
    # keep the tiles; the output pass walks the tiles last to first (the most recently read first) and lets them
    # go.
    HW = HW_v.to(tl.int64) * ALIGN
    n_hw = tl.cdiv(HW, BLOCK_HW)
    n_tiles = tl.cdiv(CPG, BLOCK_C) * n_hw
    if n_tiles == 1:
        _fwd_one_tile(X, W, B, Y, MEAN, RSTD, N, CPG, HW, G, eps, has_weight, has_bias, store_stats, BLOCK_C,
                      BLOCK_HW)
        return
    count = (CPG * HW).to(tl.float32)
    for grp in range(tl.program_id(0), N * G, tl.num_programs(0)):
        g = grp % G
        base = tl.cast(grp, tl.int64) * CPG * HW
        # Sums of x - shift: with shift the mean of the group's first tile, E[d^2] - E[d]^2 barely cancels.
        offs0, mask0, _c0 = _tile(base, 0, 0, CPG, HW, BLOCK_C, BLOCK_HW)
        x_next = tl.load(X + offs0, mask=mask0, other=0.0, eviction_policy="evict_last")
        shift = (tl.sum(tl.sum(x_next.to(tl.float32), axis=1), axis=0)
                 / tl.sum(tl.sum(mask0.to(tl.float32), axis=1), axis=0))
        acc_s = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
        acc_q = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
        for t in range(0, n_tiles):
            _o, mask_t, _c = _tile_at(base, t, n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
            x = x_next.to(tl.float32)
            offs_n, mask_n, _cn = _tile_at(base, tl.minimum(t + 1, n_tiles - 1), n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
            x_next = tl.load(X + offs_n, mask=mask_n, other=0.0, eviction_policy="evict_last")
            d = tl.where(mask_t, x - shift, 0.0)
            acc_s += d
            acc_q += d * d
        mean_d = tl.sum(tl.sum(acc_s, axis=1), axis=0) / count
        var = tl.maximum(tl.sum(tl.sum(acc_q, axis=1), axis=0) / count - mean_d * mean_d, 0.0)
        mean = shift + mean_d
        rstd = 1.0 / tl.sqrt_rn(var + eps)
        if store_stats:
            tl.store(MEAN + grp, mean)
            tl.store(RSTD + grp, rstd)
        for i in range(0, n_tiles):
            offs, mask, cs = _tile_at(base, n_tiles - 1 - i, n_hw, CPG, HW, BLOCK_C, BLOCK_HW)
            scale, shift_c = _channel_affine(W, B, g * CPG + cs, cs < CPG, mean, rstd, has_weight, has_bias, BLOCK_C)
            xf = tl.load(X + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            y = xf * scale[:, None] + shift_c[:, None]
            tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask, eviction_policy="evict_first")


# Pairs of 16-bit elements held as one int32 each (32 registers for 64 elements): each use converts them to fp32 in
# one asm statement (the pair's sum, its centred sum of squares, the packed pair of y), so that the compiler keeps
# only the pairs live, never an fp32 copy of the tile.
_UNPACK = {True: "shl.b32 a, $1, 16; and.b32 b, $1, 0xffff0000;",
           False: "mov.b32 {l, h}, $1; cvt.f32.f16 a, l; cvt.f32.f16 b, h;"}


def _pair_asm(body, bf16):
    return tl.constexpr("{ .reg .f32 a, b; .reg .b16 l, h; " + _UNPACK[bf16] + " " + body + " }")


_SUM = "add.f32 $0, a, b;"
_SQ = "sub.f32 a, a, $2; sub.f32 b, b, $2; mul.f32 a, a, a; fma.rn.f32 $0, b, b, a;"
_AFFINE = "fma.rn.f32 a, a, $2, $3; fma.rn.f32 b, b, $2, $3; cvt.rn.{}x2.f32 $0, b, a;"
PAIR_SUM_BF16, PAIR_SUM_F16 = _pair_asm(_SUM, True), _pair_asm(_SUM, False)
PAIR_SQ_BF16, PAIR_SQ_F16 = _pair_asm(_SQ, True), _pair_asm(_SQ, False)
PAIR_AFFINE_BF16, PAIR_AFFINE_F16 = _pair_asm(_AFFINE.format("bf16"), True), _pair_asm(_AFFINE.format("f16"), False)


@triton.jit
def _pair_sum(v, IS_BF16: tl.constexpr):
    asm: tl.constexpr = PAIR_SUM_BF16 if IS_BF16 else PAIR_SUM_F16
    return tl.inline_asm_elementwise(asm, "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _pair_sq(v, mean, IS_BF16: tl.constexpr):
    asm: tl.constexpr = PAIR_SQ_BF16 if IS_BF16 else PAIR_SQ_F16
    return tl.inline_asm_elementwise(asm, "=r,r,r", [v, tl.zeros(v.shape, dtype=tl.float32) + mean],
                                     dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _pair_affine(v, scale, shift, IS_BF16: tl.constexpr):
    asm: tl.constexpr = PAIR_AFFINE_BF16 if IS_BF16 else PAIR_AFFINE_F16
    zero = tl.zeros(v.shape, dtype=tl.float32)
    return tl.inline_asm_elementwise(asm, "=r,r,r,r", [v, zero + scale, zero + shift], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _flat_sum(t):
    """Sum of a 2-D tile as one 1-D reduction in the order its layout holds it: one exchange between warps
    (a sum per axis takes two)."""
    return tl.reduce(tl.reshape(t, [t.numel], can_reorder=True), 0, _add)


@triton.jit
def _regs_group(X, N, CPG, G, ahead, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """The register kernel's group (program_id(0)) loaded as int32 pairs ([BLOCK_C, BLOCK_HW / 2], channel rows
    masked past CPG), and the group `ahead` programs later asked of L2. Returns (group, its size in elements, that
    size as fp32, channel indices, channel mask, pair mask, pair offsets, the pairs)."""
    PAIRS: tl.constexpr = BLOCK_HW // 2
    grp = tl.program_id(0)
    size = tl.cast(CPG, tl.int64) * BLOCK_HW
    count = (CPG * BLOCK_HW).to(tl.float32)
    cs = tl.arange(0, BLOCK_C)
    ps = tl.arange(0, PAIRS)
    cm = cs < CPG
    mask = cm[:, None] & (ps < PAIRS)[None, :]
    offs = cs[:, None] * PAIRS + ps[None, :]
    v = tl.load((X + grp * size).to(tl.pointer_type(tl.int32)) + offs, mask=mask, other=0,
                eviction_policy="evict_first")
    nxt = grp + ahead
    prefetch_l2((X + tl.cast(nxt, tl.int64) * size).to(tl.pointer_type(tl.int8)), size * 2, nxt < N * G, 128,
                BLOCK_C * BLOCK_HW * 2 // 128)
    return grp, size, count, cs, cm, mask, offs, v


@triton.jit
def group_norm_fwd_regs_kernel(X, W, B, Y, MEAN, RSTD, N, C, CPG, G, eps, has_weight, has_bias, store_stats, ahead,
                               BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """16-bit x whose spatial size is BLOCK_HW and whose group fits a [BLOCK_C, BLOCK_HW] tile: one program per
    group holds it in registers as int32 pairs and reads x once; the statistics are exact two-pass (mean, then the
    centred sum of squares) from the registers. While this group is reduced, group + ahead (about half a wave
    later) is prefetched into L2, so memory keeps streaming although each SM holds one program.
    H200, [32, 512, 64, 64] bf16 (scripts/tune_group_norm.py --regs, JIT): 76.4 us at 16 warps with ahead = half
    the SMs, against 82 without the prefetch, 95 with a reduction per axis, and 106 for the two-pass tiles; the
    same kernel without statistics 70.4, a copy of x 67.6."""
    IS_BF16: tl.constexpr = X.dtype.element_ty == tl.bfloat16
    grp, size, count, cs, cm, mask, offs, v = _regs_group(X, N, CPG, G, ahead, BLOCK_C, BLOCK_HW)
    mean = _flat_sum(_pair_sum(v, IS_BF16)) / count
    rstd = 1.0 / tl.sqrt_rn(_flat_sum(tl.where(mask, _pair_sq(v, mean, IS_BF16), 0.0)) / count + eps)
    if store_stats:
        tl.store(MEAN + grp, mean)
        tl.store(RSTD + grp, rstd)
    scale, shift = _channel_affine(W, B, (grp % G) * CPG + cs, cm, mean, rstd, has_weight, has_bias, BLOCK_C)
    tl.store((Y + grp * size).to(tl.pointer_type(tl.int32)) + offs,
             _pair_affine(v, scale[:, None], shift[:, None], IS_BF16), mask=mask, eviction_policy="evict_first")


_S16_WORDS = gl.constexpr(128)  # int32 pairs per 256-element row
_S16_CHUNK = gl.constexpr(32)  # rows per [32, 128] chunk
_S16_ROWS = gl.constexpr(SPLIT16_GROUP // 256)


# The pair asm of the register kernel, wrapped for Gluon (a Gluon kernel cannot call _pair_sum and the others)
@gluon.jit
def _s16_sum(v, IS_BF16: gl.constexpr):
    asm: gl.constexpr = PAIR_SUM_BF16 if IS_BF16 else PAIR_SUM_F16
    return gl.inline_asm_elementwise(asm, "=r,r", [v], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _s16_sq(v, mean_t, IS_BF16: gl.constexpr):
    asm: gl.constexpr = PAIR_SQ_BF16 if IS_BF16 else PAIR_SQ_F16
    return gl.inline_asm_elementwise(asm, "=r,r,r", [v, mean_t], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _s16_store(Y32, base, c, offs, v, scale_rows, shift_rows, row_layout: gl.constexpr, IS_BF16: gl.constexpr):
    """y of chunk c (rows 32 c to 32 c + 31 of the group) from its int32 pairs v and the rows' scale and shift."""
    asm: gl.constexpr = PAIR_AFFINE_BF16 if IS_BF16 else PAIR_AFFINE_F16
    sc = scale_rows.index(c).load(row_layout)[:, None]
    sh = shift_rows.index(c).load(row_layout)[:, None]
    y = gl.inline_asm_elementwise(asm, "=r,r,r,r", [v, sc, sh], dtype=gl.int32, is_pure=True, pack=1)
    gl.store(Y32 + base + c * (_S16_CHUNK * _S16_WORDS) + offs, y, eviction_policy="evict_first")


@gluon.jit
def group_norm_fwd_split16_kernel(X, W, B, Y, MEAN, RSTD, G, CPG, RPC, eps, has_weight, has_bias, store_stats,
                                  REG_ROWS: gl.constexpr):
    """16-bit x, groups of exactly 256 rows of 256 elements (SPLIT16_GROUP), 16-byte aligned: one program per group
    (program_id(0) = sample * G + group), RPC rows per channel. Rows [0, REG_ROWS) are loaded into registers as
    int32 pairs ([32, 128] chunks; REG_ROWS 64: two), the other rows copied into shared memory with cp.async (96 KB)
    while those loads are in flight, so that a program needs at most 64 registers a thread and two programs share
    an SM: one loads or drains its stores while the other reduces (the register kernel, one program per SM, has
    nothing in flight then). Exact two-pass statistics (mean, then the centred sum of squares) over registers and
    shared memory, one block reduction each; then y = x * scale + shift per row, scale and shift of the group's 256
    rows staged in shared memory. A barrier after each shared chunk keeps ptxas from loading all of them at once,
    which spilled (maxnreg 64)."""
    IS_BF16: gl.constexpr = X.dtype.element_ty == gl.bfloat16
    SM_CH: gl.constexpr = (_S16_ROWS - REG_ROWS) // _S16_CHUNK
    NCH: gl.constexpr = _S16_ROWS // _S16_CHUNK
    gl.static_assert(REG_ROWS == 2 * _S16_CHUNK)
    grp = gl.program_id(0)
    layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [gl.num_warps(), 1], [1, 0])
    row_layout: gl.constexpr = gl.SliceLayout(1, layout)
    rows = gl.arange(0, _S16_CHUNK, layout=row_layout)
    offs = rows[:, None] * _S16_WORDS + gl.arange(0, _S16_WORDS, layout=gl.SliceLayout(0, layout))[None, :]
    X32 = X.to(gl.pointer_type(gl.int32), bitcast=True)
    Y32 = Y.to(gl.pointer_type(gl.int32), bitcast=True)
    base = grp.to(gl.int64) * (_S16_ROWS * _S16_WORDS)
    flat: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    smem = gl.allocate_shared_memory(gl.int32, [SM_CH, _S16_CHUNK, _S16_WORDS], flat)
    for c in gl.static_range(SM_CH):
        async_copy.async_copy_global_to_shared(smem.index(c), X32 + base + (REG_ROWS + c * _S16_CHUNK) * _S16_WORDS
                                               + offs, eviction_policy="evict_first")
    async_copy.commit_group()
    v0 = gl.load(X32 + base + offs, eviction_policy="evict_first")
    v1 = gl.load(X32 + base + _S16_CHUNK * _S16_WORDS + offs, eviction_policy="evict_first")
    # per-row weight and bias of the group ([NCH, 32]: one element a thread or fewer), loaded while x arrives
    g_layout: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    g_rows = (gl.arange(0, NCH, layout=gl.SliceLayout(1, g_layout))[:, None] * _S16_CHUNK
              + gl.arange(0, _S16_CHUNK, layout=gl.SliceLayout(0, g_layout))[None, :])
    ch = (grp % G) * CPG + g_rows // RPC
    w = gl.load(W + ch, mask=(g_rows >= 0) & has_weight, other=1.0).to(gl.float32)
    b = gl.load(B + ch, mask=(g_rows >= 0) & has_bias, other=0.0).to(gl.float32)
    count = (_S16_ROWS * 256) * 1.0
    acc = _s16_sum(v0, IS_BF16) + _s16_sum(v1, IS_BF16)
    async_copy.wait_group(0)
    gl.thread_barrier()
    for c in gl.static_range(SM_CH):
        acc += _s16_sum(smem.index(c).load(layout), IS_BF16)
        gl.thread_barrier()
    mean = gl.sum(gl.sum(acc, 1), 0) / count
    mt = gl.zeros([_S16_CHUNK, _S16_WORDS], gl.float32, layout) + mean
    acc = _s16_sq(v0, mt, IS_BF16) + _s16_sq(v1, mt, IS_BF16)
    for c in gl.static_range(SM_CH):
        acc += _s16_sq(smem.index(c).load(layout), mt, IS_BF16)
        gl.thread_barrier()
    rstd = 1.0 / gl.sqrt_rn(gl.sum(gl.sum(acc, 1), 0) / count + eps)
    if store_stats:
        gl.store(MEAN + grp, mean)
        gl.store(RSTD + grp, rstd)
    scale_smem = gl.allocate_shared_memory(gl.float32, [NCH, _S16_CHUNK], flat)
    shift_smem = gl.allocate_shared_memory(gl.float32, [NCH, _S16_CHUNK], flat)
    scale = w * rstd
    scale_smem.store(scale)
    shift_smem.store(b - mean * scale)
    gl.thread_barrier()
    rows_1d: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    scale_rows = scale_smem._reinterpret(gl.float32, [NCH, _S16_CHUNK], rows_1d)
    shift_rows = shift_smem._reinterpret(gl.float32, [NCH, _S16_CHUNK], rows_1d)
    _s16_store(Y32, base, 0, offs, v0, scale_rows, shift_rows, row_layout, IS_BF16)
    _s16_store(Y32, base, 1, offs, v1, scale_rows, shift_rows, row_layout, IS_BF16)
    for c in gl.static_range(SM_CH):
        _s16_store(Y32, base, REG_ROWS // _S16_CHUNK + c, offs, smem.index(c).load(layout), scale_rows, shift_rows,
                   row_layout, IS_BF16)
        gl.thread_barrier()


@triton.jit
def _bwd_one_tile(DY, X, W, MEAN, RSTD, DX, PARTIAL, DW, DB, N, C, CPG, HW, G, has_weight, compute_dwb, own,
                  BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, OWN: tl.constexpr):
    """Groups that fit one tile: dy and x read once, the next group's loaded before this one is reduced.
    own (a grid of G programs, so that each program takes one group of every sample): the program sums its
    channels' dweight / dbias over the samples itself and stores them in DW / DB, with no reduction kernel after.
    Built where OWN (the [4096 / BLOCK_HW, BLOCK_HW] and WIDE tiles): the BIG tiles' backward took 228 registers
    with it against 202 without (sm_90), and [8, 1024, 16, 16] bf16's backward measured 0.0159 ms with it, 0.0143 and
    0.0151 without (H200, bench_group_norm.py)."""
    own = own & OWN
    offs, mask, cs = _tile(0, 0, 0, CPG, HW, BLOCK_C, BLOCK_HW)
    size = CPG.to(tl.int64) * HW
    n_groups = N * G
    count = (CPG * HW).to(tl.float32)
    cm = cs < CPG
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    first = mask & (pid < n_groups)
    nxt_dy = tl.load(DY + tl.cast(pid, tl.int64) * size + offs, mask=first, other=0.0)
    nxt_x = tl.load(X + tl.cast(pid, tl.int64) * size + offs, mask=first, other=0.0)
    own_dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    own_db = tl.zeros([BLOCK_C], dtype=tl.float32)
    for grp in range(pid, n_groups, nprog):
        dy = nxt_dy.to(tl.float32)
        x = nxt_x.to(tl.float32)
        at = tl.cast(grp + nprog, tl.int64) * size + offs
        more = mask & (grp + nprog < n_groups)
        nxt_dy = tl.load(DY + at, mask=more, other=0.0)
        nxt_x = tl.load(X + at, mask=more, other=0.0)
        n = grp // G
        ch = (grp % G) * CPG + cs
        rstd = tl.load(RSTD + grp)
        xh = tl.where(mask, (x - tl.load(MEAN + grp)) * rstd, 0.0)
        db = tl.sum(dy, axis=1)
        dw = tl.sum(dy * xh, axis=1)
        if own:
            own_dw += dw
            own_db += db
        elif compute_dwb:
            row = tl.cast(n, tl.int64) * C + ch
            tl.store(PARTIAL + row, dw, mask=cm)
            tl.store(PARTIAL + N.to(tl.int64) * C + row, db, mask=cm)
        if has_weight:
            w = tl.load(W + ch, mask=cm, other=0.0).to(tl.float32)
        else:
            w = tl.zeros([BLOCK_C], dtype=tl.float32) + 1.0
        c1 = tl.sum(dw * w, axis=0) / count
        c2 = tl.sum(db * w, axis=0) / count
        dx = rstd * (dy * w[:, None] - c2 - xh * c1)
        tl.store(DX + tl.cast(grp, tl.int64) * size + offs, dx.to(DX.dtype.element_ty), mask=mask)
    if own & compute_dwb & (pid < G):
        ch = pid * CPG + cs
        tl.store(DW + ch, own_dw.to(DW.dtype.element_ty), mask=cm)
        tl.store(DB + ch, own_db.to(DB.dtype.element_ty), mask=cm)


@triton.jit
def group_norm_bwd_kernel(DY, X, W, MEAN, RSTD, DX, PARTIAL, DW, DB, N, C, CPG, HW_v, G, has_weight, compute_dwb,
                          own, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, ALIGN: tl.constexpr,
                          PDL: tl.constexpr = False, OWN: tl.constexpr = False):
    pdl_start(PDL)
    # With xh = (x - mean) * rstd and dyw = dy * w[c]:
    #   dx = rstd * (dyw - mean(dyw) - xh * mean(dyw * xh)) over the group,
    #   dw[c] = sum over n, hw of dy * xh,  db[c] = sum over n, hw of dy (PARTIAL[0, n, c], PARTIAL[1, n, c]).
    # Persistent over groups as the forward: the sums pass reads dy and x, the dx pass reads them again.
    HW = HW_v.to(tl.int64) * ALIGN
    if (CPG <= BLOCK_C) & (HW <= BLOCK_HW):
        _bwd_one_tile(DY, X, W, MEAN, RSTD, DX, PARTIAL, DW, DB, N, C, CPG, HW, G, has_weight, compute_dwb, own,
                      BLOCK_C, BLOCK_HW, OWN)
        return
    for grp in range(tl.program_id(0), N * G, tl.num_programs(0)):
        n = grp // G
        g = grp % G
        base = tl.cast(grp, tl.int64) * CPG * HW
        mean = tl.load(MEAN + grp)
        rstd = tl.load(RSTD + grp)
        sum_dyw = tl.zeros([BLOCK_C], dtype=tl.float32)
        sum_dyw_xh = tl.zeros([BLOCK_C], dtype=tl.float32)
        for c0 in range(0, CPG, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            ch = g * CPG + cs
            cm = cs < CPG
            dy_c = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
            dy_xh_c = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
            for hw0 in range(0, HW, BLOCK_HW):
                offs, mask, _ = _tile(base, c0, hw0, CPG, HW, BLOCK_C, BLOCK_HW)
                dy = tl.load(DY + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
                xh = (tl.load(X + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
                      - mean) * rstd
                dy_c += dy
                dy_xh_c += dy * xh
            db = tl.sum(dy_c, axis=1)
            dw = tl.sum(dy_xh_c, axis=1)
            if compute_dwb:
                row = n.to(tl.int64) * C + ch
                tl.store(PARTIAL + row, dw, mask=cm)
                tl.store(PARTIAL + N.to(tl.int64) * C + row, db, mask=cm)
            if has_weight:
                w = tl.load(W + ch, mask=cm, other=0.0).to(tl.float32)
                db = db * w
                dw = dw * w
            sum_dyw += db
            sum_dyw_xh += dw
        count = (CPG * HW).to(tl.float32)
        c1 = tl.sum(sum_dyw_xh, axis=0) / count
        c2 = tl.sum(sum_dyw, axis=0) / count
        for c0 in range(0, CPG, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            cm = cs < CPG
            if has_weight:
                w = tl.load(W + g * CPG + cs, mask=cm, other=0.0).to(tl.float32)
            else:
                w = tl.zeros([BLOCK_C], dtype=tl.float32) + 1.0
            for hw0 in range(0, HW, BLOCK_HW):
                offs, mask, _ = _tile(base, c0, hw0, CPG, HW, BLOCK_C, BLOCK_HW)
                dy = tl.load(DY + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
                xh = (tl.load(X + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
                      - mean) * rstd
                dx = rstd * (dy * w[:, None] - c2 - xh * c1)
                tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask, eviction_policy="evict_first")


@triton.jit
def group_norm_bwd_sums_kernel(DY, X, MEAN, RSTD, PARTIAL, N, C, CPG, G, HW_v, BLOCK_R: tl.constexpr,
                               BLOCK_HW: tl.constexpr, ALIGN: tl.constexpr, PDL: tl.constexpr):
    """Split backward, pass 1: for BLOCK_R (sample, channel) rows of HW <= BLOCK_HW elements each,
    PARTIAL[0, n, c] = sum of dy * xh and PARTIAL[1, n, c] = sum of dy (the layout the reduction reads)."""
    pdl_start(PDL)
    HW = HW_v * ALIGN
    n_rows = N * C
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    hs = tl.arange(0, BLOCK_HW)
    rm = rows < n_rows
    m = rm[:, None] & (hs < HW)[None, :]
    offs = rows.to(tl.int64)[:, None] * HW + hs[None, :]
    grp = (rows // C) * G + (rows % C) // CPG
    mean = tl.load(MEAN + grp, mask=rm, other=0.0)
    rstd = tl.load(RSTD + grp, mask=rm, other=0.0)
    dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
    xh = (tl.load(X + offs, mask=m, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
    tl.store(PARTIAL + rows, tl.sum(dy * xh, axis=1), mask=rm)
    tl.store(PARTIAL + n_rows.to(tl.int64) + rows, tl.sum(dy, axis=1), mask=rm)


@triton.jit
def group_norm_bwd_dx_kernel(DY, X, W, MEAN, RSTD, PARTIAL, DX, N, C, CPG, G, HW_v, has_weight,
                             BLOCK_R: tl.constexpr, BLOCK_HW: tl.constexpr, GROUP_C: tl.constexpr,
                             ALIGN: tl.constexpr, PDL: tl.constexpr):
    """Split backward, pass 2: dx of channels [BLOCK_R * program_id(1), + BLOCK_R) of group program_id(0), with
    mean(dyw) and mean(dyw * xh) over the group from its CPG (<= GROUP_C) channel sums of pass 1."""
    pdl_start(PDL)
    HW = HW_v * ALIGN
    grp = tl.program_id(0)
    ch0 = (grp % G) * CPG
    row0 = (grp // G).to(tl.int64) * C + ch0
    gs = tl.arange(0, GROUP_C)
    gm = gs < CPG
    sum_dy_xh = tl.load(PARTIAL + row0 + gs, mask=gm, other=0.0)
    sum_dy = tl.load(PARTIAL + N.to(tl.int64) * C + row0 + gs, mask=gm, other=0.0)
    if has_weight:
        wg = tl.load(W + ch0 + gs, mask=gm, other=0.0).to(tl.float32)
        sum_dy_xh = sum_dy_xh * wg
        sum_dy = sum_dy * wg
    count = (CPG * HW).to(tl.float32)
    c1 = tl.sum(sum_dy_xh, axis=0) / count
    c2 = tl.sum(sum_dy, axis=0) / count
    mean = tl.load(MEAN + grp)
    rstd = tl.load(RSTD + grp)
    cs = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    hs = tl.arange(0, BLOCK_HW)
    cm = cs < CPG
    m = cm[:, None] & (hs < HW)[None, :]
    offs = (row0 + cs)[:, None] * HW + hs[None, :]
    if has_weight:
        w = tl.load(W + ch0 + cs, mask=cm, other=0.0).to(tl.float32)
    else:
        w = tl.zeros([BLOCK_R], dtype=tl.float32) + 1.0
    dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
    xh = (tl.load(X + offs, mask=m, other=0.0).to(tl.float32) - mean) * rstd
    dx = rstd * (dy * w[:, None] - c2 - xh * c1)
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=m)


@triton.jit
def group_norm_reduce_kernel(PARTIAL, DW, DB, N, C, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                             PDL: tl.constexpr = False):
    pdl_start(PDL)
    # DW[c] (grid axis 1 = 0) or DB[c] (= 1) = sum over n of PARTIAL[j, n, c], stored in the parameters' dtype
    # (no cast or copy kernels after it).
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    j = tl.program_id(1)
    cm = cs < C
    src = PARTIAL + j.to(tl.int64) * N * C
    acc = tl.zeros([BLOCK_N, BLOCK_C], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + tl.arange(0, BLOCK_N)
        m = (ns < N)[:, None] & cm[None, :]
        acc += tl.load(src + ns.to(tl.int64)[:, None] * C + cs[None, :], mask=m, other=0.0)
    total = tl.sum(acc, axis=0)
    if j == 0:
        tl.store(DW + cs, total.to(DW.dtype.element_ty), mask=cm)
    else:
        tl.store(DB + cs, total.to(DB.dtype.element_ty), mask=cm)


# ---------------------------------------------------------------------------------------------------
# Specializations


def block_c(block_hw):
    return min(MAX_BLOCK_C, TILE // block_hw)


def _warps(tile_elems):
    return 8 if tile_elems >= 4096 else 4


# (x dtype, parameter dtype) pairs built, as layer_norm's: weight and bias in x's dtype when both have it, else
# fp32 (the launcher upcasts; exact for 16-bit parameters): no cast kernels on the usual path.
DTYPE_PAIRS = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")]


def _fwd_sig(dt, pd):
    return {"X": f"*{dt}", "W": f"*{pd}", "B": f"*{pd}", "Y": f"*{dt}", "MEAN": "*fp32", "RSTD": "*fp32",
            "N": "i32", "C": "i32", "CPG": "i32", "HW_v": "i64", "G": "i32", "eps": "fp32", "has_weight": "i1",
            "has_bias": "i1", "store_stats": "i1"}


def _bwd_sig(dt, pd):
    return {"DY": f"*{dt}", "X": f"*{dt}", "W": f"*{pd}", "MEAN": "*fp32", "RSTD": "*fp32", "DX": f"*{dt}",
            "PARTIAL": "*fp32", "DW": f"*{pd}", "DB": f"*{pd}", "N": "i32", "C": "i32", "CPG": "i32", "HW_v": "i64",
            "G": "i32", "has_weight": "i1", "compute_dwb": "i1", "own": "i1"}


def _specs():
    fwd = KernelSpec(group_norm_fwd_kernel)
    bwd = KernelSpec(group_norm_bwd_kernel)
    reduce = KernelSpec(group_norm_reduce_kernel)
    for dt, pd in DTYPE_PAIRS:
        for block_hw in HW_BLOCKS:
            bc = block_c(block_hw)
            alignments = (False, True) if block_hw >= CPP_CONSTANTS["MIN_ALIGNED_BLOCK_HW"] else (False,)
            for aligned in alignments:
                align = 16 // ELEMENT_SIZE[dt] if aligned else 1
                key = {"x_dtype": dt, "p_dtype": pd, "block_hw": block_hw, "aligned": aligned, "wide": False,
                       "big": 0}
                constexprs = {"BLOCK_C": bc, "BLOCK_HW": block_hw, "ALIGN": align, "PDL": False}
                fwd.variants.append(Variant(key=key, signature=_fwd_sig(dt, pd), constexprs=constexprs,
                                            num_warps=_warps(bc * block_hw), aligned=aligned))
                # The backward of 4096-wide spatial tiles walks them as 2048-wide halves: H200, [32, 512, 64, 64]
                # bf16, one program per group (scripts/tune_group_norm.py --tiles): 175 us against 192 at 1 x 4096;
                # the forward keeps 1 x 4096 (105 us; 1 x 2048 131, 4 x 1024 117).
                bwd_constexprs = {**constexprs, "BLOCK_HW": 2048} if block_hw == 4096 else constexprs
                bwd_constexprs = {**bwd_constexprs, "OWN": True}
                bwd.variants.append(Variant(key=key, signature=_bwd_sig(dt, pd), constexprs=bwd_constexprs,
                                            num_warps=_warps(bc * block_hw), aligned=aligned))
                if block_hw == HW_BLOCKS[-1]:
                    # WIDE: [4, 4096] tiles on 16 warps for groups of >= 4 channels of >= 4096 elements (the launcher
                    # picks them; the forward from 16384): H200 bf16, one or two programs per SM
                    # (scripts/tune_group_norm.py --big): backward [32, 512, 64, 64] 146 us against 190,
                    # [16, 256, 128, 128] 160 against 207; forward [16, 256, 128, 128] 98 against 112.5, but
                    # [32, 512, 64, 64] 114 against 105.
                    wide = {**key, "wide": True}
                    wide_constexprs = {"BLOCK_C": CPP_CONSTANTS["WIDE_BLOCK_C"], "BLOCK_HW": block_hw, "ALIGN": align,
                                       "PDL": False}
                    for spec, sig, own in ((fwd, _fwd_sig(dt, pd), {}), (bwd, _bwd_sig(dt, pd), {"OWN": True})):
                        spec.variants.append(Variant(key=wide, signature=sig, constexprs={**wide_constexprs, **own},
                                                     num_warps=16, aligned=aligned))
                for big, hws, warps in ((BIG_TILE, BIG_HW, 8), (BIG16_TILE, BIG16_HW, 16)):
                    if block_hw not in hws or not aligned or (big == BIG16_TILE and dt == "fp32"):
                        continue
                    big_constexprs = {"BLOCK_C": big // block_hw, "BLOCK_HW": block_hw, "ALIGN": align, "PDL": True}
                    fwd.variants.append(Variant(key={**key, "big": big}, signature=_fwd_sig(dt, pd),
                                                constexprs=big_constexprs, num_warps=warps, aligned=True,
                                                launch_pdl=True))
                    if big == BIG_TILE:  # the BIG16 groups' backward is the split one (group_norm_bwd_dx_kernel)
                        bwd.variants.append(Variant(key={**key, "big": big}, signature=_bwd_sig(dt, pd),
                                                    constexprs={**big_constexprs, "OWN": False}, num_warps=warps,
                                                    aligned=True, launch_pdl=True))
    regs = KernelSpec(group_norm_fwd_regs_kernel)
    for dt, pd in DTYPE_PAIRS:
        if dt == "fp32":
            continue
        for block_hw in REG_HW:
            for tile in REG_TILES:
                sig = {k: v for k, v in _fwd_sig(dt, pd).items() if k != "HW_v"}
                sig["ahead"] = "i32"
                # cpg16: channels per group a multiple of 16 (tiles of >= 16 channel rows), promised to the compiler
                # as the JIT does: the row mask becomes uniform per 16 rows (full tiles: no masks or selects).
                # H200 [32, 512, 64, 64] bf16, timed as the benchmarks (scripts/tune_group_norm.py --floor):
                # 76.8 us with the promise, 79.8 without.
                for cpg16 in (False, True) if tile // block_hw >= 16 else (False,):
                    regs.variants.append(Variant(
                        key={"x_dtype": dt, "p_dtype": pd, "block_hw": block_hw, "tile": tile, "cpg16": cpg16},
                        signature=sig, constexprs={"BLOCK_C": tile // block_hw, "BLOCK_HW": block_hw},
                        num_warps=REG_WARPS[tile], aligned=True, divisible=("CPG",) if cpg16 else ()))
    split16 = KernelSpec(group_norm_fwd_split16_kernel)
    for dt, pd in DTYPE_PAIRS:
        if dt == "fp32":
            continue
        # sm_90 only (tuned there: two programs of 96 KB shared memory an SM); elsewhere the register kernel
        split16.variants.append(Variant(
            key={"x_dtype": dt, "p_dtype": pd},
            signature={"X": f"*{dt}", "W": f"*{pd}", "B": f"*{pd}", "Y": f"*{dt}", "MEAN": "*fp32", "RSTD": "*fp32",
                       "G": "i32", "CPG": "i32", "RPC": "i32", "eps": "fp32", "has_weight": "i1", "has_bias": "i1",
                       "store_stats": "i1"},
            constexprs={"REG_ROWS": SPLIT16_REG_ROWS}, num_warps=SPLIT16_WARPS, aligned=True, archs=(90,),
            maxnreg=65536 // (2 * 32 * SPLIT16_WARPS)))
    sums = KernelSpec(group_norm_bwd_sums_kernel)
    dx = KernelSpec(group_norm_bwd_dx_kernel)
    for dt, pd in DTYPE_PAIRS:
        if dt == "fp32":
            continue
        align = 16 // ELEMENT_SIZE[dt]
        for block_hw in BIG16_HW:
            common = {"BLOCK_HW": block_hw, "ALIGN": align, "PDL": True}
            ptrs = {"DY": f"*{dt}", "X": f"*{dt}"}
            if pd == dt:  # pass 1 reads no parameters: one variant per x dtype
                sums.variants.append(Variant(
                    key={"x_dtype": dt, "block_hw": block_hw},
                    signature={**ptrs, "MEAN": "*fp32", "RSTD": "*fp32", "PARTIAL": "*fp32", "N": "i32", "C": "i32",
                               "CPG": "i32", "G": "i32", "HW_v": "i32"},
                    constexprs={**common, "BLOCK_R": SPLIT_SUMS_TILE // block_hw}, num_warps=4, aligned=True,
                    launch_pdl=True))
            dx.variants.append(Variant(
                key={"x_dtype": dt, "p_dtype": pd, "block_hw": block_hw},
                signature={**ptrs, "W": f"*{pd}", "MEAN": "*fp32", "RSTD": "*fp32", "PARTIAL": "*fp32", "DX": f"*{dt}",
                           "N": "i32", "C": "i32", "CPG": "i32", "G": "i32", "HW_v": "i32", "has_weight": "i1"},
                constexprs={**common, "BLOCK_R": SPLIT_DX_TILE // block_hw, "GROUP_C": BIG16_TILE // block_hw},
                num_warps=4, aligned=True, launch_pdl=True))
    for od in ("fp32", "bf16", "fp16"):
        for pdl in (False, True):  # pdl: after a BIG or split backward
            reduce.variants.append(Variant(
                key={"out_dtype": od, "pdl": pdl},
                signature={"PARTIAL": "*fp32", "DW": f"*{od}", "DB": f"*{od}", "N": "i32", "C": "i32"},
                constexprs={"BLOCK_N": 32, "BLOCK_C": CPP_CONSTANTS["REDUCE_BLOCK_C"], "PDL": pdl}, num_warps=4,
                launch_pdl=pdl))
    return [fwd, bwd, reduce, regs, split16, sums, dx]


KERNELS = _specs()
