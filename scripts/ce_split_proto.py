"""Prototypes of the FAST cross-entropy training forward (4096 rows, bf16), each timed against the build's kernel
(cross_entropy_fwd_grad_kernel: one program per SM, each row read once from memory and once more from L2 for the
gradient) in one process, with triton.testing.do_bench (L2 flushed), and checked against float64.

    python scripts/ce_split_proto.py [vocab ...]            # on the GPU box; default 128256: the L2 prefetch sweep
    python scripts/ce_split_proto.py [vocab ...] --grids    # AHEAD 2 at 120 / 126 / 128 / 132 programs
    python scripts/ce_split_proto.py [vocab ...] --hold     # also the held-part kernel
    python scripts/ce_split_proto.py [vocab ...] --split    # also the split-row kernel
    python scripts/ce_split_proto.py --ptxas                # no GPU: the split kernel's registers and spills (sm_90)

ce_pf_kernel: the build's kernel plus L2 prefetches (the chunk AHEAD chunks ahead in the sum pass, the next row's
first NEXT chunks in the gradient pass; address step GRAIN, prefetch KIND). AHEAD 2, NEXT 0, 32-byte steps went
into the build (_fast_sums' PREFETCH).
ce_hold_kernel: the row's first HELD logits kept in registers between the passes, only the rest re-read from L2.
ce_split_kernel: each row split over SPLIT programs that hold their part in registers (read once from memory, never
from L2): a program sums exp(x - x[y]) over its part, writes the sum into its slot of SLOTS (filled with -1 before
the launch), polls the row's slots until every part has written, and writes the gradient from the registers. A row
whose sum is not usable (a logit ~88 above the target's, NaN or inf) is summed again by every part from memory
behind the exact row max (same code, same order: every part gets the same lse). Every program of the grid must be
resident at once (maxnreg holds ptxas to the registers that the programs per SM leave).
H200 results (benchmarks/results/h200.md, runs of 2026-11-30 08:45): only the prefetch helped (0.588 against 0.613
ms at 128256 classes). The kernels were refactored into the shared helpers below after those runs (same registers
per ptxas; not re-run on the GPU).
"""
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.cross_entropy import _fast_exp, _fast_sums, _row_max, _zero_row  # noqa: E402


@triton.jit
def _row_target(Y, x_row, row, n_cols):
    # (target, target in [0, V), the target clamped into [0, V), w_y: 1 or NaN outside, x[target] in fp32)
    y = tl.load(Y + row)
    in_range = (y >= 0) & (y < n_cols)
    yc = tl.where(in_range, y, 0)
    return y, in_range, yc, tl.where(in_range, 1.0, float("nan")), tl.load(x_row + yc).to(tl.float32)


@triton.jit
def _store_terms(LOSS_ROW, Z_ROW, LSE, row, ce, z, lse):
    tl.store(LOSS_ROW + row, ce)
    tl.store(Z_ROW + row, z)
    tl.store(LSE + row, lse)


@triton.jit
def _row_start(X, DX, Y, LOSS_ROW, Z_ROW, LSE, r, n_cols, stride_x_v, stride_dx_v, ignore_index,
               ALIGN: tl.constexpr, BLOCK_N: tl.constexpr):
    # row r's pointers and target (_row_target); an ignored row is finished here (zero terms and gradient)
    row = tl.cast(r, tl.int64)
    x_row = X + row * (stride_x_v * ALIGN)
    dx_row = DX + row * (stride_dx_v * ALIGN)
    y, in_range, yc, w_y, x_y = _row_target(Y, x_row, row, n_cols)
    if y == ignore_index:
        _store_terms(LOSS_ROW, Z_ROW, LSE, row, 0.0, 0.0, 0.0)
        _zero_row(dx_row, n_cols, BLOCK_N)
    return row, x_row, dx_row, y != ignore_index, in_range, yc, w_y, x_y


