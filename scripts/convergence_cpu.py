"""The GPU convergence test's method on the CPU reference of the ops, in bf16: where its tolerances come from.

    PYTHONPATH=python python scripts/convergence_cpu.py llama internvl ...   # families of the patch table

For each family: 30 AdamW steps of the 4-layer model of tests/test_transformers_patch.py, unpatched and patched
(classes, every flag on) from the same weights over the same batches; prints how far the unpatched loss fell and
the relative differences that test_convergence_bf16 bounds (first loss, the largest at any step, the mean of the
last 10 steps).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_transformers_patch as t  # noqa: E402


def main(names):
    for name in names or [f.name for f in t.lt.FAMILIES if f.causal_lms]:
        base, got = t._convergence(name, "cpu", torch.bfloat16, 30)
        rel = (got - base).abs() / base
        tail = abs(got[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
        print(f"{name:18s} unpatched {base[0]:.3f} -> {base[-1]:.3f}  first {100 * rel[0]:.2f} %  "
              f"max {100 * rel.max():.2f} % (step {int(rel.argmax())})  last-10 mean {100 * tail:.2f} %", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
