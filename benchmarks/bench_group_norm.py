"""Benchmarks ``liger_aot.ops.group_norm`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_group_norm.py              # [N, C, H, W] shapes with 32 groups + a small case
    python benchmarks/bench_group_norm.py --quick      # [32, 512, 64, 64] only
    python benchmarks/bench_group_norm.py --results    # also append to benchmarks/results/<gpu>.md

Device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full, weight and bias present.
Bytes counted (what a memory-bound kernel must move): fwd reads x and writes y; bwd reads x and dy and
writes dx; full is the sum.
"""
import argparse
import sys

import torch
import torch._functorch.config
import torch.nn.functional as F

import harness

GROUPS = 32
# the last two: Stable-Diffusion-UNet-like groups of 10 x 1024 and 40 x 256 elements
SHAPES = ((32, 512, 64, 64), (16, 256, 128, 128), (64, 128, 32, 32), (8, 1024, 16, 16), (16, 320, 32, 32),
          (16, 1280, 16, 16))
SMALL = (2, 64, 8, 8)
EPS = 1e-5
TOL = {torch.bfloat16: 2**-6, torch.float16: 2**-9, torch.float32: 1e-5}


def make_case(shape, dtype) -> harness.Case:
    c = shape[1]

    def make() -> harness.Inputs:
        x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.nn.Parameter(1 + 0.1 * torch.randn(c, device="cuda", dtype=dtype))
        b = torch.nn.Parameter(0.1 * torch.randn(c, device="cuda", dtype=dtype))
        return harness.Inputs(args=(x, w, b), leaves=(x, w, b), grad_out=torch.randn_like(x))

    e = torch.empty((), dtype=dtype).element_size()
    numel = 1
    for s in shape:
        numel *= s
    fwd, bwd = 2 * numel * e, 3 * numel * e
    return harness.Case("x".join(map(str, shape)), make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, y: torch.Tensor):
    x, w, b = (t.detach().float() for t in inputs.args)
    ref = F.group_norm(x, GROUPS, w, b, EPS)
    tol = TOL[inputs.args[0].dtype]
    if not torch.allclose(y.float(), ref, atol=tol * 4, rtol=tol):
        return f"forward differs from F.group_norm by up to {(y.float() - ref).abs().max().item():.3g}"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x, w, b: liger_aot.ops.group_norm(x, GROUPS, w, b, EPS)))
    torch._functorch.config.donated_buffer = False
    eager = lambda x, w, b: F.group_norm(x, GROUPS, w, b, EPS)  # noqa: E731
    compiled = torch.compile(eager, dynamic=False)
    found += [harness.Provider("F.group_norm", eager),
              harness.Provider("torch.compile", lambda x, w, b: compiled(x, w, b), compiled=True)]
    if liger_kernel is not None:
        function = liger_kernel.LigerGroupNormFunction
        found.append(harness.Provider(
            "Liger-Kernel", lambda x, w, b: function.apply(x, w, b, x.shape[1], GROUPS, EPS)))
    return found


def _load_liger_kernel():
    from liger_kernel.ops.group_norm import LigerGroupNormFunction
    return argparse.Namespace(LigerGroupNormFunction=LigerGroupNormFunction)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="[32, 512, 64, 64] only")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_group_norm: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]
    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"group_norm ({GROUPS} groups), {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)
    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s\n", flush=True)
    shapes = SHAPES[:1] if args.quick else SHAPES + (SMALL,)
    cases = [make_case(s, dtype) for s in shapes]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs.\n\n" + table.markdown(),
        "fwd at a glance:\n\n" + table.pivot("fwd"),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
