"""Benchmarks ``liger_aot.ops.relu_squared`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_relu_squared.py              # full run (~1 min on an H200)
    python benchmarks/bench_relu_squared.py --quick      # 8192x16384 only
    python benchmarks/bench_relu_squared.py --results    # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full at 8192 rows x
{1024 .. 16384}. Bytes counted: fwd reads x and writes y; bwd reads dy and x and writes dx; full is
the sum. Liger-Kernel's ReLU² (liger_kernel.transformers.relu_squared, when the installed version has it)
is timed through its module.
"""
import argparse
import sys

import torch
import torch._functorch.config

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384)


def eager_relu_squared(x: torch.Tensor) -> torch.Tensor:
    """As written in Primer / Nemotron's MLP: relu(x) squared."""
    return torch.square(torch.relu(x))


def make_case(hidden: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(ROWS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        return harness.Inputs(args=(x,), leaves=(x,), grad_out=torch.randn_like(x))

    n = ROWS * hidden * torch.empty((), dtype=dtype).element_size()
    return harness.Case(f"{ROWS}x{hidden}", make, {"fwd": 2 * n, "bwd": 3 * n, "full": 5 * n})


def check(inputs: harness.Inputs, y: torch.Tensor):
    x = inputs.args[0].detach()
    ref = eager_relu_squared(x.float())
    tol = {torch.bfloat16: 2**-8, torch.float16: 2**-11, torch.float32: 1e-6}[x.dtype]
    if not torch.allclose(y.float(), ref, atol=tol, rtol=tol):
        return f"forward differs from relu(x)^2 by up to {(y.float() - ref).abs().max().item():.3g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", liger_aot.ops.relu_squared))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    compiled = torch.compile(eager_relu_squared, dynamic=False)
    found += [harness.Provider("eager", eager_relu_squared),
              harness.Provider("torch.compile", compiled, compiled=True)]
    if liger_kernel is not None:
        found.append(harness.Provider("Liger-Kernel", liger_kernel.LigerReLUSquared()))
    return found


def _load_liger_kernel():
    from liger_kernel.transformers.relu_squared import LigerReLUSquared
    return argparse.Namespace(LigerReLUSquared=LigerReLUSquared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="8192x16384 only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_relu_squared: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"relu_squared, {args.dtype}" + (" (--quick)" if args.quick else ""))
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
