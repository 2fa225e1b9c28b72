"""Throwaway: the persistent group_norm forward and backward kernels run by Triton's CPU interpreter against
PyTorch in float64, with fewer programs than groups (so that programs loop). No GPU needed.

    python3 scripts/group_norm_interp.py
"""
import inspect
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import triton  # noqa: E402
import triton.runtime.interpreter as interp  # noqa: E402

# Triton 3.6's interpreter reads a 1-element array with int() (as scripts/ce_fused_interp.py patches it).
_src = inspect.getsource(interp).replace("int(self.handle.data)", "int(self.handle.data.reshape(-1)[0])")
exec(compile(_src, interp.__file__, "exec"), interp.__dict__)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton_src.group_norm as gn  # noqa: E402

torch.manual_seed(0)
worst = 0.0
# own = 1: the one-tile backward on a grid of G programs that sum dweight / dbias over the samples themselves and
# store them (no partial sums, no reduction kernel), as the launcher takes it for few samples (N <= OWN_MAX_N)
# (the last case as the WIDE variants tile it: [4, 4096])
for (n, c, hw, g, programs, own) in ((2, 8, 20, 4, 3, 0), (3, 6, 64, 2, 2, 0), (1, 12, 5, 3, 1, 0),
                                     (2, 4, 300, 2, 4, 0), (2, 4, 5000, 2, 3, 0), (3, 12, 1000, 2, 2, 0),
                                     (2, 64, 64, 32, 32, 1), (4, 12, 5, 3, 3, 1), (3, 8, 20, 4, 4, 1), (1, 6, 64, 2, 2, 1),
                                     (2, 8, 4096, 2, 2, 1)):
    for dt in (torch.float32, torch.bfloat16):
        x = (torch.randn(n, c, hw) * 2 + 3).to(dt)
        w, b = (torch.rand(c) + 0.5).to(dt), torch.randn(c).to(dt)  # parameters in x's dtype (the usual case)
        dy = torch.randn(n, c, hw).to(dt)
        block_hw = next(bh for bh in gn.HW_BLOCKS + (4096,) if bh >= hw or bh == 4096)
        block_c = gn.CPP_CONSTANTS["WIDE_BLOCK_C"] if hw == 4096 and c // g == 4 else gn.block_c(block_hw)
        y = torch.full_like(x, float("nan"))
        mean, rstd = torch.empty(n, g), torch.empty(n, g)
        gn.group_norm_fwd_kernel[(programs,)](x, w, b, y, mean, rstd, n, c, c // g, hw, g, 1e-5, 1, 1, 1,
                                              BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=1)
        x64 = x.double().requires_grad_()
        w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
        dwb = torch.full((2, c), float("nan")).to(dt)
        ref = torch.nn.functional.group_norm(x64, g, w64, b64, 1e-5)
        gx, gw, gb = torch.autograd.grad(ref, (x64, w64, b64), dy.double())
        dx = torch.full_like(x, float("nan"))
        partial = torch.full((2, n, c), float("nan"))
        gn.group_norm_bwd_kernel[(programs,)](dy, x, w, mean, rstd, dx, partial, dwb[0], dwb[1], n, c, c // g, hw, g,
                                              1, 1, own, BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=1, OWN=True)
        if own:
            assert torch.isnan(partial).all(), "own = 1 must not write the partial sums"
            partial = torch.stack((dwb[0].float(), dwb[1].float()))[:, None]  # [2, 1, C]: already summed over N
        else:
            gn.group_norm_reduce_kernel[(triton.cdiv(c, 128), 2)](partial, dwb[0], dwb[1], n, c, BLOCK_N=32,
                                                                  BLOCK_C=128)
        tol = 1e-5 if dt == torch.float32 else 2 ** -7
        errs = [(y.double() - ref).abs().max().item() / ref.abs().max().item(),
                (dx.double() - gx).abs().max().item() / gx.abs().max().item(),
                (partial[0].double().sum(0) - gw).abs().max().item() / gw.abs().max().item(),
                (partial[1].double().sum(0) - gb).abs().max().item() / gb.abs().max().item(),
                (dwb[0].double() - gw).abs().max().item() / gw.abs().max().item(),
                (dwb[1].double() - gb).abs().max().item() / gb.abs().max().item()]
        worst = max(worst, max(errs) / tol)
        print(f"{str(dt)[6:]:8} n={n} c={c} hw={hw} g={g} programs={programs} own={own}: y {errs[0]:.1e} "
              f"dx {errs[1]:.1e} dw {errs[2]:.1e} db {errs[3]:.1e} reduced {errs[4]:.1e} {errs[5]:.1e}"
              + ("  <-- BAD" if max(errs) > 2 * tol else ""), flush=True)
