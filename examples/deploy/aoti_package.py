"""AOTInductor: the exported model compiled ahead of time into a package (.pt2) that Python and C++ load.

    python examples/deploy/aoti_package.py [--out llama.pt2] [--ids ids.pt] [--device cpu|cuda]
    build/examples/liger_llama_aoti llama.pt2 ids.pt          # the C++ loader (examples/cpp)

The compiled code calls the liger:: operators through the dispatcher, so the loading process must have loaded the
library (``import liger_aot`` in Python; ``liger_aot::ops`` in CMake). Compiling a CUDA package needs Triton (Inductor
writes Triton kernels for the ops it generates); loading one does not.
"""
import argparse

import torch

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)
from export import export_model
from tiny_llama import LlamaConfig, TinyLlama


def build_package(model: TinyLlama, path: str) -> str:
    with torch.no_grad():
        ep = export_model(model)
        return torch._inductor.aoti_compile_and_package(ep, package_path=path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="llama.pt2")
    parser.add_argument("--ids", help="also save a [2, 16] int64 batch of token ids here (for the C++ program)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = TinyLlama(LlamaConfig(), "liger_aot", "liger_flash" if cuda else "sdpa")
    model = model.to(args.device, torch.bfloat16 if cuda else torch.float32).eval()

    path = build_package(model, args.out)
    runner = torch._inductor.aoti_load_package(path)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), device=args.device)
    with torch.no_grad():
        diff = (runner(ids).float() - model(ids).float()).abs().max().item()
    print(f"wrote {path}; max |package - eager| = {diff:.3g}")
    if args.ids:
        torch.save(ids.cpu(), args.ids)
        print(f"wrote {args.ids}")


if __name__ == "__main__":
    main()
