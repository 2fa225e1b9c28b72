"""Sweep launch configurations of the rms_norm kernels with Triton's JIT (same source as the AOT build),
timed like the benchmarks (do_bench, L2 flushed). Prints the best configs per hidden size.

    python scripts/tune_rms_norm.py [hidden ...]      # on the GPU box; 8192 rows, bf16
"""
import sys
from pathlib import Path

import torch
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src.rms_norm import (rms_norm_bwd_kernel, rms_norm_bwd_looped_kernel, rms_norm_dw_kernel,  # noqa: E402
                                 rms_norm_fwd_kernel)
import triton.language as tl  # noqa: E402

ROWS = 8192
DT = torch.bfloat16
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def bench(fn):
    # do_bench flushes L2 between calls, as the benchmarks do; graphs would replay from a warm L2.
    return tt.do_bench(fn, warmup=10, rep=40, return_mode="median")


def tune_fwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    rstd = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    block_n = triton.next_power_of_2(n)
    res = []
    for bm in (1, 2, 4):
        if bm * block_n > 65536 or bm * block_n < 1024:
            continue
        for nw in (4, 8, 16, 32):
            if bm * block_n // (32 * nw) < 2:
                continue
            grid = (triton.cdiv(ROWS, bm),)
            fn = lambda: rms_norm_fwd_kernel[grid](x, w, y, rstd, ROWS, n // 8, n // 8, n // 8, 1e-6, 0.0, True, True,
                                                   CASTING=0, BLOCK_M=bm, BLOCK_N=block_n, ALIGN=8, num_warps=nw)
            try:
                t = bench(fn)
            except Exception as e:  # noqa: BLE001
                print(f"fwd n={n} bm={bm} nw={nw} failed: {str(e)[:80]}")
                continue
            res.append((t, bm, nw))
    res.sort()
    gbs = lambda t: 2 * x.numel() * 2 / t / 1e6
    print(f"fwd n={n:6d}: best " + ", ".join(f"bm={bm} nw={nw} {t*1e3:.1f}us {gbs(t):.0f}GB/s" for t, bm, nw in res[:4]),
          flush=True)


def tune_bwd(n):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dy = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    dx = torch.empty_like(x)
    rstd = torch.rand(ROWS, device="cuda", dtype=torch.float32)
    block_n = triton.next_power_of_2(n)
    res = []
    for bm in (1, 2):
        if bm * block_n > 16384 or bm * block_n < 1024:
            continue
        for nw in (4, 8, 16):
            if bm * block_n // (32 * nw) < 2:
                continue
            for prefetch in (False, True):
                for per_sm in (1, 2, 4):
                    g = min(SMS * per_sm, triton.cdiv(ROWS, bm))
                    part = torch.empty(g, n, device="cuda", dtype=torch.float32)

                    def fn():
                        rms_norm_bwd_kernel[(g,)](dy, x, w, rstd, dx, part, ROWS, n // 8, n // 8, n // 8, n // 8, 0.0,
                                                  True, True, CASTING=0, BLOCK_M=bm, BLOCK_N=block_n, ALIGN=8,
                                                  PREFETCH=prefetch, num_warps=nw)
                        part.sum(0).to(DT)
                    try:
                        t = bench(fn)
                    except Exception as e:  # noqa: BLE001
                        print(f"bwd n={n} bm={bm} nw={nw} failed: {str(e)[:80]}")
                        break
                    res.append((t, bm, nw, prefetch, per_sm))
    res.sort()
    gbs = lambda t: 3 * x.numel() * 2 / t / 1e6
    print(f"bwd n={n:6d}: best " + ", ".join(f"bm={bm} nw={nw} prefetch={pf} per_sm={p} {t*1e3:.1f}us {gbs(t):.0f}GB/s"
                                         for t, bm, nw, pf, p in res[:4]), flush=True)


