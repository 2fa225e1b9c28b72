"""SASS instruction counts of one kernel variant (no GPU needed): is a memory-bound kernel issue-bound instead?

    python scripts/sass_report.py <module> <kernel> [key=value ...] [--arch 90] [--dump FILE]
    python scripts/sass_report.py geglu geglu_fwd_kernel x_dtype=bf16 aligned=True int64=False approx=0

Compiles the first variant of triton_src/<module>.py's <kernel> whose key matches, disassembles it with the
nvdisasm bundled with Triton and prints the instruction count and the most frequent opcodes. Divide the count
of the hot path (one of the masked / unmasked copies for flat kernels, the loop body for looped ones) by the
elements a thread handles, and compare with what the memory rate leaves: an SM issues 4 warp-instructions
(128 thread-instructions) per cycle, so at the H200's 4.27 TB/s copy rate over 132 SMs at 1.98 GHz a kernel
moving B bytes per element has about 128 * 132 * 1.98e9 / (4.27e12 / B) instructions per element (~47 for a
16-bit 2-in 1-out kernel, ~31 for 16-bit 1-in 1-out). GeGLU's forward had 44 and ran at 72 % of the copy rate;
at 23 it runs at 100 %.
"""
import argparse
import importlib
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.ptxas_report import compile_variant  # noqa: E402


def find_variant(module, kernel, filters):
    for spec in importlib.import_module(f"triton_src.{module}").KERNELS:
        if spec.fn.__name__ != kernel:
            continue
        for v in spec.variants:
            if all(str(v.key.get(k)) == val for k, val in filters.items()):
                return spec, v
        sys.exit(f"no variant of {kernel} matches {filters}; keys look like {spec.variants[0].key}")
    sys.exit(f"triton_src/{module}.py has no kernel {kernel}")


def compile_sass(spec, v, arch):
    return compile_variant(spec, v, arch).asm["sass"]


def opcodes(sass):
    """Opcode of every instruction line (predicates and modifiers dropped)."""
    ops = []
    for line in sass.splitlines():
        if not re.match(r"^[-0-9a-f]{2}:", line):  # control-code prefix of an instruction line
            continue
        words = line.split("\t", 1)[1].split()
        op = words[1] if words[0].startswith("@") else words[0]
        ops.append(op.rstrip(";").split(".")[0])
    return ops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module")
    parser.add_argument("kernel")
    parser.add_argument("key", nargs="*", help="key=value filters on the variant key")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dump", help="write the SASS here")
    args = parser.parse_args()
    spec, v = find_variant(args.module, args.kernel, dict(k.split("=", 1) for k in args.key))
    sass = compile_sass(spec, v, args.arch)
    if args.dump:
        Path(args.dump).write_text(sass)
    ops = opcodes(sass)
    threads = 32 * v.num_warps
    print(f"{args.kernel} {v.key} constexprs {v.constexprs} warps {v.num_warps} ({threads} threads): "
          f"{len(ops)} instructions")
    print("  " + ", ".join(f"{op} {n}" for op, n in Counter(ops).most_common(20)))


if __name__ == "__main__":
    main()
