"""Where the first forward+backward of rms_norm spends its time in a fresh process (CUDA initialised first)."""
import time

import torch


def ms(t0):
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = torch.nn.Parameter(torch.ones(4096, device="cuda", dtype=torch.bfloat16))
dy = torch.randn_like(x)
(torch.ones(4, device="cuda", requires_grad=True) * 2).backward(torch.ones(4, device="cuda"))
torch.cuda.synchronize()
t = time.perf_counter(); a = torch.empty(8192, 4096, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
print(f"two fresh 64 MB allocations: {ms(t):.2f} ms")
p = torch.randn(264, 4096, device="cuda")
t = time.perf_counter(); s = p.sum(0).to(torch.bfloat16); print(f"first sum(0)+to(bf16) on CUDA: {ms(t):.2f} ms")
t = time.perf_counter(); s = p.sum(0).to(torch.bfloat16); print(f"second sum(0)+to: {ms(t):.2f} ms")
del a, b
t = time.perf_counter(); import liger_aot; print(f"import liger_aot: {ms(t):.2f} ms")  # noqa: E702
t = time.perf_counter(); y = liger_aot.ops.rms_norm(x, w); print(f"first forward: {ms(t):.2f} ms")  # noqa: E702
t = time.perf_counter(); y.backward(dy); print(f"first backward: {ms(t):.2f} ms")  # noqa: E702
x.grad = w.grad = None
t = time.perf_counter(); liger_aot.ops.rms_norm(x, w).backward(dy); print(f"second fwd+bwd: {ms(t):.2f} ms")