@triton.jit
def fwd_experiment(X, W, Y, n_rows, n_cols, eps, BLOCK_N: tl.constexpr, PERSISTENT: tl.constexpr,
                   HINTS: tl.constexpr, PREFETCH: tl.constexpr):
    # Forward variants under trial (llama casting, weight present, no rstd store): a persistent grid that
    # loads the weight once per program instead of once per row, streaming cache hints, next-row prefetch.
    cols = tl.arange(0, BLOCK_N)
    w = tl.load(W + cols).to(tl.float32)
    pid = tl.program_id(0)
    if PERSISTENT:
        step = tl.num_programs(0)
    else:
        step = n_rows
    if PREFETCH:
        x_next = tl.load(X + pid.to(tl.int64) * n_cols + cols, mask=(cols < n_cols) & (pid < n_rows))
    for row in range(pid, n_rows, step):
        row64 = tl.cast(row, tl.int64)
        if PREFETCH:
            x = x_next
            nxt = row + step
            x_next = tl.load(X + tl.cast(nxt, tl.int64) * n_cols + cols, mask=(cols < n_cols) & (nxt < n_rows))
        elif HINTS:
            x = tl.load(X + row64 * n_cols + cols, eviction_policy="evict_first")
        else:
            x = tl.load(X + row64 * n_cols + cols)
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(xf * xf, axis=0) / n_cols + eps)
        y = (xf * rstd).to(X.dtype.element_ty).to(tl.float32) * w
        if HINTS:
            tl.store(Y + row64 * n_cols + cols, y.to(X.dtype.element_ty), cache_modifier=".cs")
        else:
            tl.store(Y + row64 * n_cols + cols, y.to(X.dtype.element_ty))


def tune_fwd_experiment(n=4096):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    copy_t = bench(lambda: y.copy_(x))
    print(f"fwd-exp n={n}: same-size copy {copy_t*1e3:.1f}us", flush=True)
    res = []
    for persistent in (False, True):
        for per_sm in ((1,) if not persistent else (2, 4, 8, 16)):
            for hints in (False, True):
                for prefetch in ((False,) if not persistent else (False, True)):
                    for nw in (4, 8):
                        g = min(ROWS, SMS * per_sm) if persistent else ROWS
                        fn = lambda: fwd_experiment[(g,)](x, w, y, ROWS, n, 1e-6, BLOCK_N=n, PERSISTENT=persistent,
                                                          HINTS=hints, PREFETCH=prefetch, num_warps=nw)
                        try:
                            t = bench(fn)
                        except Exception as e:  # noqa: BLE001
                            print(f"fwd-exp failed: {str(e)[:100]}")
                            continue
                        res.append((t, persistent, per_sm, hints, prefetch, nw))
    res.sort()
    for t, persistent, per_sm, hints, prefetch, nw in res[:8]:
        print(f"  {t*1e3:.1f}us ({copy_t / t * 100:.0f}% of copy time) persistent={persistent} per_sm={per_sm} "
              f"hints={hints} prefetch={prefetch} nw={nw}", flush=True)


def tune_dw(n=4096, parts=264):
    part = torch.randn(parts, n, device="cuda", dtype=torch.float32)
    dw = torch.empty(n, device="cuda", dtype=DT)
    res = []
    for bp in (8, 16, 32, 64):
        for bc in (16, 32, 64, 128):
            for nw in (1, 2, 4):
                fn = lambda: rms_norm_dw_kernel[(triton.cdiv(n, bc),)](part, dw, parts, n, BLOCK_P=bp, BLOCK_C=bc,
                                                                     num_warps=nw)
                try:
                    res.append((bench(fn), bp, bc, nw))
                except Exception as e:  # noqa: BLE001
                    print(f"dw failed: {str(e)[:100]}")
    res.sort()
    ref = bench(lambda: part.sum(0).to(DT))
    print(f"dw n={n} parts={parts}: torch sum+cast {ref*1e3:.1f}us; best " +
          ", ".join(f"bp={bp} bc={bc} nw={nw} {t*1e3:.1f}us" for t, bp, bc, nw in res[:5]), flush=True)


@triton.jit
def fwd_1d(X, W, Y, RSTD, n_cols_v, stride_x_v, stride_y_v, eps, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
           MASKED: tl.constexpr):
    # rms_norm_fwd_kernel's llama path for one row per program, written with 1-D tensors.
    n_cols = n_cols_v * ALIGN
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    if MASKED:
        m = cols < n_cols
        x = tl.load(X + row * (stride_x_v * ALIGN) + cols, mask=m, other=0.0).to(tl.float32)
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
    else:
        x = tl.load(X + row * (stride_x_v * ALIGN) + cols).to(tl.float32)
        w = tl.load(W + cols).to(tl.float32)
    rstd = 1.0 / tl.sqrt_rn(tl.sum(x * x, axis=0) / n_cols + eps)
    y = ((x * rstd).to(X.dtype.element_ty).to(tl.float32) * w).to(X.dtype.element_ty)
    if MASKED:
        tl.store(Y + row * (stride_y_v * ALIGN) + cols, y, mask=m)
    else:
        tl.store(Y + row * (stride_y_v * ALIGN) + cols, y)
    tl.store(RSTD + row, rstd)


