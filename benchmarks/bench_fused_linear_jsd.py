"""Benchmarks ``liger_aot.ops.fused_linear_jsd`` against PyTorch and Liger-Kernel: time and peak memory.

    python benchmarks/bench_fused_linear_jsd.py              # full run
    python benchmarks/bench_fused_linear_jsd.py --quick      # 4096 tokens x 4096 hidden x 128256 vocab only
    python benchmarks/bench_fused_linear_jsd.py --results    # also append to benchmarks/results/<gpu>.md

Distillation of a student lm-head against a frozen teacher's: loss = JSD(beta=0.5) of the two
log_softmax(logits / T), gradients for the student's hidden states and weight. Matmul-bound: the table's
GB/s column is not meaningful here; TFLOP/s below counts the four [BT, H] x [H, V] products of fwd+bwd
(student and teacher logits, d input, d weight), and the peak MB above the inputs is the figure that
matters (eager holds several [BT, V] fp32 tensors; the fused op one chunk).
"""
import argparse
import sys

import torch
import torch._functorch.config  # noqa: F401  (set below: donated_buffer)

import harness

BETA = 0.5
TEMPERATURE = 1.0
SHAPES = ((4096, 4096, 128256), (8192, 4096, 128256), (8192, 2048, 32000))
QUICK = ((4096, 4096, 128256),)


def torch_fused_linear_jsd(si, sw, ti, tw):
    """The unfused composition: full logits, fp32 log_softmax, generalized JSD, mean over tokens."""
    x = (si @ sw.t()).float().div(TEMPERATURE).log_softmax(-1)
    with torch.no_grad():
        y = (ti @ tw.t()).float().div(TEMPERATURE).log_softmax(-1)
    q, p = x.exp(), y.exp()
    m = BETA * p + (1 - BETA) * q
    log_m = m.log()
    return (BETA * p * (y - log_m) + (1 - BETA) * q * (x - log_m)).sum() / si.shape[0]


def make_case(bt: int, h: int, v: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        si = torch.randn(bt, h, device="cuda", dtype=dtype, requires_grad=True)
        sw = (torch.randn(v, h, device="cuda") / h**0.5).to(dtype).requires_grad_()
        ti = torch.randn(bt, h, device="cuda", dtype=dtype)
        tw = (torch.randn(v, h, device="cuda") / h**0.5).to(dtype)
        return harness.Inputs(args=(si, sw, ti, tw), leaves=(si, sw), grad_out=torch.ones((), device="cuda"))

    e = torch.empty((), dtype=dtype).element_size()
    nbytes = (2 * bt * h + 2 * v * h) * e
    return harness.Case(f"{bt}x{h}x{v}", make, {"fwd": nbytes, "bwd": nbytes, "full": nbytes})


def check(inputs: harness.Inputs, loss: torch.Tensor):
    si, sw, ti, tw = (t.detach() for t in inputs.args)
    ref = torch_fused_linear_jsd(si, sw, ti, tw)
    if not torch.allclose(loss.float(), ref, rtol=2e-2, atol=1e-3):
        return f"loss {loss.float().item():.6g} differs from the eager composition's {ref.item():.6g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda si, sw, ti, tw: liger_aot.ops.fused_linear_jsd(
            si, sw, ti, tw, None, BETA, -100, TEMPERATURE)))
    torch._functorch.config.donated_buffer = False  # "bwd" replays one backward with retain_graph=True
    compiled = torch.compile(torch_fused_linear_jsd, dynamic=False)
    found += [harness.Provider("torch eager", torch_fused_linear_jsd),
              harness.Provider("torch.compile", compiled, compiled=True)]
    if liger_kernel is not None:
        fn = liger_kernel.LigerFusedLinearJSDFunction
        found.append(harness.Provider("Liger-Kernel", lambda si, sw, ti, tw: fn.apply(
            si, sw, ti, tw, None, BETA, -100, TEMPERATURE)))
    return found


def _load_liger_kernel():
    from liger_kernel.ops.fused_linear_jsd import LigerFusedLinearJSDFunction
    return argparse.Namespace(LigerFusedLinearJSDFunction=LigerFusedLinearJSDFunction)


def tflops_table(table, shapes) -> str:
    flops = {f"{bt}x{h}x{v}": 8 * bt * h * v for bt, h, v in shapes}
    lines = ["| case | provider | fwd+bwd ms | TFLOP/s | peak MB |", "|---|---|--:|--:|--:|"]
    for r in table.rows:
        if r.mode == "full" and r.ms is not None:
            lines.append(f"| {r.case} | {r.provider} | {r.ms:.4g} | {flops[r.case] / r.ms / 1e9:.0f} | "
                         f"{r.peak_mb:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="4096x4096x128256 only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_fused_linear_jsd: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"fused_linear_jsd beta={BETA}, {args.dtype}" +
                                        (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    shapes = QUICK if args.quick else SHAPES
    cases = [make_case(bt, h, v, dtype) for bt, h, v in shapes]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check,
                        warmup=3, rep=10)
    sections = [
        "Device time, median of CUDA events; peak MB above the inputs (bwd: above the retained forward graph). "
        "liger_aot and Liger-Kernel compute the gradients during the forward: compare fwd+bwd.\n\n"
        + table.markdown(),
        "fwd+bwd, TFLOP/s over the four matmuls (8·BT·H·V):\n\n" + tflops_table(table, shapes),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
