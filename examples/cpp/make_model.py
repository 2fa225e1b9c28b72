"""Writes the TorchScript module that examples/cpp/main.cpp (liger_rms_norm_demo) runs from C++.

    python examples/cpp/make_model.py --model model.pt [--input input.pt] [--hidden 64]
    liger_rms_norm_demo model.pt [input.pt]

The module holds one parameter, ``weight``, and its forward calls ``torch.ops.liger.rms_norm``; ``--input``
also saves a random [2, 3, hidden] float32 input with ``torch.save`` (the C++ program reads it with
``torch::pickle_load``). Without an input file the C++ program uses ``demo_input()``, computed there with the
same libtorch ops.
"""
import argparse

import torch

import liger_aot  # noqa: F401  (registers torch.ops.liger.*)


class RMSNormModel(torch.nn.Module):
    def __init__(self, hidden: int = 64, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, hidden, dtype=torch.float32))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.liger.rms_norm(x, self.weight, self.eps, 0.0, "llama")


def demo_input() -> torch.Tensor:
    """What liger_rms_norm_demo runs on when it is given no input file (see main.cpp's demo_input)."""
    return torch.arange(2 * 3 * 64, dtype=torch.float32).mul(0.37).sin().mul(3.0).reshape(2, 3, 64)


def make_model(hidden: int = 64) -> torch.jit.ScriptModule:
    return torch.jit.script(RMSNormModel(hidden))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="where to save the scripted module")
    parser.add_argument("--input", help="also save a random input tensor here")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    make_model(args.hidden).save(args.model)
    print(f"wrote {args.model}")
    if args.input:
        gen = torch.Generator().manual_seed(args.seed)
        torch.save(torch.randn(2, 3, args.hidden, generator=gen), args.input)
        print(f"wrote {args.input}")


if __name__ == "__main__":
    main()
