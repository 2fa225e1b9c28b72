"""torch.compile(fullgraph=True) of the liger_aot-patched model: inference, and training steps with no graph break.

    python examples/deploy/compile_train.py [--device cpu|cuda] [--steps 5]

Dynamo sees each liger:: operator as one opaque node with a Meta kernel (shapes) and a C++ autograd formula
(backward), so the whole forward and loss trace as one graph; ``fullgraph=True`` raises on any graph break.
"""
import argparse

import torch
import torch.nn.functional as F

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)
from tiny_llama import LlamaConfig, TinyLlama


def loss_fn(model: TinyLlama, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(ids)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = TinyLlama(LlamaConfig(), "liger_aot", "liger_flash" if cuda else "sdpa")
    model = model.to(args.device, torch.bfloat16 if cuda else torch.float32)

    compiled_loss = torch.compile(loss_fn, fullgraph=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (4, 32), device=args.device)
    for step in range(args.steps):
        loss = compiled_loss(model, ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"step {step}: loss {loss.item():.4f}")
    with torch.no_grad():
        compiled = torch.compile(model, fullgraph=True)
        diff = (compiled(ids).float() - model(ids).float()).abs().max().item()
    print(f"compiled inference: max |compiled - eager| = {diff:.3g}")


if __name__ == "__main__":
    main()
