"""torch.export of the liger_aot-patched model with dynamic batch and sequence length: saved, loaded, run.

    python examples/deploy/export.py [--out llama_ep.pt2] [--device cpu|cuda]

The exported graph holds the liger:: operators as ordinary nodes (printed below); the saved program loads in any
process that has imported liger_aot (no Triton needed).
"""
import argparse

import torch

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)
from tiny_llama import LlamaConfig, TinyLlama, liger_ops_in


def export_model(model: TinyLlama, max_batch: int = 64) -> torch.export.ExportedProgram:
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.config.vocab_size, (2, 8), device=device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    seq = torch.export.Dim("seq", min=1, max=model.config.max_seq_len)
    return torch.export.export(model, (ids,), dynamic_shapes={"input_ids": {0: batch, 1: seq}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="llama_ep.pt2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = TinyLlama(LlamaConfig(), "liger_aot", "liger_flash" if cuda else "sdpa")
    model = model.to(args.device, torch.bfloat16 if cuda else torch.float32).eval()

    ep = export_model(model)
    print("liger ops in the exported graph:", ", ".join(liger_ops_in(str(ep.graph))))
    torch.export.save(ep, args.out)
    loaded = torch.export.load(args.out).module()
    with torch.no_grad():
        for batch, seq in ((1, 1), (3, 17), (2, 64)):
            ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=args.device)
            diff = (loaded(ids).float() - model(ids).float()).abs().max().item()
            print(f"batch {batch} seq {seq}: max |loaded - eager| = {diff:.3g}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
