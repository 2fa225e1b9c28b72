"""Benchmarks ``liger_aot.ops.fused_linear_cross_entropy`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_fused_linear_cross_entropy.py             # 8192 and 4096 tokens, a few minutes
    python benchmarks/bench_fused_linear_cross_entropy.py --quick     # 8192 x 4096 x 128256 only, < 1 min
    python benchmarks/bench_fused_linear_cross_entropy.py --results   # also append to benchmarks/results/<gpu>.md

Device time and peak memory above the inputs for fwd and full (fwd+bwd) of the loss (reduction "mean") of
tokens x hidden inputs through a vocab x hidden head, beside the bf16 matrix-product rate measured in the same
run (the three products of that shape: logits, d input, d weight), which bounds any implementation. The eager
and compiled baselines are what Hugging Face models do: ``F.cross_entropy(F.linear(x, w).float(), target)``.
"bwd" alone is not timed: the fused implementations compute the gradients in the forward and allow one
backward per forward. GB/s counts reading x and w (fwd) and also writing their gradients (full). Target
(issue 5): bf16 8192 x 4096 x 128256 fwd+bwd <= 36 ms (>= 90 % of the matmul rate), peak extra <= 1.1 GB.
"""
import argparse
import os
import sys

import torch
import torch._functorch.config  # noqa: F401  (set below: donated_buffer)
import torch.nn.functional as F

import harness

SHAPES = ((8192, 4096, 128256), (4096, 4096, 128256), (8192, 4096, 152064))
# bf16 fwd+bwd ms, peak MiB. "1.1 GB" read as GiB: the issue gives Liger-Kernel's peak as 1.1 GB, and it measures
# 1129 MiB here (1.10 GiB, 1.18e9 bytes).
TARGET = ("8192x4096x128256", 36.0, 1.1 * 1024)
MODES = ("fwd", "full")
# sanity check only: the loss in bf16 (logits rounded to bf16 by every implementation)
TOL = {torch.bfloat16: 2**-6, torch.float16: 2**-9, torch.float32: 1e-4}


def torch_linear_cross_entropy(x, w, target):
    return F.cross_entropy(F.linear(x, w).float(), target)


