"""Is Triton's front end (ASTSource.make_ir) the same MLIR text for every arch of every non-Gluon variant of the build?

    python scripts/front_end_check.py    # no GPU; ~2 min on 2 cores. 2026-11-30: 1416 variants, identical for sm_80/90/100/120
"""
import sys, os, multiprocessing, hashlib
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
import triton
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from build_tools import generate as g

ARCHS = (80, 90, 100, 120)
ops = g.discover_ops()
OPS = {op: g.load_op(op) for op in ops}

def frontend(args):
    op, ki, vi = args
    k = OPS[op].KERNELS[ki]; v = k.variants[vi]; fn = k.fn
    if getattr(fn, "is_gluon", lambda: False)():
        return None
    names = list(fn.arg_names)
    sig = {n: ("constexpr" if n in v.constexprs else v.signature[n]) for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if v.aligned and n in v.signature and v.signature[n].startswith("*")}
    texts = []
    for a in ARCHS:
        if not v.built_for(a):
            continue
        t = GPUTarget("cuda", a, 32); b = triton.compiler.make_backend(t)
        o = b.parse_options({"num_warps": v.num_warps, "num_stages": v.num_stages, "enable_fp_fusion": True})
        ctx = ir.context(); ir.load_dialects(ctx); b.load_dialects(ctx)
        src = ASTSource(fn=fn, signature=sig, constexprs=dict(v.constexprs), attrs=attrs)
        m = src.make_ir(t, o, b.get_codegen_implementation(o), b.get_module_map(), ctx)
        texts.append(str(m))
    return (op, k.name, vi, len(set(texts)), "loc(" in texts[0], len(texts))

if __name__ == "__main__":
    jobs = [(op, ki, vi) for op in ops for ki, k in enumerate(OPS[op].KERNELS) for vi in range(len(k.variants))]
    with multiprocessing.get_context("fork").Pool(2) as p:
        res = [r for r in p.imap_unordered(frontend, jobs, chunksize=8) if r is not None]
    bad = [r for r in res if r[3] != 1]
    print("variants checked:", len(res), "archs compared:", sum(r[5] for r in res), "with locations:", sum(r[4] for r in res))
    print("differing across archs:", bad[:20], len(bad))
