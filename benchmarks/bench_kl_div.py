"""Benchmarks ``liger_aot.ops.kl_div`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_kl_div.py                  # full run
    python benchmarks/bench_kl_div.py --quick          # 4096x128256 only
    python benchmarks/bench_kl_div.py --results        # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full of
``kl_div(input, target, reduction="batchmean")`` over [BT, V] log-probabilities. Bytes counted (what a
memory-bound kernel must move): fwd reads input and target; bwd reads target and writes d input; full is
the sum. Target (issue 5): forward >= 85 % of the copy bandwidth.
"""
import argparse
import sys

import torch
import torch._functorch.config  # noqa: F401  (set below: donated_buffer)
import torch.nn.functional as F

import harness

SHAPES = ((8192, 32000), (4096, 128256), (2048, 256000))
QUICK = ((4096, 128256),)


def torch_kl_div(x, y):
    return F.kl_div(x, y, reduction="batchmean")


def make_case(rows: int, vocab: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(rows, vocab, device="cuda").log_softmax(-1).to(dtype).requires_grad_()
        y = torch.randn(rows, vocab, device="cuda").softmax(-1).to(dtype)
        return harness.Inputs(args=(x, y), leaves=(x,), grad_out=torch.ones((), device="cuda", dtype=dtype))

    e = torch.empty((), dtype=dtype).element_size()
    fwd = 2 * rows * vocab * e
    bwd = 2 * rows * vocab * e
    return harness.Case(f"{rows}x{vocab}", make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, loss: torch.Tensor):
    x, y = (t.detach() for t in inputs.args)
    ref = F.kl_div(x.float(), y.float(), reduction="batchmean")
    if not torch.allclose(loss.float(), ref, rtol=2e-2, atol=1e-3):
        return f"loss {loss.float().item():.6g} differs from F.kl_div's {ref.item():.6g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x, y: liger_aot.ops.kl_div(x, y, "batchmean")))
    torch._functorch.config.donated_buffer = False  # "bwd" replays one backward with retain_graph=True
    compiled = torch.compile(torch_kl_div, dynamic=False)
    found += [harness.Provider("torch F.kl_div", torch_kl_div),
              harness.Provider("torch.compile", compiled, compiled=True)]
    if liger_kernel is not None:
        fn = liger_kernel.LigerKLDivLossFunction
        found.append(harness.Provider("Liger-Kernel", lambda x, y: fn.apply(x, y, "batchmean", False, 1e-10)))
    return found


def _load_liger_kernel():
    from liger_kernel.ops.kl_div import LigerKLDivLossFunction
    return argparse.Namespace(LigerKLDivLossFunction=LigerKLDivLossFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="4096x128256 only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kl_div: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"kl_div batchmean, {args.dtype}" + (" (--quick)" if args.quick else ""))
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
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
