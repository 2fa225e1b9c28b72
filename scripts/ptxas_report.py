"""Registers and spills of the rms_norm kernels as ptxas reports them (no GPU needed).

    python scripts/ptxas_report.py [arch]      # default 90; bf16 input and weight, casting llama

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
import triton_src.rms_norm as op  # noqa: E402


def report(kernel, v, arch):
    names = list(kernel.fn.arg_names)
    sig = {n: ("constexpr" if n in v.constexprs else v.signature[n]) for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if v.aligned and n in v.signature and v.signature[n].startswith("*")}
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": v.num_warps, "num_stages": v.num_stages})
    compiled = triton.compile(ASTSource(fn=kernel.fn, signature=sig, constexprs=dict(v.constexprs), attrs=attrs),
                              target=target, options=options.__dict__)
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
    print(f"| kernel | key | warps | registers | spill bytes st/ld |\n|---|---|--:|--:|--:|")
    for kernel in op.KERNELS:
        for v in kernel.variants:
            k = v.key
            if k.get("x_dtype", "bf16") != "bf16" or k.get("w_dtype", "bf16") != "bf16" or k.get("casting", 0) != 0:
                continue
            if k.get("aligned") is False:
                continue
            regs, spill = report(kernel, v, arch)
            key = ",".join(f"{a}={b}" for a, b in sorted(k.items()) if a not in ("x_dtype", "w_dtype", "casting"))
            print(f"| {kernel.name} | {key} | {v.num_warps} | {regs} | {spill} |", flush=True)


if __name__ == "__main__":
    main()
