"""liger_aot demo: what the wheel holds, RMSNorm as a drop-in for Hugging Face's LlamaRMSNorm, the op under
torch.export and TorchScript, and (on a GPU) its speed next to PyTorch.

    make demo          # or: python examples/demo.py
"""
import time

import torch

import liger_aot


class LlamaRMSNorm(torch.nn.Module):
    """transformers' LlamaRMSNorm, as written there."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def main():
    info = liger_aot.build_info()
    print(f"liger_aot {info['version']}: cubins for {', '.join(info['archs'])} from triton {info['triton_version']}, "
          f"{sum(info['kernels'].values())} kernel variants; built against torch {info['torch_version']}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16
    hidden = 4096
    torch.manual_seed(0)

    hf = LlamaRMSNorm(hidden).to(device, dtype)
    with torch.no_grad():
        hf.weight.normal_(1.0, 0.1)
    liger = liger_aot.nn.LigerRMSNorm(hidden).to(device, dtype)
    liger.load_state_dict(hf.state_dict())  # same parameter names: HF checkpoints load unchanged

    x = torch.randn(4, 2048, hidden, device=device, dtype=dtype, requires_grad=True)
    y_hf, y = hf(x), liger(x)
    g = torch.randn_like(y)
    gx_hf, gw_hf = torch.autograd.grad(y_hf, (x, hf.weight), g)
    gx, gw = torch.autograd.grad(y, (x, liger.weight), g)
    differ = (y != y_hf).sum().item()
    print(f"[{device}] LigerRMSNorm vs LlamaRMSNorm, x {tuple(x.shape)} {dtype}: {differ} of {y.numel()} outputs differ, "
          f"max |dy| {(y.float() - y_hf.float()).abs().max().item():.3g}, "
          f"grad x max |d| {(gx.float() - gx_hf.float()).abs().max().item():.3g}, "
          f"grad w rel {((gw.float() - gw_hf.float()).norm() / gw_hf.float().norm()).item():.2e}")

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    ep = torch.export.export(liger, (x.detach()[:2, :16].contiguous(),), dynamic_shapes=({0: batch, 1: seq},))
    ops = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"})
    print(f"torch.export with dynamic batch/seq: graph calls {ops}; runs at {tuple(ep.module()(x.detach()[:3, :7]).shape)}")
    scripted = torch.jit.script(liger)
    print(f"TorchScript: scripted module output equal: {torch.equal(scripted(x.detach()), y.detach())}")

    if device == "cuda":
        import torch.nn.functional as F
        xb = torch.randn(8192, hidden, device=device, dtype=dtype, requires_grad=True)
        gb = torch.randn_like(xb)

        def bench(fn, n=50):
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t) / n * 1e3

        for name, f in [("liger_aot", lambda: liger(xb)), ("F.rms_norm", lambda: F.rms_norm(xb, (hidden,), liger.weight)),
                        ("HF eager", lambda: hf(xb))]:
            full = bench(lambda: torch.autograd.grad(f(), (xb,), gb))
            print(f"  8192x{hidden} bf16 fwd+bwd {name:>10}: {full:.3f} ms")
    else:
        print("(no GPU here: the CUDA kernels run where a GPU is; `make test` ran the CPU reference)")


if __name__ == "__main__":
    main()
