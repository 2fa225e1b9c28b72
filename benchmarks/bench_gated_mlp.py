"""Benchmarks ``liger_aot.ops.swiglu_mlp`` / ``geglu_mlp`` (whole gated MLPs) against PyTorch and Liger-Kernel.

    python benchmarks/bench_gated_mlp.py               # SwiGLU, three model shapes (~1 min on an H200)
    python benchmarks/bench_gated_mlp.py --gate tanh   # GeGLU (tanh), Gemma's MLP; --gate none: exact GELU
    python benchmarks/bench_gated_mlp.py --quick       # the Llama-3-8B shape only
    python benchmarks/bench_gated_mlp.py --results     # also append to benchmarks/results/<gpu>.md

``down_proj(act(gate_proj(x)) * up_proj(x))`` for 8192 tokens at the (hidden, intermediate) sizes of Llama-3 8B,
Llama-2 7B and the 1.5 B model of bench_e2e.py, bf16, gradients for x and the three weights. The matrix products
are cuBLAS's in every provider; the op's point is memory: its forward keeps gate and up but not their product, and
its backward writes the product and the gradients of gate and up over buffers it already holds. So the table's
peak MB (above the inputs, for one forward or one forward + backward) is the column to read, with the time.
Modes fwd and full only: the op's backward and Liger-Kernel's overwrite what the forward saved, so a backward is
not replayed alone (a retained graph would take the op's functional backward, which is not what training runs).
"""
import argparse
import sys

import torch
import torch.nn.functional as F

import harness

TOKENS = 8192
SHAPES = ((4096, 14336), (4096, 11008), (2048, 8192))  # (hidden, intermediate)
MODES = ("fwd", "full")


def eager_mlp(x, wg, wu, wd, gate="silu"):
    """Hugging Face ``LlamaMLP.forward`` / ``GemmaMLP.forward``: down_proj(act_fn(gate_proj(x)) * up_proj(x))."""
    g = F.linear(x, wg)
    return F.linear((F.silu(g) if gate == "silu" else F.gelu(g, approximate=gate)) * F.linear(x, wu), wd)


def make_case(hidden: int, inter: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        def w(o, i):
            return (torch.randn(o, i, device="cuda", dtype=dtype) / i ** 0.5).requires_grad_()

        x = torch.randn(TOKENS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        args = (x, w(inter, hidden), w(inter, hidden), w(hidden, inter))
        return harness.Inputs(args=args, leaves=args, grad_out=torch.randn(TOKENS, hidden, device="cuda", dtype=dtype))

    # bytes of the activations a fused MLP must read and write at least (x, gate, up, y; the weights once): the
    # GB/s column is a scale, not a ceiling, for an op whose time is its matrix products
    e = torch.empty((), dtype=dtype).element_size()
    acts = e * TOKENS * (2 * hidden + 2 * inter)
    weights = e * 3 * hidden * inter
    return harness.Case(f"{TOKENS}x{hidden}x{inter}", make, {"fwd": acts + weights, "full": 3 * (acts + weights)})


def flops(case: str, mode: str) -> float:
    t, h, i = map(int, case.split("x"))
    return 2.0 * t * h * i * 3 * (1 if mode == "fwd" else 3)


def check(inputs: harness.Inputs, y: torch.Tensor, gate: str):
    ref = eager_mlp(*(t.detach().float() for t in inputs.args), gate=gate)
    err = (y.float() - ref).abs().max().item()
    scale = ref.abs().max().item()
    if err > 2 ** -6 * scale:
        return f"forward differs from the fp32 MLP by {err:.3g} (|y| up to {scale:.3g})"
    return None


def providers(liger_aot, liger_kernel, gate: str) -> list:
    found = []
    if liger_aot is not None:
        if gate == "silu":
            fused, act = liger_aot.ops.swiglu_mlp, liger_aot.ops.swiglu
        else:
            def fused(x, wg, wu, wd):
                return liger_aot.ops.geglu_mlp(x, wg, wu, wd, gate)

            def act(g, u):
                return liger_aot.ops.geglu(g, u, gate)
        found.append(harness.Provider("liger_aot", fused))
        found.append(harness.Provider("liger_aot, modular",
                                      lambda x, wg, wu, wd: F.linear(act(F.linear(x, wg), F.linear(x, wu)), wd)))

    def eager(x, wg, wu, wd):
        return eager_mlp(x, wg, wu, wd, gate)

    compiled = torch.compile(eager, dynamic=False)
    found += [harness.Provider("eager", eager), harness.Provider("torch.compile", compiled, compiled=True)]
    mul = None if liger_kernel is None else {"silu": liger_kernel.LigerSiLUMulFunction,
                                             "tanh": liger_kernel.LigerGELUMulFunction}.get(gate)
    if mul is not None:  # Liger-Kernel's GeGLU is the tanh form only
        found.append(harness.Provider(
            "Liger-Kernel", lambda x, wg, wu, wd: F.linear(mul.apply(F.linear(x, wg), F.linear(x, wu)), wd)))
    return found


def summary(table: harness.Table) -> str:
    lines = ["| case | mode | provider | ms | TFLOP/s | peak MB |", "|---|---|---|--:|--:|--:|"]
    for r in table.rows:
        if r.ms is None:
            continue
        lines.append(f"| {r.case} | {r.mode} | {r.provider} | {r.ms:.4g} | {flops(r.case, r.mode) / r.ms / 1e9:.0f} "
                     f"| {r.peak_mb:.0f} |")
    return "\n".join(lines)


def _load_liger_kernel():
    from liger_kernel.ops.geglu import LigerGELUMulFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    return argparse.Namespace(LigerSiLUMulFunction=LigerSiLUMulFunction, LigerGELUMulFunction=LigerGELUMulFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--gate", choices=("silu", "tanh", "none"), default="silu",
                        help="silu: swiglu_mlp (Llama); tanh or none: geglu_mlp with that GELU (Gemma: tanh)")
    parser.add_argument("--quick", action="store_true", help="the Llama-3-8B shape only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gated_mlp: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    title = "swiglu_mlp" if args.gate == "silu" else f"geglu_mlp (approximate={args.gate})"
    header = harness.environment_header(f"{title}, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    shapes = SHAPES[:1] if args.quick else SHAPES
    cases = [make_case(h, i, dtype) for h, i in shapes]
    table = harness.run(cases, providers(liger_aot, liger_kernel, args.gate), MODES, ceiling, notes,
                        check=lambda inputs, y: check(inputs, y, args.gate))
    sections = [
        f"{TOKENS} tokens; device time, median of CUDA events after an L2 flush; peak MB above the inputs (for full: "
        "the forward's saved tensors and the backward's buffers).\n\n" + summary(table),
        "fwd+bwd ms at a glance:\n\n" + table.pivot("full"),
        "Targets:\n\n- " + table.fastest("full"),
    ]
    harness.report(header, sections, notes, args.results)


if __name__ == "__main__":
    main()
