"""Throwaway: fused_add_rms_norm_fwd_kernel (one-row 1-D path and the batched [BLOCK_M, BLOCK_N] path, every
casting mode, with and without weight) run by Triton's CPU interpreter against the op's CPU implementation
(itself tested against float64 formulas). No GPU needed.

    python3 scripts/farn_fwd_interp.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ln_wide_interp  # noqa: E402,F401  (sets TRITON_INTERPRET and patches the interpreter)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import liger_aot  # noqa: E402,F401
import triton_src.fused_add_rms_norm as farn  # noqa: E402

MODES = {0: "llama", 1: "gemma", 2: "none"}


def check(rows, cols, block_m, block_n, casting, has_w, dtype, offset=0.0):
    x = (torch.randn(rows, cols) * 2).to(dtype)
    r = torch.randn(rows, cols).to(dtype)
    w = (torch.rand(cols) + 0.5).to(dtype) if has_w else None
    y_ref, s_ref = torch.ops.liger.fused_add_rms_norm(x, r, w, 1e-6, offset, MODES[casting])
    y = torch.full((rows, cols), float("nan"), dtype=dtype)
    s = torch.full((rows, cols), float("nan"), dtype=dtype)
    rstd = torch.full((rows,), float("nan"))
    farn.fused_add_rms_norm_fwd_kernel[((rows + block_m - 1) // block_m,)](
        x, r, w if has_w else torch.empty(0, dtype=dtype), y, s, rstd, rows, cols, cols, cols, cols, 1e-6, offset,
        has_w, True, CASTING=casting, BLOCK_M=block_m, BLOCK_N=block_n, ALIGN=1)
    rstd_ref = torch.rsqrt(s_ref.double().pow(2).mean(-1) + 1e-6)
    errs = {"s": (s.double() - s_ref.double()).abs().max().item(),
            "y": (y.double() - y_ref.double()).abs().max().item(),
            "rstd": ((rstd.double() - rstd_ref).abs() / rstd_ref).max().item()}
    # y: fp16 one rounding of the output apart at most (the CPU path rounds in the same places); fp32 a few ulps
    # (another summation order)
    ulps = 8 if dtype == torch.float32 else 2
    tol = {"s": 0.0, "y": ulps * torch.finfo(dtype).eps * y_ref.double().abs().max().item(), "rstd": 1e-5}
    ok = all(errs[k] <= tol[k] for k in errs)
    print(f"{'ok ' if ok else 'BAD'} rows={rows} cols={cols} bm={block_m} bn={block_n} casting={MODES[casting]} "
          f"w={has_w} {dtype} offset={offset}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
    return ok


def main():
    torch.manual_seed(0)
    results = []
    # (not bf16: the interpreter's bf16 conversions truncate instead of rounding to nearest)
    for dtype in (torch.float32, torch.float16):
        for casting in ((0,) if dtype == torch.float32 else (0, 1, 2)):
            for has_w in (True, False):
                results.append(check(3, 300, 1, 512, casting, has_w, dtype, 1.0 if casting == 1 else 0.0))
                results.append(check(7, 100, 4, 128, casting, has_w, dtype))
    print(f"{sum(results)}/{len(results)} cases within tolerance")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
