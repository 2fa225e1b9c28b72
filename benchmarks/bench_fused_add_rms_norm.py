"""Benchmarks ``liger_aot.ops.fused_add_rms_norm`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_fused_add_rms_norm.py                  # full run, a few minutes on an H200
    python benchmarks/bench_fused_add_rms_norm.py --quick          # hidden 4096 only, < 1 min
    python benchmarks/bench_fused_add_rms_norm.py --results        # also append to benchmarks/results/<gpu>.md

Each provider computes (rms_norm(x + residual), x + residual) with casting_mode "llama" and a weight, and the
backward takes gradients for both outputs (as in a decoder block, where the sum is the next residual).
Baselines: eager ``x + r`` then Hugging Face ``LlamaRMSNorm``'s formula, torch.compile of that, and Liger-Kernel's
``LigerFusedAddRMSNormFunction``. Bytes counted: fwd reads x, r, w and writes y, s, rstd; bwd reads dy, ds,
s, w, rstd and writes ds (the gradient of x and of r) and dw; full is the sum of both.
"""
import argparse
import sys

import torch
import torch._functorch.config  # noqa: F401  (set below: donated_buffer)

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384, 32768)
EPS = 1e-6
# sanity check only (tests/ hold the numerics): four ulps of the 16-bit dtypes
TOL = {torch.bfloat16: 2**-6, torch.float16: 2**-9, torch.float32: 1e-5}


def hf_add_rms_norm(x, r, weight, eps=EPS):
    """``s = x + r`` then ``LlamaRMSNorm.forward`` as written in transformers."""
    s = x + r
    variance = s.float().pow(2).mean(-1, keepdim=True)
    h = s.float() * torch.rsqrt(variance + eps)
    return weight * h.to(s.dtype), s


class Pair:
    """Both outputs of one forward, backpropagated together: what the harness times as one output."""

    def __init__(self, y, s, ds_out):
        self.y, self.s, self.ds_out = y, s, ds_out

    def backward(self, dy, retain_graph=False):
        torch.autograd.backward((self.y, self.s), (dy, self.ds_out), retain_graph=retain_graph)

    def detach(self):
        return self.y.detach()

    @property
    def requires_grad(self):  # the harness's warm-up asks
        return self.y.requires_grad or self.s.requires_grad


def make_case(hidden: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(ROWS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        r = torch.randn(ROWS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.nn.Parameter(1 + 0.1 * torch.randn(hidden, device="cuda", dtype=dtype))
        ds_out = torch.randn_like(x)
        return harness.Inputs(args=(x, r, w, ds_out), leaves=(x, r, w), grad_out=torch.randn_like(x))

    e = torch.empty((), dtype=dtype).element_size()
    fwd = 4 * ROWS * hidden * e + hidden * e + 4 * ROWS
    bwd = 4 * ROWS * hidden * e + 4 * ROWS + 2 * hidden * e
    return harness.Case(f"{ROWS}x{hidden}", make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, y: torch.Tensor):
    x, r, w = (t.detach() for t in inputs.args[:3])
    ref = hf_add_rms_norm(x, r, w)[0].float()
    tol = TOL[x.dtype]
    if not torch.allclose(y.float(), ref, atol=tol, rtol=tol):
        worst = (y.float() - ref).abs().max().item()
        return f"forward differs from the HF formula by up to {worst:.3g} (tol {tol:.3g})"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider(
            "liger_aot", lambda x, r, w, ds: Pair(*liger_aot.ops.fused_add_rms_norm(x, r, w, EPS), ds)))
    torch._functorch.config.donated_buffer = False  # "bwd" mode replays one backward with retain_graph=True
    compiled = torch.compile(hf_add_rms_norm, dynamic=False)
    found += [
        harness.Provider("HF eager (x + r, LlamaRMSNorm)", lambda x, r, w, ds: Pair(*hf_add_rms_norm(x, r, w), ds)),
        harness.Provider("HF torch.compile", lambda x, r, w, ds: Pair(*compiled(x, r, w), ds), compiled=True),
    ]
    if liger_kernel is not None:
        function = liger_kernel.LigerFusedAddRMSNormFunction
        # what LigerFusedAddRMSNorm.forward calls, with its defaults: offset 0, "llama", in_place=False
        found.append(harness.Provider(
            "Liger-Kernel", lambda x, r, w, ds: Pair(*function.apply(x, r, w, EPS, 0.0, "llama", False), ds)))
    return found


def launch_bound(liger_aot, liger_kernel, dtype, notes) -> str:
    x = torch.randn(4, 4096, device="cuda", dtype=dtype)
    r = torch.randn(4, 4096, device="cuda", dtype=dtype)
    w = 1 + 0.1 * torch.randn(4096, device="cuda", dtype=dtype)
    calls = {}
    if liger_aot is not None:
        calls["liger_aot.ops.fused_add_rms_norm"] = lambda: liger_aot.ops.fused_add_rms_norm(x, r, w, EPS)
    calls["torch.add(x, x)"] = lambda: torch.add(x, x)
    calls["HF eager"] = lambda: hf_add_rms_norm(x, r, w)
    if liger_kernel is not None:
        function = liger_kernel.LigerFusedAddRMSNormFunction
        calls["Liger-Kernel"] = lambda: function.apply(x, r, w, EPS, 0.0, "llama", False)
    us = {}
    for name, fn in calls.items():
        try:
            us[name] = harness.host_us_per_call(fn)
        except Exception as e:  # a failing provider is reported, the others still measured
            notes.append(f"launch-bound {name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
    add = us["torch.add(x, x)"]
    lines = [f"| 4×4096 {_name(dtype)} forward, no_grad | µs per call | × torch.add |", "|---|--:|--:|"]
    lines += [f"| {name} | {t:.1f} | {t / add:.2f} |" for name, t in us.items()]
    return "\n".join(lines)


def fwd_vs_copy(table, ceiling) -> str:
    rows = [r for r in table.rows if r.provider == "liger_aot" and r.mode == "fwd" and r.pct is not None]
    lines = ["| case | liger_aot fwd ms | % of copy bandwidth (target ≥ 85 % at the large shape) |", "|---|--:|--:|"]
    lines += [f"| {r.case} | {r.ms:.4g} | {r.pct:.0f} % |" for r in rows]
    return "\n".join(lines)


def _name(dtype: torch.dtype) -> str:
    return next(k for k, v in harness.DTYPES.items() if v == dtype)


def _load_liger_kernel():
    from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction
    return argparse.Namespace(LigerFusedAddRMSNormFunction=LigerFusedAddRMSNormFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="hidden 4096 only (< 1 min)")
    parser.add_argument("--hidden", type=int, nargs="+", metavar="N", help=f"these hidden sizes (default {HIDDEN})")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_fused_add_rms_norm: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"fused_add_rms_norm, {args.dtype}" + (" (--quick)" if args.quick else "")
                                        + (f" (hidden {args.hidden})" if args.hidden else ""))
    print(header + "\n", *notes, sep="\n", flush=True)

    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, read + written)\n", flush=True)
    cases = [make_case(h, dtype) for h in ((4096,) if args.quick else args.hidden or HIDDEN)]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs "
        "(bwd: above the retained forward graph as well).\n\n" + table.markdown(),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
        "forward at a glance:\n\n" + table.pivot("fwd"),
        "Forward bandwidth:\n\n" + fwd_vs_copy(table, ceiling),
        "Host time per call (2000 calls in a loop, torch.cuda.synchronize before and after, median of 5):\n\n"
        + launch_bound(liger_aot, liger_kernel, dtype, notes),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
