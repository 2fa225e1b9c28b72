"""Benchmarks ``liger_aot.ops.dyt`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_dyt.py              # full run (~1 min on an H200)
    python benchmarks/bench_dyt.py --quick      # 8192x16384 only
    python benchmarks/bench_dyt.py --results    # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full at 8192 rows x
{1024 .. 16384}, bf16 x with parameters of x's dtype (beta present). Bytes counted: fwd reads x and
writes y; bwd reads dy and x and writes dx (the parameters and their gradients are negligible); full is
the sum. Liger-Kernel's LigerDyTFunction returns dx in fp32 (PyTorch rounds it afterwards).
"""
import argparse
import sys

import torch
import torch._functorch.config

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384)


def eager_dyt(x, alpha, gamma, beta):
    """The DyT paper's module: gamma * tanh(alpha * x) + beta."""
    return gamma * torch.tanh(alpha * x) + beta


def make_case(hidden: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(ROWS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        alpha = torch.nn.Parameter(torch.full((1,), 0.5, device="cuda", dtype=dtype))
        gamma = torch.nn.Parameter(1 + 0.1 * torch.randn(hidden, device="cuda", dtype=dtype))
        beta = torch.nn.Parameter(0.1 * torch.randn(hidden, device="cuda", dtype=dtype))
        return harness.Inputs(args=(x, alpha, gamma, beta), leaves=(x, alpha, gamma, beta),
                              grad_out=torch.randn_like(x))

    n = ROWS * hidden * torch.empty((), dtype=dtype).element_size()
    return harness.Case(f"{ROWS}x{hidden}", make, {"fwd": 2 * n, "bwd": 3 * n, "full": 5 * n})


def check(inputs: harness.Inputs, y: torch.Tensor):
    x, alpha, gamma, beta = (t.detach().float() for t in inputs.args)
    ref = eager_dyt(x, alpha, gamma, beta)
    tol = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 1e-5}[inputs.args[0].dtype]
    if not torch.allclose(y.float(), ref, atol=tol, rtol=tol):
        return f"forward differs from gamma * tanh(alpha * x) + beta by up to {(y.float() - ref).abs().max().item():.3g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", liger_aot.ops.dyt))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    compiled = torch.compile(eager_dyt, dynamic=False)
    found += [harness.Provider("eager", eager_dyt),
              harness.Provider("torch.compile", compiled, compiled=True)]
    if liger_kernel is not None:
        found.append(harness.Provider("Liger-Kernel", liger_kernel.LigerDyTFunction.apply))
    return found


def _load_liger_kernel():
    from liger_kernel.ops.dyt import LigerDyTFunction
    return argparse.Namespace(LigerDyTFunction=LigerDyTFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="8192x16384 only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_dyt: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"dyt, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s\n", flush=True)
    cases = [make_case(h, dtype) for h in ((16384,) if args.quick else HIDDEN)]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs.\n\n" + table.markdown(),
        "fwd at a glance (target: ≥ 85 % of the copy ceiling at the large shape):\n\n" + table.pivot("fwd"),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
