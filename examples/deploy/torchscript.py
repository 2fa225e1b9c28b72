"""TorchScript: the liger_aot-patched model scripted, saved, and run from Python or C++.

    python examples/deploy/torchscript.py [--out llama.pt] [--ids ids.pt] [--device cpu|cuda]
    build/examples/liger_llama_torchscript llama.pt ids.pt    # the C++ program (examples/cpp)

The scripted graph calls torch.ops.liger.* (with their C++ autograd, so a scripted model trains too); a C++
program runs it once the library is loaded (CMake target liger_aot::ops).
"""
import argparse

import torch

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)
from tiny_llama import LlamaConfig, TinyLlama, liger_ops_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="llama.pt")
    parser.add_argument("--ids", help="also save a [2, 16] int64 batch of token ids here (for the C++ program)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = TinyLlama(LlamaConfig(), "liger_aot", "liger_flash" if cuda else "sdpa")
    model = model.to(args.device, torch.bfloat16 if cuda else torch.float32).eval()

    scripted = torch.jit.script(model)
    print("liger ops in the scripted graph:", ", ".join(liger_ops_in(str(scripted.inlined_graph))))
    scripted.save(args.out)
    loaded = torch.jit.load(args.out)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), device=args.device)
    with torch.no_grad():
        diff = (loaded(ids).float() - model(ids).float()).abs().max().item()
    print(f"wrote {args.out}; max |loaded - eager| = {diff:.3g}")
    if args.ids:
        torch.save(ids.cpu(), args.ids)
        print(f"wrote {args.ids}")


if __name__ == "__main__":
    main()
