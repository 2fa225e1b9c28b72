"""Registers and spills of an op's kernels as ptxas reports them (no GPU needed).

    python scripts/ptxas_report.py [arch] [op]   # default 90 rms_norm; bf16 variants (casting llama), aligned

Registers decide how many programs an SM holds: a memory-bound kernel that needs more than ~64 per thread at 4
warps (128 at 8...) halves its resident loads (layer_norm's forward had 106 from branches on runtime flags).

Compiles the variants with triton.compile for the given arch and runs the bundled ptxas with -v on the PTX.
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import importlib  # noqa: E402


def compile_variant(kernel, v, arch):
    """triton.compile of one build_tools Variant of a KernelSpec for sm_<arch>, as the AOT build specializes it."""
    v = v.for_arch(arch)
    names = list(kernel.fn.arg_names)
    sig = v.compile_signature(names)
    attrs = v.compile_attrs(names)
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": v.num_warps, "num_stages": v.num_stages,
                                     "launch_pdl": v.launch_pdl, **({"maxnreg": v.maxnreg} if v.maxnreg else {})})
    source = ASTSource
    if getattr(kernel.fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as source
    return triton.compile(source(fn=kernel.fn, signature=sig, constexprs=dict(v.constexprs), attrs=attrs),
                          target=target, options=options.__dict__)


def report(kernel, v, arch):
    compiled = compile_variant(kernel, v, arch)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        text = subprocess.run([get_ptxas(arch).path, "--gpu-name", gpu, "-v", f.name, "-o", "/dev/null"],
                              capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return regs.group(1) if regs else "?", f"{spill.group(1)}/{spill.group(2)}" if spill else "?"


def main():
    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    op = importlib.import_module("triton_src." + (sys.argv[2] if len(sys.argv) > 2 else "rms_norm"))
    print(f"| kernel | key | warps | registers | spill bytes st/ld |\n|---|---|--:|--:|--:|")
    for kernel in op.KERNELS:
        for v in kernel.variants:
            k = v.key
            dtypes = [val for name, val in k.items() if name.endswith("dtype")]
            if any(d != "bf16" for d in dtypes) or k.get("casting", 0) != 0:
                continue
            if k.get("aligned") is False:
                continue
            regs, spill = report(kernel, v, arch)
            key = ",".join(f"{a}={b}" for a, b in sorted(k.items()) if not a.endswith("dtype") and a != "casting")
            print(f"| {kernel.name} | {key} | {v.num_warps} | {regs} | {spill} |", flush=True)


if __name__ == "__main__":
    main()
