"""Benchmarks ``liger_aot.ops.softmax`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_softmax.py                 # 8192 rows x 1024..32768 and a launch-bound case
    python benchmarks/bench_softmax.py --quick         # 8192x4096 only
    python benchmarks/bench_softmax.py --results       # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full (softmax over the last
dimension), then host time per call at 4x4096. Bytes counted: fwd reads x and writes y; bwd reads y and dy
and writes dx; full is the sum.
"""
import argparse
import sys

import torch
import torch._functorch.config

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384, 32768)
SMALL = (4, 4096)  # launch-bound: the kernels take less time than their launches
# sanity check only (tests/ hold the numerics): a couple of ulps of the result's magnitude
TOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 1e-6}


def make_case(rows: int, hidden: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = (2 * torch.randn(rows, hidden, device="cuda", dtype=dtype)).requires_grad_()
        return harness.Inputs(args=(x,), leaves=(x,), grad_out=torch.randn_like(x))

    e = torch.empty((), dtype=dtype).element_size()
    fwd, bwd = 2 * rows * hidden * e, 3 * rows * hidden * e
    return harness.Case(f"{rows}x{hidden}", make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, y: torch.Tensor):
    (x,) = (t.detach() for t in inputs.args)
    ref = torch.softmax(x.float(), -1)
    err = (y.float() - ref).abs().max().item()
    tol = TOL[x.dtype] * ref.abs().max().item()
    return None if err <= tol else f"forward differs from torch.softmax by {err:.3g} (tol {tol:.3g})"


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x: liger_aot.ops.softmax(x)))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    eager = lambda x: torch.softmax(x, -1)  # noqa: E731
    compiled = torch.compile(eager, dynamic=False)
    found += [harness.Provider("torch.softmax", eager),
              harness.Provider("torch.compile", lambda x: compiled(x), compiled=True)]
    if liger_kernel is not None:
        found.append(harness.Provider("Liger-Kernel", lambda x: liger_kernel.LigerSoftmaxFunction.apply(x)))
    return found


def launch_bound(liger_aot, liger_kernel, dtype, notes) -> str:
    x = torch.randn(*SMALL, device="cuda", dtype=dtype)
    calls = {}
    if liger_aot is not None:
        calls["liger_aot.ops.softmax"] = lambda: liger_aot.ops.softmax(x)
    calls["torch.add(x, x)"] = lambda: torch.add(x, x)
    calls["torch.softmax"] = lambda: torch.softmax(x, -1)
    if liger_kernel is not None:
        calls["Liger-Kernel"] = lambda: liger_kernel.LigerSoftmaxFunction.apply(x)
    us = {}
    for name, fn in calls.items():
        try:
            us[name] = harness.host_us_per_call(fn)
        except Exception as e:
            notes.append(f"launch-bound {name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
    add = us.get("torch.add(x, x)", float("nan"))
    lines = [f"| {SMALL[0]}×{SMALL[1]} forward, no_grad | µs per call | × torch.add |", "|---|--:|--:|"]
    lines += [f"| {name} | {t:.1f} | {t / add:.2f} |" for name, t in us.items()]
    return "\n".join(lines)


def _load_liger_kernel():
    from liger_kernel.ops.softmax import LigerSoftmaxFunction
    return argparse.Namespace(LigerSoftmaxFunction=LigerSoftmaxFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="8192x4096 only")
    parser.add_argument("--hidden", type=lambda t: [int(v) for v in t.split(",")], default=None,
                        help="comma-separated widths instead of the default set (e.g. 16384,32768)")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_softmax: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"softmax, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s\n", flush=True)
    cases = [make_case(ROWS, h, dtype) for h in ((4096,) if args.quick else args.hidden or HIDDEN)]
    if not args.quick and not args.hidden:
        cases.append(make_case(*SMALL, dtype))
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs.\n\n" + table.markdown(),
        "fwd at a glance:\n\n" + table.pivot("fwd"),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
        "Host time per call (2000 calls in a loop, median of 5):\n\n" + launch_bound(liger_aot, liger_kernel, dtype, notes),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