print("worst error / dtype tolerance:", worst)

# The split backward of the BIG16 groups (group_norm_bwd_sums_kernel, then group_norm_bwd_dx_kernel): channel
# counts that leave the last row block of a group partly idle, spatial sizes short of BLOCK_HW, no weight.
worst = 0.0
for (n, c, hw, g, block_hw, has_w) in ((2, 40, 256, 1, 256, True), (3, 60, 200, 3, 256, False),
                                       (2, 10, 1024, 1, 1024, True), (3, 48, 400, 3, 1024, True),
                                       (1, 20, 72, 2, 256, True)):
    dt = torch.bfloat16
    cpg = c // g
    x = (torch.randn(n, c, hw) * 2 + 3).to(dt)
    w = (torch.rand(c) + 0.5).to(dt)
    dy = torch.randn(n, c, hw).to(dt)
    x64 = x.double().requires_grad_()
    w64 = w.double().requires_grad_()
    ref = torch.nn.functional.group_norm(x64, g, w64 if has_w else None, None, 1e-5)
    gx, = torch.autograd.grad(ref, (x64,), dy.double())
    xg = x.double().reshape(n, g, -1)
    mean = xg.mean(-1).float()
    rstd = (xg.var(-1, unbiased=False) + 1e-5).rsqrt().float()
    partial = torch.full((2, n, c), float("nan"))
    dx = torch.full_like(x, float("nan"))
    rows = gn.SPLIT_SUMS_TILE // block_hw
    gn.group_norm_bwd_sums_kernel[(triton.cdiv(n * c, rows),)](dy, x, mean, rstd, partial, n, c, cpg, g, hw // 8,
                                                               BLOCK_R=rows, BLOCK_HW=block_hw, ALIGN=8, PDL=False)
    dx_rows = gn.SPLIT_DX_TILE // block_hw
    gn.group_norm_bwd_dx_kernel[(n * g, triton.cdiv(cpg, dx_rows))](
        dy, x, w, mean, rstd, partial, dx, n, c, cpg, g, hw // 8, int(has_w), BLOCK_R=dx_rows, BLOCK_HW=block_hw,
        GROUP_C=gn.BIG16_TILE // block_hw, ALIGN=8, PDL=False)
    xh = (x.double().reshape(n, g, -1) - mean.double()[..., None]) * rstd.double()[..., None]
    xh = xh.reshape(n, c, hw)
    want_dw = (dy.double() * xh).sum(-1)
    want_db = dy.double().sum(-1)
    errs = [(dx.double() - gx).abs().max().item() / gx.abs().max().item(),
            (partial[0].double() - want_dw).abs().max().item() / want_dw.abs().max().item(),
            (partial[1].double() - want_db).abs().max().item() / want_db.abs().max().item()]
    worst = max(worst, max(errs) / 2 ** -7)
    print(f"split n={n} c={c} hw={hw} g={g} block_hw={block_hw} weight={has_w}: dx {errs[0]:.1e} "
          f"sums {errs[1]:.1e} {errs[2]:.1e}" + ("  <-- BAD" if max(errs) > 2 * 2 ** -7 else ""), flush=True)
print("split: worst error / bf16 tolerance:", worst)
