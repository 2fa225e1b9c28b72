"""Print the Triton code torch.compile (Inductor) generates for layer_norm and x + r -> RMSNorm forwards at
8192 rows bf16, and time its kernels, to compare launch strategies with ours.

    python scripts/inductor_code.py [hidden ...]      # on the GPU box; writes the code to stdout
"""
import os
import sys

os.environ.setdefault("TORCH_LOGS", "output_code")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def rms(x, r, w):
    s = x + r
    sf = s.float()
    return w * (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(s.dtype), s


for n in [int(a) for a in sys.argv[1:]] or [32768]:
    x = torch.randn(8192, n, device="cuda", dtype=torch.bfloat16)
    r, w, b = torch.randn_like(x), torch.rand(n, device="cuda", dtype=x.dtype), torch.randn(n, device="cuda", dtype=x.dtype)
    torch.compile(lambda x, w, b: F.layer_norm(x, (n,), w, b, 1e-5), dynamic=False)(x, w, b)
    torch.compile(rms, dynamic=False)(x, r, w)
    torch.cuda.synchronize()

# The configuration each Inductor kernel launched with (its autotuner's surviving launchers): the code above
# shows the heuristics' candidates, not the one chosen.
import gc  # noqa: E402

from torch._inductor.runtime.triton_heuristics import CachingAutotuner  # noqa: E402

for obj in gc.get_objects():
    try:
        is_tuner = isinstance(obj, CachingAutotuner)
    except ReferenceError:  # dead weak proxies among gc's objects
        continue
    if is_tuner:
        print(f"{obj.fn.__name__}: " + "; ".join(f"{lc.config}, regs {getattr(lc, 'n_regs', '?')}, "
                                                 f"spills {getattr(lc, 'n_spills', '?')}" for lc in obj.launchers))