@triton.jit
def _lse_and_terms(x_row, n_cols, d, x_y, LOSS_ROW, Z_ROW, LSE, row, in_range, w_y, a_loss, a_z, lse_square_scale,
                   BLOCK_N: tl.constexpr, ACCURATE: tl.constexpr):
    # lse from the row's sum d of exp(x - x[y]) (summed again behind the exact max when d is unusable, as the
    # build's _fast_lse), the row's terms stored; returns (lse, the gradient's coefficient of p)
    lse = x_y + tl.log(d)
    if (d < 0.5) | (d > 3.0e38) | (d != d):
        m = _row_max(x_row, n_cols, 1.0, False, BLOCK_N)
        shift = tl.where(m == -float("inf"), 0.0, m)
        lse = shift + tl.log(_fast_sums(x_row, n_cols, shift, BLOCK_N, ACCURATE, False))
    _store_terms(LOSS_ROW, Z_ROW, LSE, row, tl.where(in_range, w_y * (lse - x_y), float("nan")),
                 lse_square_scale * lse * lse, lse)
    return lse, a_loss * w_y + a_z * 2.0 * lse_square_scale * lse


@triton.jit
def _target_grad(dx_row, yc, x_y, lse, coef_p, coef_y, ACCURATE: tl.constexpr):
    # after every thread's chunk stores: the target's gradient, less coef_y (as the build's _fast_write_grad)
    tl.debug_barrier()
    tl.store(dx_row + yc, (_fast_exp(x_y, lse, ACCURATE) * coef_p - coef_y).to(dx_row.dtype.element_ty))


@triton.jit
def _opaque(x):
    # a copy the compiler cannot merge with x's earlier uses: the gradient pass converts the 16-bit registers
    # again instead of keeping the sum pass's fp32 values (twice the registers) alive across the exchange
    return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=2)


@triton.jit
def ce_split_kernel(X, Y, STATS, LOSS_ROW, Z_ROW, LSE, DX, SLOTS, n_rows, n_cols_v, stride_x_v, stride_dx_v,
                    ignore_index, lse_square_scale, mean, SPLIT: tl.constexpr, SPLIT_P2: tl.constexpr,
                    BLOCK: tl.constexpr, ALIGN: tl.constexpr, ACCURATE: tl.constexpr):
    n_cols = n_cols_v * ALIGN
    pid = tl.program_id(0)
    groups = tl.num_programs(0) // SPLIT
    g = pid // SPLIT
    part = pid % SPLIT
    part_len = tl.cdiv(tl.cdiv(n_cols_v, SPLIT), 8) * (8 * ALIGN)
    start = part * part_len
    offs = tl.arange(0, BLOCK)
    c = start + offs
    cm = (offs < part_len) & (c < n_cols)
    so = tl.arange(0, SPLIT_P2)
    a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
    a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
    if g < groups:
        for r in range(g, n_rows, groups):
            row = tl.cast(r, tl.int64)
            x_row = X + row * (stride_x_v * ALIGN)
            dx_row = DX + row * (stride_dx_v * ALIGN)
            y, in_range, yc, w_y, x_y = _row_target(Y, x_row, row, n_cols)
            if y == ignore_index:
                tl.store(dx_row + c, tl.zeros([BLOCK], dtype=DX.dtype.element_ty), mask=cm)
                if part == 0:
                    _store_terms(LOSS_ROW, Z_ROW, LSE, row, 0.0, 0.0, 0.0)
            else:
                x = tl.load(x_row + c, mask=cm, other=-float("inf"))
                s = tl.sum(_fast_exp(x.to(tl.float32), x_y, ACCURATE), axis=0)
                tl.store(SLOTS + row * SPLIT_P2 + part, s)
                parts = tl.load(SLOTS + row * SPLIT_P2 + so, mask=so < SPLIT, other=0.0, volatile=True)
                while tl.min(parts, axis=0) < 0.0:
                    parts = tl.load(SLOTS + row * SPLIT_P2 + so, mask=so < SPLIT, other=0.0, volatile=True)
                d = tl.sum(parts, axis=0)
                lse = x_y + tl.log(d)
                if (d < 0.5) | (d > 3.0e38) | (d != d):
                    m = _row_max(x_row, n_cols, 1.0, False, 4096)
                    shift = tl.where(m == -float("inf"), 0.0, m)
                    lse = shift + tl.log(_fast_sums(x_row, n_cols, shift, 4096, ACCURATE, False))
                coef_p = a_loss * w_y + a_z * 2.0 * lse_square_scale * lse
                gr = _fast_exp(_opaque(x).to(tl.float32), lse, ACCURATE) * coef_p
                tl.store(dx_row + c, gr.to(DX.dtype.element_ty), mask=cm)
                if (yc >= start) & (yc < start + part_len):
                    _target_grad(dx_row, yc, x_y, lse, coef_p, tl.where(in_range, a_loss * w_y, 0.0), ACCURATE)
                if part == 0:
                    _store_terms(LOSS_ROW, Z_ROW, LSE, row, tl.where(in_range, w_y * (lse - x_y), float("nan")),
                                 lse_square_scale * lse * lse, lse)


