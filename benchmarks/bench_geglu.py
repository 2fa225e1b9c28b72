"""Benchmarks ``liger_aot.ops.geglu`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_geglu.py                  # full run (~2 min on an H200)
    python benchmarks/bench_geglu.py --quick          # 8192x14336 only
    python benchmarks/bench_geglu.py --results        # also append to benchmarks/results/<gpu>.md
    python benchmarks/bench_geglu.py --approximate none  # exact GELU (Liger-Kernel has tanh only)

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full at 8192 rows of the
intermediate sizes 4096, 11008 and 14336 (Gemma-7B's is 24576), plus a launch-bound 16x4096
case, and host time per call. Bytes counted (what a memory-bound kernel must move): fwd reads gate and
up and writes y; bwd reads dy, gate and up and writes dgate and dup; full is the sum (8 tensors).
Liger-Kernel's backward writes its gradients into the saved gate and up (its memory trick), so its backward
cannot be replayed alone (the second one raises): it is timed in fwd and full only.
"""
import argparse
import sys

import torch
import torch._functorch.config
import torch.nn.functional as F

import harness

ROWS = 8192
SIZES = (4096, 11008, 14336)
SMALL = (16, 4096)
# sanity check only (tests/ hold the numerics): two ulps of the 16-bit dtypes, as eager rounds gelu(g)
# before the product; fp32 leaves room for tanh / erf implementations
TOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 1e-5}


def eager_geglu(g: torch.Tensor, u: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """``GemmaMLP``'s activation as written in transformers (``gelu_pytorch_tanh``; ``gelu`` for "none")."""
    return F.gelu(g, approximate=approximate) * u


def make_case(rows: int, cols: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        g = torch.randn(rows, cols, device="cuda", dtype=dtype, requires_grad=True)
        u = torch.randn(rows, cols, device="cuda", dtype=dtype, requires_grad=True)
        return harness.Inputs(args=(g, u), leaves=(g, u), grad_out=torch.randn_like(g))

    n = rows * cols * torch.empty((), dtype=dtype).element_size()
    return harness.Case(f"{rows}x{cols}", make, {"fwd": 3 * n, "bwd": 5 * n, "full": 8 * n})


def check(inputs: harness.Inputs, y: torch.Tensor, approximate: str):
    g, u = (t.detach() for t in inputs.args)
    ref = eager_geglu(g.float(), u.float(), approximate)
    tol = TOL[g.dtype]
    if not torch.allclose(y.float(), ref, atol=tol, rtol=tol):
        return f"forward differs from gelu(g) * u by up to {(y.float() - ref).abs().max().item():.3g} (tol {tol:.3g})"
    return None


def providers(liger_aot, liger_kernel, approximate) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda g, u: liger_aot.ops.geglu(g, u, approximate)))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    compiled = torch.compile(eager_geglu, dynamic=False)
    found += [harness.Provider("eager", lambda g, u: eager_geglu(g, u, approximate)),
              harness.Provider("torch.compile", lambda g, u: compiled(g, u, approximate), compiled=True)]
    if liger_kernel is not None and approximate == "tanh":
        found.append(harness.Provider("Liger-Kernel", liger_kernel.LigerGELUMulFunction.apply, modes=("fwd", "full")))
    return found


def host_times(liger_aot, liger_kernel, dtype, approximate, notes) -> str:
    """Host µs per forward call at 4×4096, where launches cost more than the kernels."""
    g, u = (torch.randn(4, 4096, device="cuda", dtype=dtype) for _ in range(2))
    calls = {}
    if liger_aot is not None:
        calls["liger_aot.ops.geglu"] = lambda: liger_aot.ops.geglu(g, u, approximate)
    calls["torch.add(g, u)"] = lambda: torch.add(g, u)
    calls["eager F.gelu(g) * u"] = lambda: eager_geglu(g, u, approximate)
    if liger_kernel is not None and approximate == "tanh":
        calls["Liger-Kernel LigerGELUMulFunction"] = lambda: liger_kernel.LigerGELUMulFunction.apply(g, u)
    lines = [f"| 4×4096 {_name(dtype)} forward, no_grad | µs per call |", "|---|--:|"]
    with torch.no_grad():
        for name, fn in calls.items():
            try:
                lines.append(f"| {name} | {harness.host_us_per_call(fn):.1f} |")
            except Exception as e:  # a failing provider is reported, the others still measured
                notes.append(f"host time {name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
    return "\n".join(lines)


def _name(dtype: torch.dtype) -> str:
    return next(k for k, v in harness.DTYPES.items() if v == dtype)


def _load_liger_kernel():
    from liger_kernel.ops.geglu import LigerGELUMulFunction
    return argparse.Namespace(LigerGELUMulFunction=LigerGELUMulFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="8192x14336 only")
    parser.add_argument("--approximate", choices=("tanh", "none"), default="tanh")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_geglu: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"geglu (approximate={args.approximate}), {args.dtype}"
                                        + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s\n", flush=True)
    shapes = [(ROWS, 14336)] if args.quick else [(ROWS, c) for c in SIZES] + [SMALL]
    cases = [make_case(r, c, dtype) for r, c in shapes]
    table = harness.run(cases, providers(liger_aot, liger_kernel, args.approximate), harness.MODES, ceiling, notes,
                        check=lambda inputs, y: check(inputs, y, args.approximate))
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs.\n\n" + table.markdown(),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
        "Host time per call (2000 calls in a loop, median of 5):\n\n" + host_times(liger_aot, liger_kernel, dtype, args.approximate, notes),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
