"""The cases and the timing loop the GroupNorm forward probes share (scripts/gn_{mma,ring,half,prefetch}_probe.py):
x [n, 512, 64, 64] (groups of 16 x 4096; group 1 of sample 0 shifted by 300, group 3 constant, where `far`), its
float64 references, and candidates timed as the benchmarks after a first run checked against them."""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
import triton_src.group_norm as gn  # noqa: E402

C, HW, G = 512, 4096, 32
CPG = C // G


def make_case(n, dtype, ceiling, far=True, tweak=None):
    """The tensors of one case (a namespace) after printing the time of a copy of x; tweak(x) edits x first."""
    torch.manual_seed(n)
    x = torch.randn(n, C, HW, device="cuda", dtype=dtype)
    if far:
        x[0, CPG:2 * CPG] += 300
        x[0, 3 * CPG:4 * CPG] = 0.75
    if tweak is not None:
        tweak(x)
    w = 1 + 0.1 * torch.randn(C, device="cuda", dtype=dtype)
    b = 0.1 * torch.randn(C, device="cuda", dtype=dtype)
    y = torch.empty_like(x)
    mean, rstd = torch.empty(n, G, device="cuda"), torch.empty(n, G, device="cuda")
    xg = x.double().reshape(n, G, -1)
    rm, rr = xg.mean(-1), (xg.var(-1, unbiased=False) + 1e-5).rsqrt()
    yref = F.group_norm(x.double(), G, w.double(), b.double(), 1e-5)
    nbytes = 2 * x.numel() * x.element_size()
    tcopy = harness.time_ms(lambda: y.copy_(x))
    print(f"{dtype} [{n}, {C}, {HW}] G={G}: copy {tcopy * 1e3:.2f} us "
          f"({nbytes / tcopy / 1e6 / ceiling * 100:.1f} % of {ceiling:.0f} GB/s)", flush=True)
    return SimpleNamespace(n=n, x=x, w=w, b=b, y=y, mean=mean, rstd=rstd, rm=rm, rr=rr, yref=yref, nbytes=nbytes,
                           ceiling=ceiling)


def build_regs(case, sms, warps=32):
    """The build's register kernel (JIT) on the case, the group half a wave later prefetched."""
    k = case
    return (f"build regs {warps} warps", lambda: gn.group_norm_fwd_regs_kernel[(k.n * G,)](
        k.x, k.w, k.b, k.y, k.mean, k.rstd, k.n, C, CPG, G, 1e-5, True, True, True, sms // 2, BLOCK_C=CPG,
        BLOCK_HW=HW, num_warps=warps))


def run(case, cands, width=38):
    """Each (name, launch) twice: first checked against the references (a failure to compile or launch drops it),
    then timed again in the same order."""
    k = case
    cands = list(cands)
    for rep in range(2):
        for name, fn in list(cands):
            errs = ""
            if rep == 0:
                for t in (k.y, k.mean, k.rstd):
                    t.fill_(float("nan"))
                try:
                    fn()
                    torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001
                    print(f"  {name}: {type(e).__name__}: {str(e)[:1500]}", flush=True)
                    cands.remove((name, fn))
                    continue
                ey = (k.y.double() - k.yref).abs().max().item()
                em = ((k.mean.double() - k.rm).abs() * k.rr).max().item()
                er = ((k.rstd.double() - k.rr).abs() / k.rr).max().item()
                errs = f"y err {ey:.3g}, mean err/sigma {em:.2e}, rstd rel err {er:.2e}"
            t = harness.time_ms(fn)
            print(f"  {name:<{width}} {t * 1e3:7.2f} us {k.nbytes / t / 1e6 / k.ceiling * 100:5.1f} % of copy {errs}",
                  flush=True)
