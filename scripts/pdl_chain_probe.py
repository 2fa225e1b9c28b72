"""Does programmatic dependent launch (PDL) shorten a short forward + backward chain? JIT of the build's kernels
(softmax, ReLU², SwiGLU, GeGLU), bf16, timed as the benchmarks (benchmarks/harness.time_ms: L2 flushed, stream held), next to
torch.compile's fwd+bwd in the same process.

    python scripts/pdl_chain_probe.py [softmax relu_squared swiglu geglu]   # on the GPU box (default: all)

"pdl": both kernels begin with _rows.pdl_start (griddepcontrol.wait, then launch_dependents: in every program for
softmax, in the last wave's for the flat ReLU², SwiGLU and GeGLU kernels) and are launched with launch_pdl, so the
backward's programs are launched while the forward's last ones still run and wait for it.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton_src.geglu as gg  # noqa: E402
import triton_src.relu_squared as rs  # noqa: E402
import triton_src.softmax as sm  # noqa: E402
import triton_src.swiglu as sw  # noqa: E402


def variant(spec_name, module, **key):
    for spec in module.KERNELS:
        if spec.name == spec_name:
            for v in spec.variants:
                if v.key == key:
                    return spec.fn, v
    raise KeyError(spec_name, key)


def launch(fn, v, grid, args, pdl):
    fn[grid](*args, **{**v.constexprs, "PDL": pdl}, num_warps=v.num_warps, launch_pdl=pdl)


def softmax_case(rows, n):
    x = torch.randn(rows, n, device="cuda", dtype=torch.bfloat16)
    y, dy, dx = torch.empty_like(x), torch.randn_like(x), torch.empty_like(x)
    ffn, fv = variant("softmax_fwd_kernel", sm, x_dtype="bf16", block_n=n)
    bfn, bv = variant("softmax_bwd_kernel", sm, x_dtype="bf16", block_n=n)
    nv = n // 8

    def chain(pdl):
        launch(ffn, fv, ((rows + fv.constexprs["BLOCK_M"] - 1) // fv.constexprs["BLOCK_M"],),
               (x, y, rows, nv, nv, nv), pdl)
        launch(bfn, bv, ((rows + bv.constexprs["BLOCK_M"] - 1) // bv.constexprs["BLOCK_M"],),
               (dy, y, dx, rows, nv, nv, nv, nv), pdl)

    def check():
        xr = x.float().requires_grad_()
        yr = torch.softmax(xr, -1)
        yr.backward(dy.float())
        return max((y.float() - yr).abs().max().item(), (dx.float() - xr.grad).abs().max().item())

    xc = x.clone().requires_grad_()
    comp = torch.compile(lambda t: torch.softmax(t, -1))
    return chain, check, lambda: comp(xc).backward(dy)


def relu_case(rows, n):
    x = torch.randn(rows, n, device="cuda", dtype=torch.bfloat16)
    y, dy, dx = torch.empty_like(x), torch.randn_like(x), torch.empty_like(x)
    ffn, fv = variant("relu_squared_fwd_kernel", rs, x_dtype="bf16", aligned=True, int64=False)
    bfn, bv = variant("relu_squared_bwd_kernel", rs, x_dtype="bf16", aligned=True, int64=False)
    numel = x.numel()
    grid = ((numel + fv.constexprs["BLOCK"] - 1) // fv.constexprs["BLOCK"],)

    def chain(pdl):
        launch(ffn, fv, grid, (x, y, numel), pdl)
        launch(bfn, bv, grid, (dy, x, dx, numel), pdl)

    def check():
        xr = x.float().requires_grad_()
        yr = torch.relu(xr) ** 2
        yr.backward(dy.float())
        return max((y.float() - yr).abs().max().item() / yr.abs().max().item(),
                   (dx.float() - xr.grad).abs().max().item() / xr.grad.abs().max().item())

    xc = x.clone().requires_grad_()
    comp = torch.compile(lambda t: torch.relu(t) ** 2)
    return chain, check, lambda: comp(xc).backward(dy)


def glu_case(rows, n, module, prefix, key, ref):
    """SwiGLU / GeGLU (tanh): y = act(gate) * up and both gradients, as the launcher runs the aligned 32-bit
    variants; the error relative to a float32 reference."""
    g, u = (torch.randn(rows, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    y, dy, dg, du = torch.empty_like(g), torch.randn_like(g), torch.empty_like(g), torch.empty_like(g)
    ffn, fv = variant(f"{prefix}_fwd_kernel", module, x_dtype="bf16", aligned=True, int64=False, **key)
    bfn, bv = variant(f"{prefix}_bwd_kernel", module, x_dtype="bf16", aligned=True, int64=False, **key)
    numel = g.numel()
    grid = ((numel + fv.constexprs["BLOCK"] - 1) // fv.constexprs["BLOCK"],)

    def chain(pdl):
        launch(ffn, fv, grid, (g, u, y, numel), pdl)
        launch(bfn, bv, grid, (dy, g, u, dg, du, numel), pdl)

    def check():
        gr, ur = g.float().requires_grad_(), u.float().requires_grad_()
        yr = ref(gr, ur)
        yr.backward(dy.float())
        return max((a.float() - b).abs().max().item() / b.abs().max().item()
                   for a, b in ((y, yr), (dg, gr.grad), (du, ur.grad)))

    gc, uc = g.clone().requires_grad_(), u.clone().requires_grad_()
    comp = torch.compile(ref)
    return chain, check, lambda: comp(gc, uc).backward(dy)


def swiglu_case(rows, n):
    return glu_case(rows, n, sw, "swiglu", {}, lambda a, b: F.silu(a) * b)


def geglu_case(rows, n):
    return glu_case(rows, n, gg, "geglu", {"approx": gg.APPROX_TANH},
                    lambda a, b: F.gelu(a, approximate="tanh") * b)


GLU_SHAPES = ((16, 4096), (8192, 4096), (8192, 11008), (8192, 14336))  # benchmarks/bench_swiglu.py's


def main():
    which = sys.argv[1:] or ["softmax", "relu_squared", "swiglu", "geglu"]
    for name, make, shapes in (("softmax", softmax_case, ((8192, 1024), (8192, 4096), (8192, 8192))),
                               ("relu_squared", relu_case, ((8192, 1024), (8192, 4096))),
                               ("swiglu", swiglu_case, GLU_SHAPES), ("geglu", geglu_case, GLU_SHAPES)):
        if name not in which:
            continue
        for rows, n in shapes:
            chain, check, compiled = make(rows, n)
            line = []
            for pdl in (False, True, False, True):
                chain(pdl)
                torch.cuda.synchronize()
                err = check()
                line.append(f"pdl={int(pdl)} {harness.time_ms(lambda: chain(pdl)) * 1e3:.2f} us (err {err:.1e})")
            compiled()
            line.append(f"torch.compile {harness.time_ms(compiled) * 1e3:.2f} us")
            print(f"{name} {rows}x{n} fwd+bwd: " + ", ".join(line), flush=True)


if __name__ == "__main__":
    main()