def tune_fwd_ab(n=4096):
    """Same run, same timer: the built forward kernel against 1-D rewrites of it, to find its last 2 %."""
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    y = torch.empty_like(x)
    rstd = torch.empty(ROWS, device="cuda", dtype=torch.float32)
    v = n // 8
    cases = {"copy": lambda: y.copy_(x)}
    for nw in (4, 8):
        for store in (True, False):
            cases[f"built 2-D nw={nw} store_rstd={store}"] = (
                lambda nw=nw, store=store: rms_norm_fwd_kernel[(ROWS,)](
                    x, w, y, rstd, ROWS, v, v, v, 1e-6, 0.0, True, store, CASTING=0, BLOCK_M=1, BLOCK_N=n, ALIGN=8,
                    num_warps=nw))
        for masked in (True, False):
            cases[f"1-D nw={nw} masked={masked}"] = (
                lambda nw=nw, masked=masked: fwd_1d[(ROWS,)](x, w, y, rstd, v, v, v, 1e-6, BLOCK_N=n, ALIGN=8,
                                                             MASKED=masked, num_warps=nw))
        cases[f"experiment nw={nw}"] = (lambda nw=nw: fwd_experiment[(ROWS,)](
            x, w, y, ROWS, n, 1e-6, BLOCK_N=n, PERSISTENT=False, HINTS=False, PREFETCH=False, num_warps=nw))
    for name, fn in cases.items():
        try:
            t = bench(fn)
        except Exception as e:  # noqa: BLE001
            print(f"fwd-ab n={n} {name} failed: {str(e)[:100]}")
            continue
        print(f"fwd-ab n={n} {name}: {t*1e3:.2f}us {2 * x.numel() * 2 / t / 1e6:.0f}GB/s", flush=True)


def tune_bwd_looped(n=32768):
    x = torch.randn(ROWS, n, device="cuda", dtype=DT)
    dy = torch.randn(ROWS, n, device="cuda", dtype=DT)
    w = torch.rand(n, device="cuda", dtype=DT)
    dx = torch.empty_like(x)
    rstd = torch.rand(ROWS, device="cuda", dtype=torch.float32)
    res = []
    for rows in (1, 2, 4, 8):
        for block_n in (512, 1024, 2048, 4096):
            if rows * block_n < 2048 or rows * block_n > 8192:
                continue
            for nw in (4, 8, 16):
                for per_sm in (1, 2, 4, 8):
                    g = min(SMS * per_sm, triton.cdiv(ROWS, rows))
                    part = torch.empty(g, n, device="cuda", dtype=torch.float32)
                    fn = lambda: rms_norm_bwd_looped_kernel[(g,)](dy, x, w, rstd, dx, part, ROWS, n // 8, n // 8, n // 8,
                                                                  n // 8, 0.0, True, True, CASTING=0, ROWS=rows,
                                                                  BLOCK_N=block_n, ALIGN=8, num_warps=nw)
                    try:
                        res.append((bench(fn), rows, block_n, nw, per_sm))
                    except Exception as e:  # noqa: BLE001  (e.g. more programs than fit at once)
                        print(f"bwd-looped failed rows={rows} bn={block_n} nw={nw} per_sm={per_sm}: {str(e)[:80]}")
                        break
    res.sort()
    gbs = lambda t: 3 * x.numel() * 2 / t / 1e6
    print(f"bwd-looped n={n}: best " + ", ".join(f"rows={r} bn={bn} nw={nw} per_sm={p} {t*1e3:.0f}us {gbs(t):.0f}GB/s"
                                                for t, r, bn, nw, p in res[:6]), flush=True)


if __name__ == "__main__":
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src))
    print(f"copy {2 * src.numel() / t / 1e6:.0f} GB/s", flush=True)
    del src, dst
    if sys.argv[1:2] == ["ab"]:
        for n in (4096, 8192, 16384):
            tune_fwd_ab(n)
        sys.exit(0)
    if sys.argv[1:2] == ["looped"]:
        tune_bwd_looped(32768)
        tune_bwd_looped(65536)
        sys.exit(0)
    if sys.argv[1:2] == ["experiments"]:
        tune_dw(4096, 264)
        tune_dw(8192, 132)
        tune_fwd_experiment(4096)
        tune_fwd_experiment(8192)
        sys.exit(0)
    fwd_sizes = [int(a) for a in sys.argv[1:]] or [4096, 32768, 65536]
    bwd_sizes = [int(a) for a in sys.argv[1:]] or [4096, 2048, 8192, 16384]
    for n in bwd_sizes:
        tune_bwd(n)
    for n in fwd_sizes:
        tune_fwd(n)
