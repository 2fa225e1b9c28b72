"""Is Triton's front end (ASTSource.make_ir) the same MLIR text for every arch of every non-Gluon variant of the
build? build_tools/generate.py relies on it: a variant's later archs reuse the first arch's front-end text.

    python scripts/front_end_check.py    # no GPU; ~2 min on 2 cores

2026-11-30: 1416 variants, identical for sm_80 / 90 / 100 / 120.
"""
import multiprocessing
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
import triton  # noqa: E402
from triton._C.libtriton import ir  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from build_tools import generate as g  # noqa: E402

ARCHS = (80, 90, 100, 120)
OPS = {op: g.load_op(op) for op in g.discover_ops()}


def front_end(job):
    """(op, kernel, variant index, distinct texts, has locations, archs compared) of one variant; None for Gluon."""
    op, ki, vi = job
    kernel = OPS[op].KERNELS[ki]
    v = kernel.variants[vi]
    if getattr(kernel.fn, "is_gluon", lambda: False)():
        return None
    names = list(kernel.fn.arg_names)
    texts = []
    for arch in ARCHS:
        if not v.built_for(arch):
            continue
        target = GPUTarget("cuda", arch, 32)
        backend = triton.compiler.make_backend(target)
        options = backend.parse_options({"num_warps": v.num_warps, "num_stages": v.num_stages,
                                         "enable_fp_fusion": True})
        ctx = ir.context()
        ir.load_dialects(ctx)
        backend.load_dialects(ctx)
        src = ASTSource(fn=kernel.fn, signature=v.compile_signature(names), constexprs=dict(v.constexprs),
                        attrs=v.compile_attrs(names))
        module = src.make_ir(target, options, backend.get_codegen_implementation(options),
                             backend.get_module_map(), ctx)
        texts.append(str(module))
    return op, kernel.name, vi, len(set(texts)), "loc(" in texts[0], len(texts)


if __name__ == "__main__":
    jobs = [(op, ki, vi) for op, m in OPS.items() for ki, k in enumerate(m.KERNELS) for vi in range(len(k.variants))]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = [r for r in pool.imap_unordered(front_end, jobs, chunksize=8) if r is not None]
    differ = [r for r in results if r[3] != 1]
    print("variants checked:", len(results), "archs compared:", sum(r[5] for r in results),
          "with locations:", sum(r[4] for r in results))
    print("differing across archs:", len(differ), differ[:20])
