"""Throwaway: the wide-row LayerNorm and fused add+RMSNorm kernels (persistent looped forward, rowstats + cols
backward) run by Triton's CPU interpreter against float64 formulas and autograd. No GPU needed.

    python3 scripts/ln_wide_interp.py
"""
import inspect
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import triton  # noqa: E402
import triton.runtime.interpreter as interp  # noqa: E402

# Triton 3.6's interpreter reads a 1-element array with int() (read its first element instead) and gives bool
# arguments (i1) an int32 array (give them a bool one).
_src = inspect.getsource(interp).replace("int(self.handle.data)", "int(self.handle.data.reshape(-1)[0])")
_src = _src.replace("""def _implicit_cvt(arg):
    if isinstance(arg, int):""", """def _implicit_cvt(arg):
    if isinstance(arg, bool):
        return tl.tensor(TensorHandle(np.array([arg], dtype=np.bool_), tl.int1), tl.int1)
    if isinstance(arg, int):""")
exec(compile(_src, interp.__file__, "exec"), interp.__dict__)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import triton_src.fused_add_rms_norm as farn  # noqa: E402
import triton_src.layer_norm as ln  # noqa: E402

torch.manual_seed(0)


def check(rows, cols, has_w, has_b, dtype, bm, bn, col_programs, stride_pad=0, mean_shift=0.0):
    stride = cols + stride_pad
    base = torch.randn(rows, stride, dtype=torch.float32) * 2 + mean_shift
    x = base.to(dtype)[:, :cols]
    w = (torch.rand(cols) + 0.5).to(dtype) if has_w else None
    b = torch.randn(cols).to(dtype) if has_b else None
    dy = torch.randn(rows, cols).to(dtype)
    x64 = x.double().requires_grad_()
    w64 = w.double().requires_grad_() if has_w else None
    b64 = b.double().requires_grad_() if has_b else None
    y64 = torch.nn.functional.layer_norm(x64, (cols,), w64, b64, 1e-5)
    grads = torch.autograd.grad(y64, [t for t in (x64, w64, b64) if t is not None], dy.double())

    align = 1  # the interpreter does not care; strides and n_cols are passed divided by ALIGN = 1
    y = torch.full((rows, cols), float("nan"), dtype=dtype)
    mean = torch.empty(rows)
    rstd = torch.empty(rows)
    wk = w if has_w else torch.empty(0, dtype=dtype)
    bk = b if has_b else torch.empty(0, dtype=dtype)
    ln.layer_norm_fwd_looped_kernel[(rows,)](x, wk, bk, y, mean, rstd, rows, cols, stride, cols, 1e-5, has_w,
                                                 has_b, True, BLOCK_N=bn, ALIGN=align)
    fwd_err = (y.double() - y64.detach()).abs().max().item()

    stats = torch.full((rows, 4), float("nan"))
    ln.layer_norm_bwd_rowstats_kernel[(rows,)](dy, x, wk, mean, rstd, stats, rows, cols, cols, stride, has_w,
                                                   BLOCK_N=bn, ALIGN=align)
    col_blocks = triton.cdiv(cols, bn)
    dx = torch.full((rows, cols), float("nan"), dtype=dtype)
    part = torch.full((2, col_programs, cols), float("nan"))
    ln.layer_norm_bwd_cols_kernel[(col_programs, col_blocks)](dy, x, wk, mean, rstd, stats, dx, part[0], part[1], rows,
                                                              cols, cols, stride, cols, has_w, has_w, has_b,
                                                              BLOCK_M=bm, BLOCK_N=bn, ALIGN=align)
    errs = {"y": fwd_err, "dx": (dx.double() - grads[0]).abs().max().item()}
    i = 1
    if has_w:
        errs["dw"] = (part[0].double().sum(0) - grads[i]).abs().max().item() / max(1.0, grads[i].abs().max().item())
        i += 1
    if has_b:
        errs["db"] = (part[1].double().sum(0) - grads[i]).abs().max().item() / max(1.0, grads[i].abs().max().item())
    tol = {torch.float32: 1e-4, torch.bfloat16: 0.1, torch.float16: 1e-2}[dtype]
    ok = all(v <= tol for v in errs.values()) and torch.isfinite(y).all() and torch.isfinite(dx).all()
    print(f"{'ok ' if ok else 'BAD'} rows={rows} cols={cols} w={has_w} b={has_b} {dtype} "
          f"bm={bm} bn={bn} col_programs={col_programs} pad={stride_pad} shift={mean_shift}: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
    return ok


def check_farn(rows, cols, has_w, has_dso, dtype, bm, bn, col_programs, offset=0.0, pad=0):
    stride = cols + pad
    x = (torch.randn(rows, stride) * 2).to(dtype)[:, :cols]
    r = torch.randn(rows, cols).to(dtype)
    w = (torch.rand(cols) + 0.5).to(dtype) if has_w else None
    dy = torch.randn(rows, cols).to(dtype)
    dso = torch.randn(rows, cols).to(dtype) if has_dso else None
    s_ref = (x.float() + r.float()).to(dtype)
    s64 = s_ref.double().requires_grad_()
    w64 = w.double().requires_grad_() if has_w else None
    y64 = s64 * torch.rsqrt(s64.pow(2).mean(-1, keepdim=True) + 1e-6)
    if has_w:
        y64 = y64 * (offset + w64)
    grads = torch.autograd.grad(y64, [t for t in (s64, w64) if t is not None], dy.double())
    ds_ref = grads[0] + (dso.double() if has_dso else 0)

    wk = w if has_w else torch.empty(0, dtype=dtype)
    y = torch.full((rows, cols), float("nan"), dtype=dtype)
    s = torch.full((rows, cols), float("nan"), dtype=dtype)
    rstd = torch.empty(rows)
    farn.fused_add_rms_norm_fwd_looped_kernel[(rows,)](x, r, wk, y, s, rstd, rows, cols, stride, cols, cols, 1e-6,
                                                           offset, 0, has_w, True, BLOCK_N=bn, ALIGN=1)
    errs = {"s": (s.double() - s_ref.double()).abs().max().item(), "y": (y.double() - y64.detach()).abs().max().item()}
    stats = torch.full((rows,), float("nan"))
    farn.fused_add_rms_norm_bwd_rowstats_kernel[(rows,)](dy, s, wk, stats, rows, cols, cols, cols, offset, has_w,
                                                             BLOCK_N=bn, ALIGN=1)
    ds = torch.full((rows, cols), float("nan"), dtype=dtype)
    part = torch.full((col_programs, cols), float("nan"))
    dsok = dso if has_dso else torch.empty(0, dtype=dtype)
    farn.fused_add_rms_norm_bwd_cols_kernel[(col_programs, triton.cdiv(cols, bn))](
        dy, dsok, s, wk, rstd, stats, ds, part, rows, cols, cols, cols, cols, cols, offset, 0, has_w, has_dso, has_w,
        BLOCK_M=bm, BLOCK_N=bn, ALIGN=1)
    errs["ds"] = (ds.double() - ds_ref).abs().max().item()
    if has_w:
        errs["dw"] = (part.double().sum(0) - grads[1]).abs().max().item() / max(1.0, grads[1].abs().max().item())
    tol = {torch.float32: 1e-4, torch.bfloat16: 0.1, torch.float16: 1e-2}[dtype]
    ok = all(v <= tol for v in errs.values())
    print(f"{'ok ' if ok else 'BAD'} fused_add_rms_norm rows={rows} cols={cols} w={has_w} ds_out={has_dso} {dtype} "
          f"bm={bm} bn={bn} col_programs={col_programs} offset={offset} pad={pad}: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
    return ok


def main():
    cases = [
        (7, 300, True, True, torch.float32, 2, 128, 2),
        (5, 257, False, True, torch.float32, 4, 64, 3),
        (9, 130, True, False, torch.float32, 2, 64, 4, 3),
        (4, 96, False, False, torch.float32, 1, 32, 1),
        (6, 200, True, True, torch.float32, 2, 64, 2, 0, 100.0),
        (6, 256, True, True, torch.bfloat16, 2, 64, 2),
        (3, 190, True, True, torch.float16, 2, 64, 5),
    ]
    results = [check(*c) for c in cases]
    farn_cases = [
        (7, 300, True, True, torch.float32, 2, 128, 2),
        (5, 257, False, False, torch.float32, 4, 64, 3),
        (9, 130, True, False, torch.float32, 2, 64, 4, 1.0, 3),
        (6, 256, True, True, torch.bfloat16, 2, 64, 2),
    ]
    results += [check_farn(*c) for c in farn_cases]
    print(f"{sum(results)}/{len(results)} cases within tolerance")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
