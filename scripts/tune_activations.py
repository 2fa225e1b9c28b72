"""Sweep BLOCK x num_warps of the flat elementwise kernels (swiglu, geglu, relu_squared; forward and backward)
with Triton's JIT (same source as the AOT build), timed like the benchmarks (do_bench flushes L2), beside
torch.compile of the same formula in the same process. bf16.

    python scripts/tune_activations.py [op ...]     # on the GPU box; default: swiglu geglu relu_squared

Prints ms and GB/s per config, best first, marking the build's (triton_src/_activations.py FLAT_BLOCK x
FLAT_WARPS). Checks every config's output against the first one's (bitwise: same formula).
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.testing as tt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from triton_src import geglu, relu_squared, swiglu  # noqa: E402
from triton_src._activations import FLAT_BLOCK, FLAT_WARPS  # noqa: E402

DT = torch.bfloat16
CONFIGS = [(b, w) for b in (1024, 2048, 4096, 8192) for w in (2, 4, 8, 16) if 8 <= b // (32 * w) <= 32]


def bench(fn):
    return tt.do_bench(fn, warmup=10, rep=60, return_mode="median")


def cases():
    """op -> (shape, n inputs, n outputs of fwd, fwd launcher(block, warps, ins, outs), bwd ..., eager fwd, eager
    bwd) — eager formulas are compiled with torch.compile for the baseline."""
    def flat(kernel, extra=()):
        def launch(block, warps, ins, outs):
            n = ins[0].numel()
            kernel[(triton.cdiv(n, block),)](*ins, *outs, n, *extra, BLOCK=block, INT64=False, num_warps=warps)
        return launch

    def silu_bwd(dy, g, u):
        s = torch.sigmoid(g.float())
        dg = (dy.float() * u.float()) * s * (1 + g.float() * (1 - s))
        return dg.to(g.dtype), (dy.float() * g.float() * s).to(g.dtype)

    def gelu_bwd(dy, g, u):
        gf = g.float().requires_grad_()
        y = F.gelu(gf, approximate="tanh")
        (d,) = torch.autograd.grad(y, gf, dy.float() * u.float())
        return d.to(g.dtype), (dy.float() * y.detach()).to(g.dtype)

    return {
        "swiglu": ((8192, 14336), 2, flat(swiglu.swiglu_fwd_kernel), flat(swiglu.swiglu_bwd_kernel),
                   lambda g, u: F.silu(g) * u, silu_bwd),
        "geglu": ((8192, 14336), 2, flat(geglu.geglu_fwd_kernel, (geglu.APPROX_TANH,)),
                  flat(geglu.geglu_bwd_kernel, (geglu.APPROX_TANH,)),
                  lambda g, u: F.gelu(g, approximate="tanh") * u, gelu_bwd),
        "relu_squared": ((8192, 16384), 1, flat(relu_squared.relu_squared_fwd_kernel),
                         flat(relu_squared.relu_squared_bwd_kernel), lambda x: torch.relu(x).square(),
                         lambda dy, x: (2 * dy.float() * torch.relu(x.float())).to(x.dtype)),
    }


def sweep(name, shape, n_in, fwd, bwd, eager_fwd, eager_bwd):
    ins = [torch.randn(shape, device="cuda", dtype=DT) for _ in range(n_in)]
    dy = torch.randn(shape, device="cuda", dtype=DT)
    elem = ins[0].element_size() * ins[0].numel()
    for mode in ("fwd", "bwd"):
        launch = fwd if mode == "fwd" else bwd
        args = ins if mode == "fwd" else [dy, *ins]
        outs = [torch.empty_like(ins[0]) for _ in range(1 if mode == "fwd" else n_in)]
        moved = elem * (len(args) + len(outs))
        rows, first = [], None
        for block, warps in CONFIGS:
            for o in outs:
                o.fill_(float("nan"))
            launch(block, warps, args, outs)
            got = [o.clone() for o in outs]
            if first is None:
                first = got
            same = all(torch.equal(a, b) for a, b in zip(got, first))
            ms = bench(lambda: launch(block, warps, args, outs))
            rows.append((ms, block, warps, same))
        compiled = torch.compile(eager_fwd if mode == "fwd" else eager_bwd)
        compiled(*args)
        ms_c = bench(lambda: compiled(*args))
        print(f"{name} {mode} {'x'.join(map(str, shape))}: torch.compile {ms_c:.4f} ms {moved / ms_c / 1e6:.0f} GB/s")
        for ms, block, warps, same in sorted(rows):
            tag = "  <- build" if (block, warps) == (FLAT_BLOCK["bf16"], FLAT_WARPS) else ""
            print(f"  BLOCK {block:5d} warps {warps:2d}: {ms:.4f} ms {moved / ms / 1e6:5.0f} GB/s"
                  f"{'' if same else '  OUTPUT DIFFERS'}{tag}", flush=True)


def main():
    table = cases()
    for name in sys.argv[1:] or list(table):
        sweep(name, *table[name])


if __name__ == "__main__":
    main()
