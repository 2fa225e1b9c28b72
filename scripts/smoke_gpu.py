"""Quick GPU check: rms_norm CUDA vs a float64 formula over a few shapes, then a timing at 8192x4096."""
import sys
import time

import torch
import torch.nn.functional as F

import liger_aot


def ref(x, w, eps, offset, mode):
    xd = x.double()
    rstd = torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps)
    y = xd * rstd
    if w is not None:
        y = y * (offset + w.double())
    return y


def check(shape, dtype, mode, weight=True, offset=0.0):
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.rand(shape[-1], device="cuda", dtype=dtype) + 0.5).requires_grad_() if weight else None
    y = liger_aot.ops.rms_norm(x, w, 1e-6, offset, mode)
    g = torch.randn_like(y)
    y.backward(g)
    xd = x.detach().double().requires_grad_()
    wd = w.detach().double().requires_grad_() if weight else None
    yr = ref(xd, wd, 1e-6, offset, mode)
    yr.backward(g.double())
    def rel(a, b):
        return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()
    errs = [rel(y.detach(), yr.detach()), rel(x.grad, xd.grad)]
    if weight:
        errs.append(rel(w.grad, wd.grad))
    ok = all(e < (2e-2 if dtype != torch.float32 else 1e-5) for e in errs) and torch.isfinite(y).all().item()
    print(f"{'ok ' if ok else 'BAD'} {str(shape):>18} {str(dtype):>15} {mode:>6} w={weight} errs={['%.2e' % e for e in errs]}")
    return ok


def bench():
    import triton.testing as tt
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = tt.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    copy_bw = 2 * src.numel() / t / 1e6
    print(f"copy bandwidth {copy_bw:.0f} GB/s")
    nbytes = x.numel() * 2
    for name, fn in [("liger_aot", lambda: liger_aot.ops.rms_norm(x, w)),
                     ("F.rms_norm", lambda: F.rms_norm(x, (4096,), w, 1e-6))]:
        with torch.no_grad():
            tf = tt.do_bench(fn, warmup=25, rep=200, return_mode="median")
        def full():
            y = fn()
            y.backward(g)
        tfull = tt.do_bench(full, warmup=25, rep=200, grad_to_none=[x, w], return_mode="median")
        print(f"{name:>12}: fwd {tf*1e3:7.1f} us ({2*nbytes/tf/1e6:6.0f} GB/s, {100*2*nbytes/tf/1e6/copy_bw:4.1f}% of copy)  "
              f"fwd+bwd {tfull*1e3:7.1f} us")
    xs = torch.randn(4, 4096, device="cuda", dtype=torch.bfloat16)
    ws = torch.ones(4096, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for name, fn in [("liger_aot", lambda: liger_aot.ops.rms_norm(xs, ws)), ("torch.add", lambda: torch.add(xs, xs)),
                         ("F.rms_norm", lambda: F.rms_norm(xs, (4096,), ws, 1e-6))]:
            for _ in range(200):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(5000):
                fn()
            torch.cuda.synchronize()
            print(f"host {name:>12}: {(time.perf_counter() - t0) / 5000 * 1e6:6.2f} us/call")


if __name__ == "__main__":
    torch.manual_seed(0)
    ok = True
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for mode in ("llama", "gemma", "none"):
            for shape in [(3, 7), (4099, 127), (5, 4096), (33, 1000), (2, 100000), (3, 65536), (1, 262144), (64, 12288)]:
                ok &= check(shape, dtype, mode)
        ok &= check((17, 5120), dtype, "llama", weight=False)
        ok &= check((17, 5120), dtype, "gemma", offset=1.0)
    print("SMOKE", "PASS" if ok else "FAIL")
    bench()
    sys.exit(0 if ok else 1)
