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
for (n, c, hw, g, programs) in ((2, 8, 20, 4, 3), (3, 6, 64, 2, 2), (1, 12, 5, 3, 1), (2, 4, 300, 2, 4),
                                  (2, 4, 5000, 2, 3), (3, 12, 1000, 2, 2)):
    for dt in (torch.float32, torch.bfloat16):
        x = (torch.randn(n, c, hw) * 2 + 3).to(dt)
        w, b = (torch.rand(c) + 0.5).to(dt), torch.randn(c).to(dt)  # parameters in x's dtype (the usual case)
        dy = torch.randn(n, c, hw).to(dt)
        block_hw = next(bh for bh in gn.HW_BLOCKS + (4096,) if bh >= hw or bh == 4096)
        block_c = gn.block_c(block_hw)
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
        gn.group_norm_bwd_kernel[(programs,)](dy, x, w, mean, rstd, dx, partial, n, c, c // g, hw, g, 1, 1,
                                              BLOCK_C=block_c, BLOCK_HW=block_hw, ALIGN=1)
        gn.group_norm_reduce_kernel[(triton.cdiv(c, 128), 2)](partial, dwb[0], dwb[1], n, c, BLOCK_N=32, BLOCK_C=128)
        tol = 1e-5 if dt == torch.float32 else 2 ** -7
        errs = [(y.double() - ref).abs().max().item() / ref.abs().max().item(),
                (dx.double() - gx).abs().max().item() / gx.abs().max().item(),
                (partial[0].double().sum(0) - gw).abs().max().item() / gw.abs().max().item(),
                (partial[1].double().sum(0) - gb).abs().max().item() / gb.abs().max().item(),
                (dwb[0].double() - gw).abs().max().item() / gw.abs().max().item(),
                (dwb[1].double() - gb).abs().max().item() / gb.abs().max().item()]
        worst = max(worst, max(errs) / tol)
        print(f"{str(dt)[6:]:8} n={n} c={c} hw={hw} g={g} programs={programs}: y {errs[0]:.1e} dx {errs[1]:.1e} "
              f"dw {errs[2]:.1e} db {errs[3]:.1e} reduced {errs[4]:.1e} {errs[5]:.1e}" + ("  <-- BAD" if max(errs) > 2 * tol else ""), flush=True)
print("worst error / dtype tolerance:", worst)