@triton.jit
def ce_hold_kernel(X, Y, STATS, LOSS_ROW, Z_ROW, LSE, DX, n_rows, n_cols_v, stride_x_v, stride_dx_v, ignore_index,
                   lse_square_scale, mean, HELD: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                   ACCURATE: tl.constexpr):
    # The build's FAST training forward (one program per SM, rows pid, pid + programs, ...), except that the row's
    # first HELD logits stay in registers between the two passes: only the rest is read again from L2, so the
    # rows in flight hold (V - HELD) x 132 bytes of L2 instead of V x 132.
    n_cols = n_cols_v * ALIGN
    a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
    a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
    hc = tl.arange(0, HELD)
    hm = hc < n_cols
    n_rest = tl.maximum(n_cols - HELD, 0)
    for r in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        row, x_row, dx_row, counted, in_range, yc, w_y, x_y = _row_start(
            X, DX, Y, LOSS_ROW, Z_ROW, LSE, r, n_cols, stride_x_v, stride_dx_v, ignore_index, ALIGN, BLOCK_N)
        if counted:
            xh = tl.load(x_row + hc, mask=hm, other=-float("inf"))
            d = _fast_sums(x_row + HELD, n_rest, x_y, BLOCK_N, ACCURATE, False)
            d += tl.sum(_fast_exp(xh.to(tl.float32), x_y, ACCURATE), axis=0)
            lse, coef_p = _lse_and_terms(x_row, n_cols, d, x_y, LOSS_ROW, Z_ROW, LSE, row, in_range, w_y, a_loss, a_z,
                                         lse_square_scale, BLOCK_N, ACCURATE)
            # the rest from L2, then the held part from the registers
            _grad_pass(x_row + HELD, dx_row + HELD, n_rest, lse, coef_p, X, False, 0, BLOCK_N, ACCURATE)
            gh = _fast_exp(_opaque(xh).to(tl.float32), lse, ACCURATE) * coef_p
            tl.store(dx_row + hc, gh.to(DX.dtype.element_ty), mask=hm)
            _target_grad(dx_row, yc, x_y, lse, coef_p, tl.where(in_range, a_loss * w_y, 0.0), ACCURATE)


