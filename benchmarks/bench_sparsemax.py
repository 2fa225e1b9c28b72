"""Benchmarks ``liger_aot.ops.sparsemax`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_sparsemax.py                 # 8192 rows x 1024..32768 and a launch-bound case
    python benchmarks/bench_sparsemax.py --quick         # 8192x4096 only
    python benchmarks/bench_sparsemax.py --results       # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full (sparsemax over the last
dimension; the eager baseline is the sort-based formula in torch ops), then host time per call at 4x4096.
Bytes counted: fwd reads x and writes y; bwd reads y and dy
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


def torch_sparsemax(x: torch.Tensor) -> torch.Tensor:
    """Reference sparsemax in torch ops (sort, cumulative sums, support size) in fp32, rounded to x's dtype."""
    xf = x.float()
    z = xf.sort(-1, descending=True).values
    r = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=torch.float32)
    support = 1 + r * z > z.cumsum(-1)
    k = support.sum(-1, keepdim=True)
    tau = (torch.where(support, z, 0).sum(-1, keepdim=True) - 1) / k
    return (xf - tau).clamp_min(0).to(x.dtype)


def check(inputs: harness.Inputs, y: torch.Tensor):
    (x,) = (t.detach() for t in inputs.args)
    ref = torch_sparsemax(x.float())
    err = (y.float() - ref).abs().max().item()
    tol = TOL[x.dtype] * ref.abs().max().item()
    return None if err <= tol else f"forward differs from the sort-based formula by {err:.3g} (tol {tol:.3g})"


def _liger_sparsemax(function, x):
    out = function.apply(x, -1)
    return out[0] if isinstance(out, tuple) else out  # some Liger-Kernel versions return (y,)


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x: liger_aot.ops.sparsemax(x)))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    compiled = torch.compile(torch_sparsemax, dynamic=False)
    found += [harness.Provider("torch ops (sort)", torch_sparsemax),
              harness.Provider("torch.compile", lambda x: compiled(x), compiled=True)]
    if liger_kernel is not None:
        found.append(harness.Provider("Liger-Kernel", lambda x: _liger_sparsemax(liger_kernel.LigerSparsemaxFunction, x)))
    return found


def launch_bound(liger_aot, liger_kernel, dtype, notes) -> str:
    x = torch.randn(*SMALL, device="cuda", dtype=dtype)
    calls = {}
    if liger_aot is not None:
        calls["liger_aot.ops.sparsemax"] = lambda: liger_aot.ops.sparsemax(x)
    calls["torch.add(x, x)"] = lambda: torch.add(x, x)
    calls["torch ops (sort)"] = lambda: torch_sparsemax(x)
    if liger_kernel is not None:
        calls["Liger-Kernel"] = lambda: _liger_sparsemax(liger_kernel.LigerSparsemaxFunction, x)
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
    from liger_kernel.ops.sparsemax import LigerSparsemaxFunction
    return argparse.Namespace(LigerSparsemaxFunction=LigerSparsemaxFunction)


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
        sys.exit("bench_sparsemax: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"sparsemax, {args.dtype}" + (" (--quick)" if args.quick else ""))
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
