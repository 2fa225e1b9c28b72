"""Benchmarks ``liger_aot.ops.tvd`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_tvd.py                  # full run
    python benchmarks/bench_tvd.py --quick          # 4096x128256 only
    python benchmarks/bench_tvd.py --results        # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full of
``tvd(p, q, reduction="batchmean")`` over [BT, V] probabilities. Bytes counted (what a memory-bound kernel
must move): fwd reads p and q; bwd reads p and q and writes d p; full is the sum.
Target (issue 5): forward >= 85 % of the copy bandwidth.
"""
import argparse
import sys

import torch
import torch._functorch.config  # noqa: F401  (set below: donated_buffer)

import harness

SHAPES = ((8192, 32000), (4096, 128256), (2048, 256000))
QUICK = ((4096, 128256),)


def torch_tvd(p, q):
    """Liger-Kernel's LigerTVDLoss in eager PyTorch (fp32 math), batchmean."""
    return 0.5 * (p.float() - q.float()).abs().sum() / p.shape[0]


def make_case(rows: int, vocab: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(rows, vocab, device="cuda").softmax(-1).to(dtype).requires_grad_()
        y = torch.randn(rows, vocab, device="cuda").softmax(-1).to(dtype)
        return harness.Inputs(args=(x, y), leaves=(x,), grad_out=torch.ones((), device="cuda"))

    e = torch.empty((), dtype=dtype).element_size()
    fwd = 2 * rows * vocab * e
    bwd = 3 * rows * vocab * e
    return harness.Case(f"{rows}x{vocab}", make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, loss: torch.Tensor):
    x, y = (t.detach() for t in inputs.args)
    ref = torch_tvd(x, y)
    if not torch.allclose(loss.float(), ref, rtol=2e-2, atol=1e-3):
        return f"loss {loss.float().item():.6g} differs from the eager formula's {ref.item():.6g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda p, q: liger_aot.ops.tvd(p, q, None, "batchmean")))
        # While training (p requires grad) liger_aot's forward also writes p's gradient (its backward then has
        # nothing to do for grad_output 1): the forward figure is the op without gradients.
        found.append(harness.Provider("liger_aot, no grad",
                                      lambda p, q: liger_aot.ops.tvd(p.detach(), q, None, "batchmean"),
                                      modes=("fwd",)))
    torch._functorch.config.donated_buffer = False  # "bwd" replays one backward with retain_graph=True
    compiled = torch.compile(torch_tvd, dynamic=False)
    found += [harness.Provider("torch eager", torch_tvd), harness.Provider("torch.compile", compiled, compiled=True)]
    if liger_kernel is not None:
        fn = liger_kernel.LigerTVDLossFunction
        found.append(harness.Provider("Liger-Kernel", lambda p, q: fn.apply(p, q, None, "batchmean", -100)))
    return found


def _load_liger_kernel():
    from liger_kernel.ops.tvd import LigerTVDLossFunction
    return argparse.Namespace(LigerTVDLossFunction=LigerTVDLossFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="4096x128256 only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_tvd: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"tvd batchmean, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s\n", flush=True)
    cases = [make_case(r, v, dtype) for r, v in (QUICK if args.quick else SHAPES)]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs.\n\n" + table.markdown(),
        "fwd at a glance (target: liger_aot >= 85 % of copy):\n\n" + table.pivot("fwd"),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
    ]
    harness.report(header, sections + [table.verdicts(fwd_ours="liger_aot, no grad")], notes, args.results)


if __name__ == "__main__":
    main()