@triton.jit
def _prefetch_l2(base, BLOCK_N: tl.constexpr, GRAIN: tl.constexpr, KIND: tl.constexpr):
    # L2 prefetch of the BLOCK_N 16-bit elements at base (no register holds the data; the later loads hit L2).
    # KIND 0: prefetch.global.L2::evict_last of every GRAIN-th element's address; 1: the same with evict_normal;
    # 2: one cp.async.bulk.prefetch.L2 of the whole chunk from thread 0.
    if KIND == 2:
        ptrs = base + tl.zeros([1], dtype=tl.int32)
        nbytes = tl.full([1], BLOCK_N * 2, tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; .reg .u32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; "
            "@p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [ptrs, nbytes], dtype=tl.int32, is_pure=False, pack=1)
    elif KIND == 1:
        tl.inline_asm_elementwise("prefetch.global.L2::evict_normal [$1]; mov.u32 $0, 0;", "=r,l",
                                  [base + tl.arange(0, BLOCK_N // GRAIN) * GRAIN], dtype=tl.int32, is_pure=False,
                                  pack=1)
    else:
        tl.inline_asm_elementwise("prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0;", "=r,l",
                                  [base + tl.arange(0, BLOCK_N // GRAIN) * GRAIN], dtype=tl.int32, is_pure=False,
                                  pack=1)


@triton.jit
def _grad_pass(x_row, dx_row, n, lse, coef_p, nrow, has_next, NEXT: tl.constexpr, BLOCK_N: tl.constexpr,
               ACCURATE: tl.constexpr, GRAIN: tl.constexpr = 16, KIND: tl.constexpr = 0):
    # p * coef_p over n logits from L2 as the build's _fast_write_grad (the masked tail first, then the full chunks
    # last to first, one ahead), without the target's term; with NEXT, iteration i < NEXT also prefetches chunk i
    # of the next row (nrow, when has_next)
    cols = tl.arange(0, BLOCK_N)
    n_full = (n // BLOCK_N) * BLOCK_N
    last = n_full - BLOCK_N
    if n_full < n:
        c = n_full + cols
        cm = c < n
        x = tl.load(x_row + c, mask=cm, other=-float("inf"), eviction_policy="evict_first").to(tl.float32)
        tl.store(dx_row + c, (_fast_exp(x, lse, ACCURATE) * coef_p).to(dx_row.dtype.element_ty), mask=cm,
                 eviction_policy="evict_first")
    if n_full > 0:
        x_next = tl.load(x_row + last + cols, eviction_policy="evict_first")
        for i in range(0, n_full, BLOCK_N):
            if NEXT > 0:
                if has_next & (i < NEXT * BLOCK_N) & (i < n_full):
                    _prefetch_l2(nrow + i, BLOCK_N, GRAIN, KIND)
            start = last - i
            x = x_next.to(tl.float32)
            x_next = tl.load(x_row + tl.maximum(start - BLOCK_N, 0) + cols, eviction_policy="evict_first")
            tl.store(dx_row + start + cols, (_fast_exp(x, lse, ACCURATE) * coef_p).to(dx_row.dtype.element_ty),
                     eviction_policy="evict_first")


@triton.jit
def ce_pf_kernel(X, Y, STATS, LOSS_ROW, Z_ROW, LSE, DX, n_rows, n_cols_v, stride_x_v, stride_dx_v, ignore_index,
                 lse_square_scale, mean, AHEAD: tl.constexpr, NEXT: tl.constexpr, BLOCK_N: tl.constexpr,
                 ALIGN: tl.constexpr, ACCURATE: tl.constexpr, GRAIN: tl.constexpr = 16, KIND: tl.constexpr = 0):
    # The build's FAST training forward, plus L2 prefetches: the sum pass prefetches the chunk AHEAD chunks after
    # the one it loads; the gradient pass prefetches the next row's first NEXT chunks (one per iteration), so
    # that memory keeps being read while this SM writes.
    n_cols = n_cols_v * ALIGN
    a_loss = tl.where(mean, 1.0 / tl.load(STATS), 1.0)
    a_z = tl.where(mean, 1.0 / tl.load(STATS + 1), 1.0)
    cols = tl.arange(0, BLOCK_N)
    n_full = (n_cols // BLOCK_N) * BLOCK_N
    last = n_full - BLOCK_N
    for r in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        row, x_row, dx_row, counted, in_range, yc, w_y, x_y = _row_start(
            X, DX, Y, LOSS_ROW, Z_ROW, LSE, r, n_cols, stride_x_v, stride_dx_v, ignore_index, ALIGN, BLOCK_N)
        if counted:
            d = tl.zeros([BLOCK_N], dtype=tl.float32)
            if n_full > 0:
                x_next = tl.load(x_row + cols, eviction_policy="evict_last")
                for start in range(0, n_full, BLOCK_N):
                    if AHEAD > 0:
                        if start + AHEAD * BLOCK_N < n_full:
                            _prefetch_l2(x_row + start + AHEAD * BLOCK_N, BLOCK_N, GRAIN, KIND)
                    x = x_next.to(tl.float32)
                    x_next = tl.load(x_row + tl.minimum(start + BLOCK_N, last) + cols, eviction_policy="evict_last")
                    d += _fast_exp(x, x_y, ACCURATE)
            if n_full < n_cols:
                c = n_full + cols
                x = tl.load(x_row + c, mask=c < n_cols, other=-float("inf"), eviction_policy="evict_last")
                d += _fast_exp(x.to(tl.float32), x_y, ACCURATE)
            lse, coef_p = _lse_and_terms(x_row, n_cols, tl.sum(d, axis=0), x_y, LOSS_ROW, Z_ROW, LSE, row, in_range,
                                         w_y, a_loss, a_z, lse_square_scale, BLOCK_N, ACCURATE)
            nrow = X + tl.cast(r + tl.num_programs(0), tl.int64) * (stride_x_v * ALIGN)
            _grad_pass(x_row, dx_row, n_cols, lse, coef_p, nrow, r + tl.num_programs(0) < n_rows, NEXT, BLOCK_N,
                       ACCURATE, GRAIN, KIND)
            _target_grad(dx_row, yc, x_y, lse, coef_p, tl.where(in_range, a_loss * w_y, 0.0), ACCURATE)


# (AHEAD, NEXT, BLOCK_N, warps, GRAIN, KIND): one program per SM
PF_CONFIGS = [(2, 1, 16384, 32, 16, 0), (1, 1, 16384, 32, 16, 0), (3, 1, 16384, 32, 16, 0), (2, 1, 16384, 32, 64, 0),
              (2, 2, 16384, 32, 64, 0), (2, 1, 16384, 32, 16, 1), (2, 1, 16384, 32, 16, 2), (3, 2, 16384, 32, 16, 2),
              (1, 1, 16384, 32, 16, 2), (4, 2, 8192, 32, 16, 0), (4, 2, 8192, 32, 16, 2), (2, 0, 16384, 32, 16, 0)]


# (HELD, BLOCK_N, warps): one program per SM
HOLD_CONFIGS = [(32768, 16384, 32), (65536, 16384, 32), (65536, 8192, 16), (32768, 8192, 16), (65536, 16384, 16),
                (16384, 16384, 32)]


# (BLOCK, warps, programs per SM); ptxas is held to the registers that many programs leave (maxnreg)
CONFIGS = [(32768, 16, 2), (16384, 16, 2), (16384, 8, 4), (8192, 8, 4), (32768, 32, 1), (16384, 32, 1),
           (8192, 4, 8)]


def maxnreg(warps, per_sm):
    return min(255, 65536 // (per_sm * warps * 32)) // 8 * 8


def ptxas():
    import re
    import subprocess
    import tempfile
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    names = list(ce_split_kernel.arg_names)
    sig = {"X": "*bf16", "Y": "*i64", "STATS": "*fp32", "LOSS_ROW": "*fp32", "Z_ROW": "*fp32", "LSE": "*fp32",
           "DX": "*bf16", "SLOTS": "*fp32", "n_rows": "i32", "n_cols_v": "i32", "stride_x_v": "i64",
           "stride_dx_v": "i64", "ignore_index": "i64", "lse_square_scale": "fp32", "mean": "i1"}
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    for block, warps, per_sm in CONFIGS:
        for split in (4, 8):
            const = {"SPLIT": split, "SPLIT_P2": split, "BLOCK": block, "ALIGN": 8, "ACCURATE": False}
            s = {n: ("constexpr" if n in const else sig[n]) for n in names}
            attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if sig.get(n, "").startswith("*")}
            opts = backend.parse_options({"num_warps": warps, "maxnreg": maxnreg(warps, per_sm)})
            k = triton.compile(ASTSource(fn=ce_split_kernel, signature=s, constexprs=const, attrs=attrs),
                               target=target, options=opts.__dict__)
            with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
                f.write(k.asm["ptx"])
                f.flush()
                text = subprocess.run([get_ptxas(90).path, "--gpu-name", "sm_90a", "-v", f.name, "-o", "/dev/null"],
                                      capture_output=True, text=True).stderr
            regs = re.search(r"Used (\d+) registers", text).group(1)
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
            print(f"BLOCK={block:6} warps={warps:2} per_sm={per_sm} SPLIT={split}: {regs} registers "
                  f"(limit {maxnreg(warps, per_sm)}), spills {spill.group(1)}/{spill.group(2)}")


def main():
    if "--ptxas" in sys.argv:
        ptxas()
        return
    import triton.testing as tt
    import triton_src.cross_entropy as ce
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = 4096
    vocabs = [int(v) for v in sys.argv[1:] if v.isdigit()] or [128256]
    bench = lambda fn: tt.do_bench(fn, warmup=10, rep=60, return_mode="median")  # noqa: E731
    for V in vocabs:
        torch.manual_seed(0)
        x = torch.randn(rows, V, device="cuda", dtype=torch.bfloat16) * 3
        t = torch.randint(0, V, (rows,), device="cuda")
        t[::8] = -100
        t[5] = V - 1
        x[7, 11] = 200.0  # a logit far above the target's: the exact-max path
        valid = t != -100
        n = valid.sum().float()
        stats = torch.stack([n, n, torch.tensor(float(V), device="cuda")])
        w = torch.ones(1, device="cuda")
        ce_row, z_row, lse = (torch.empty(rows, device="cuda") for _ in range(3))
        dx = torch.empty_like(x)
        sync, slots = torch.zeros(1, device="cuda", dtype=torch.int32), torch.empty(1, device="cuda")  # no TAIL
        align = 8 if V % 8 == 0 else 1
        ref_lse = torch.logsumexp(x.double(), -1)
        p = torch.softmax(x.double(), -1)
        p[torch.arange(rows, device="cuda"), t.clamp(min=0)] -= 1
        ref_g = torch.where(valid[:, None], p / n.double(), 0.0)
        copy_ms = bench(lambda: dx.copy_(x))
        gb = 2 * x.numel() * 2 / 1e6

        def check(name, ms):
            lse_err = torch.where(valid, lse.double() - ref_lse, 0.0).abs().max().item()
            g_err = ((dx.double() - ref_g).abs().max() / ref_g.abs().max()).item()
            print(f"V={V} {name}: {ms:.4f} ms {gb / ms:6.0f} GB/s ({copy_ms / ms * 100:5.1f} % of copy)  "
                  f"lse err {lse_err:.2e} grad err {g_err:.2e}", flush=True)

        def build():
            ce.cross_entropy_fwd_grad_kernel[(sms,)](
                x, t, w, stats, ce_row, z_row, lse, dx, sync, slots, rows, V // align, V // align, V // align, -100,
                0.0, 0.0, 1.0, False, False, True, BLOCK_N=16384, ALIGN=align, ACCURATE=False, FAST=True,
                num_warps=32)
        dx.fill_(float("nan"))
        build()
        check("build's kernel 16384 x 32 warps x 1/SM", bench(build))
        grids = [sms - 12, sms - 6, sms - 4, sms] if "--grids" in sys.argv else [sms]
        configs = [(2, 0, 16384, 32, 16, 0)] if "--grids" in sys.argv else PF_CONFIGS
        for (ahead, nxt, block, warps, grain, kind), programs in [(c, g) for c in configs for g in grids]:
            def pfk():
                ce_pf_kernel[(programs,)](
                    x, t, stats, ce_row, z_row, lse, dx, rows, V // align, V // align, V // align, -100, 0.0, True,
                    AHEAD=ahead, NEXT=nxt, BLOCK_N=block, ALIGN=align, ACCURATE=False, GRAIN=grain, KIND=kind,
                    num_warps=warps)
            dx.fill_(float("nan"))
            lse.fill_(float("nan"))
            pfk()
            check(f"prefetch ahead {ahead} next {nxt} grain {grain} kind {kind}, {block} x {warps} warps, {programs} "
                  "programs", bench(pfk))
        for held, block, warps in HOLD_CONFIGS if "--hold" in sys.argv else ():
            def hold():
                ce_hold_kernel[(sms,)](
                    x, t, stats, ce_row, z_row, lse, dx, rows, V // align, V // align, V // align, -100, 0.0, True,
                    HELD=held, BLOCK_N=block, ALIGN=align, ACCURATE=False, num_warps=warps)
            dx.fill_(float("nan"))
            lse.fill_(float("nan"))
            hold()
            check(f"hold {held} + stream {block} x {warps} warps x 1/SM", bench(hold))
        for block, warps, per_sm in CONFIGS if "--split" in sys.argv else ():
            split = triton.cdiv(V, block)
            if split > 8:
                continue
            split_p2 = triton.next_power_of_2(split)
            programs = (sms * per_sm) // split * split
            slots = torch.empty(rows * split_p2, device="cuda")

            def run():
                slots.fill_(-1.0)
                ce_split_kernel[(programs,)](
                    x, t, stats, ce_row, z_row, lse, dx, slots, rows, V // align, V // align, V // align, -100,
                    0.0, True, SPLIT=split, SPLIT_P2=split_p2, BLOCK=block, ALIGN=align, ACCURATE=False,
                    num_warps=warps, maxnreg=maxnreg(warps, per_sm))
            dx.fill_(float("nan"))
            lse.fill_(float("nan"))
            run()
            torch.cuda.synchronize()
            k = ce_split_kernel.warmup(x, t, stats, ce_row, z_row, lse, dx, slots, rows, V // align, V // align,
                                       V // align, -100, 0.0, True, SPLIT=split, SPLIT_P2=split_p2, BLOCK=block,
                                       ALIGN=align, ACCURATE=False, num_warps=warps, maxnreg=maxnreg(warps, per_sm),
                                       grid=(programs,))
            check(f"split {split} x BLOCK {block} x {warps} warps x {per_sm}/SM ({programs} programs, "
                  f"{k.n_regs} regs, {k.n_spills} spills)", bench(run))
        print(f"V={V}: copy {copy_ms:.4f} ms ({gb / copy_ms:.0f} GB/s)")


if __name__ == "__main__":
    main()