def make_case(tokens: int, hidden: int, vocab: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(tokens, hidden, device="cuda", dtype=dtype, requires_grad=True)
        w = (torch.randn(vocab, hidden, device="cuda", dtype=dtype) / hidden**0.5).requires_grad_()
        target = torch.randint(0, vocab, (tokens,), device="cuda")
        target[::8] = -100
        return harness.Inputs(args=(x, w, target), leaves=(x, w), grad_out=torch.ones((), device="cuda"))

    e = torch.empty((), dtype=dtype).element_size()
    reads = (tokens + vocab) * hidden * e
    return harness.Case(f"{tokens}x{hidden}x{vocab}", make, {"fwd": reads, "bwd": 2 * reads, "full": 2 * reads})


def check(inputs: harness.Inputs, loss: torch.Tensor):
    x, w, target = (t.detach() for t in inputs.args)
    ref = torch_linear_cross_entropy(x, w, target)
    tol = TOL[x.dtype] * max(1.0, ref.abs().item())
    if (loss.float() - ref).abs().item() > tol:
        return f"loss {loss.item():.6g} differs from F.linear + F.cross_entropy {ref.item():.6g} (tol {tol:.3g})"
    return None


def _with_chunk(mb, fn):
    """fn under LIGER_FLCE_CHUNK_MB=mb (the launcher reads it at every call)."""
    def run(*args):
        old = os.environ.get("LIGER_FLCE_CHUNK_MB")
        os.environ["LIGER_FLCE_CHUNK_MB"] = str(mb)
        try:
            return fn(*args)
        finally:
            if old is None:
                del os.environ["LIGER_FLCE_CHUNK_MB"]
            else:
                os.environ["LIGER_FLCE_CHUNK_MB"] = old
    return run


def providers(liger_aot, liger_kernel, chunk_mb=()) -> list:
    found = []
    if liger_aot is not None:
        fused = lambda x, w, t: liger_aot.ops.fused_linear_cross_entropy(x, w, t)[0].float()  # noqa: E731
        found.append(harness.Provider("liger_aot", fused))
        # the backward runs inside the forward call, so the chunk size set around the call applies to both
        found += [harness.Provider(f"liger_aot, {mb} MiB chunks", _with_chunk(mb, fused)) for mb in chunk_mb]
    torch._functorch.config.donated_buffer = False
    compiled = torch.compile(torch_linear_cross_entropy, dynamic=False)
    found += [
        harness.Provider("torch linear + F.cross_entropy", torch_linear_cross_entropy),
        harness.Provider("torch.compile", compiled, compiled=True),
    ]
    if liger_kernel is not None:
        function = liger_kernel.LigerFusedLinearCrossEntropyFunction
        # (input, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing, reduction)
        found.append(harness.Provider(
            "Liger-Kernel", lambda x, w, t: function.apply(x, w, t, None, None, -100, 0.0, 0.0, "mean")[0].float()))
    return found


def matmul_ms(tokens: int, hidden: int, vocab: int, dtype: torch.dtype) -> float:
    """Device ms of the three products of the shape (logits, d input, d weight) at cuBLAS's rate."""
    x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
    w = torch.randn(vocab, hidden, device="cuda", dtype=dtype)
    g = torch.randn(tokens, vocab, device="cuda", dtype=dtype)

    def three():
        torch.mm(x, w.t())
        torch.mm(g, w)
        torch.mm(g.t(), x)

    ms = harness.time_ms(three, warmup=100, rep=500)  # ms, as do_bench: ~14 repetitions
    del x, w, g
    torch.cuda.empty_cache()
    return ms


def rate_table(table, shapes, matmul) -> str:
    lines = ["| case | provider | fwd+bwd ms | TFLOP/s (3 products) | % of the matmul rate | peak MB |",
             "|---|---|--:|--:|--:|--:|"]
    for (tokens, hidden, vocab), mm in zip(shapes, matmul):
        case = f"{tokens}x{hidden}x{vocab}"
        flops = 3 * 2 * tokens * hidden * vocab
        lines.append(f"| {case} | cuBLAS, 3 products alone | {mm:.4g} | {flops / mm / 1e9:.0f} | 100 | — |")
        for r in table.rows:
            if r.case == case and r.mode == "full" and r.ms is not None:
                lines.append(f"| {case} | {r.provider} | {r.ms:.4g} | {flops / r.ms / 1e9:.0f} | "
                             f"{100 * mm / r.ms:.0f} | {r.peak_mb:.0f} |")
    return "\n".join(lines)


def target_line(table, shapes, matmul) -> str:
    """Issue 5: <= 36 ms, i.e. >= 90 % of the matmul rate (both judged: this run's three products give the rate),
    and peak extra <= 1.1 GiB."""
    case, limit_ms, limit_mb = TARGET
    rows = {r.provider: r for r in table.rows if r.case == case and r.mode == "full"}
    mine = rows.get("liger_aot")
    if mine is None or mine.ms is None:
        return f"Target {case} fwd+bwd ≤ {limit_ms} ms, peak ≤ {limit_mb:.0f} MiB: not measured"
    mm = dict(zip(("x".join(map(str, s)) for s in shapes), matmul)).get(case)
    rate = "" if mm is None else (f", {100 * mm / mine.ms:.0f} % of the matmul rate (3 products alone {mm:.4g} ms; "
                                  f"90 % is {mm / 0.9:.4g} ms: {'met' if mine.ms <= mm / 0.9 else 'MISSED'})")
    return (f"Target {case} fwd+bwd ≤ {limit_ms} ms and peak ≤ {limit_mb:.0f} MiB (1.1 GiB): liger_aot "
            f"{mine.ms:.4g} ms ({'met' if mine.ms <= limit_ms else 'MISSED'}){rate}, {mine.peak_mb:.0f} MiB "
            f"({'met' if mine.peak_mb <= limit_mb else 'MISSED'})")


def profile(liger_aot, shape, dtype) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    inputs = make_case(*shape, dtype).make()
    x, w, t = inputs.args

    def step():
        loss = liger_aot.ops.fused_linear_cross_entropy(x, w, t)[0]
        loss.backward()
    step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = [(e.device_time_total, e.count, e.key) for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(r[0] for r in rows)
    print(f"profile {'x'.join(map(str, shape))}: GPU {total / 1e3:.2f} ms in kernels", flush=True)
    for us, count, key in sorted(rows, reverse=True)[:12]:
        print(f"  {us / 1e3:8.3f} ms  x{count:<4d} {key[:100]}", flush=True)


def _load_liger_kernel():
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction
    return argparse.Namespace(LigerFusedLinearCrossEntropyFunction=LigerFusedLinearCrossEntropyFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="8192 x 4096 x 128256 only (< 1 min)")
    parser.add_argument("--chunk-mb", default="", help="comma-separated chunk sizes (MiB) to run liger_aot with "
                        "as well (LIGER_FLCE_CHUNK_MB), e.g. 32,64,96")
    parser.add_argument("--profile", action="store_true", help="one liger_aot fwd+bwd of the first shape under "
                        "torch.profiler: the top kernels by GPU time")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_fused_linear_cross_entropy: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"fused_linear_cross_entropy, {args.dtype}" +
                                        (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)

    ceiling = harness.copy_ceiling_gbps()
    shapes = SHAPES[:1] if args.quick else SHAPES
    matmul = [matmul_ms(*s, dtype) for s in shapes]
    for s, mm in zip(shapes, matmul):
        print(f"3 matmuls of {s}: {mm:.3f} ms, {3 * 2 * s[0] * s[1] * s[2] / mm / 1e9:.0f} TFLOP/s", flush=True)
    cases = [make_case(*s, dtype) for s in shapes]
    chunk_mb = [int(v) for v in args.chunk_mb.split(",") if v]
    if args.profile and liger_aot is not None:
        profile(liger_aot, shapes[0], dtype)
    table = harness.run(cases, providers(liger_aot, liger_kernel, chunk_mb), MODES, ceiling, notes, check=check,
                        warmup=100, rep=500)
    sections = [
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs (x, w, target).\n\n"
        + table.markdown(),
        "fwd+bwd against the bf16 matrix-product rate measured in this run:\n\n" + rate_table(table, shapes, matmul),
        target_line(table, shapes, matmul),
    ]
    harness.report(header, sections, notes, args.results)


if __name__ == "__main__":
    main()
