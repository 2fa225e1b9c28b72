"""The GPU convergence test's method, on the CPU reference of the ops or on the GPU: where its tolerances come from.

    PYTHONPATH=python python scripts/convergence_cpu.py llama internvl ...   # families of the patch table
    python scripts/convergence_cpu.py --device cuda --each --noise nemotron  # on the GPU box, liger_aot installed

For each family: 30 AdamW steps of the 4-layer model of tests/test_transformers_patch.py in bf16, unpatched and
patched (classes, every flag on) from the same weights over the same batches; prints how far the unpatched loss
fell and the relative differences that test_convergence_bf16 bounds (first loss, the largest at any step, the mean
of the last 10 steps).

--each   also one run per patch flag with only that flag on (which patch moves the curve);
--noise  also an unpatched run whose only difference is rounding (the training's own sensitivity to it): SDPA's
         math backend instead of the fused ones (cuBLAS without bf16 reduced-precision reductions changed nothing
         at these shapes, H200 2026-12-01);
--curves print the loss curves.
"""
import argparse
import contextlib
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_transformers_patch as t  # noqa: E402

FLAGS = ("rope", "fused_linear_cross_entropy", "rms_norm", "layer_norm", "swiglu", "geglu", "relu_squared")


def _only(flag):
    """A patch with every flag of the row off but ``flag``."""
    def patch(name, config):
        fn, kw = t._apply_kwargs(name)
        params = inspect.signature(fn).parameters
        fn(**{**kw, **{f: f == flag for f in FLAGS if f in params}})
    return patch


def _report(name, label, base, got, curves):
    rel = (got - base).abs() / base
    tail = abs(got[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
    print(f"{name:18s} {label:28s} unpatched {base[0]:.3f} -> {base[-1]:.3f}  first {100 * rel[0]:.2f} %  "
          f"max {100 * rel.max():.2f} % (step {int(rel.argmax())})  last-10 mean {100 * tail:.2f} %", flush=True)
    if curves:
        print("  unpatched", " ".join(f"{v:.3f}" for v in base.tolist()))
        print("  other    ", " ".join(f"{v:.3f}" for v in got.tolist()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--each", action="store_true")
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--curves", action="store_true")
    a = parser.parse_args()
    for name in a.names or [f.name for f in t.lt.FAMILIES if f.causal_lms]:
        runs = [("patched (every flag)", None, contextlib.nullcontext)]
        if a.each:
            params = inspect.signature(t._apply_kwargs(name)[0]).parameters
            runs += [(f"only {f}", _only(f), contextlib.nullcontext) for f in FLAGS if f in params]
        if a.noise:
            runs.append(("unpatched, SDPA math", t._no_patch, t._sdpa_math))
        base, curves = t._convergence(name, a.device, torch.bfloat16, a.steps, [r[1:] for r in runs])
        for (label, _, _), got in zip(runs, curves):
            _report(name, label, base, got, a.curves)


if __name__ == "__main__":
    main()
