"""Benchmarks ``liger_aot.ops.rms_norm`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_rms_norm.py                  # full run, meant to take < 4 min on an H200
    python benchmarks/bench_rms_norm.py --quick          # hidden 4096 only, < 1 min
    python benchmarks/bench_rms_norm.py --results        # also append to benchmarks/results/<gpu>.md

Three parts: (1) device time, GB/s against the copy ceiling and peak memory for fwd / bwd / full at
8192 rows, weight present, casting_mode "llama"; (2) host time per call at 4×4096, where launch overhead
is all there is; (3) first-call latency in fresh interpreters. Bytes counted (what a memory-bound kernel
must move): fwd reads x and w and writes y; bwd reads x, dy, w and rstd and writes dx and dw; full is
the sum of both.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch._functorch.config  # noqa: F401  (donated_buffer is set below)
import torch.nn.functional as F

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384, 32768)
EPS = 1e-6
# sanity check only (tests/ hold the numerics): four ulps of the 16-bit dtypes, as F.rms_norm and Inductor
# round once where the Llama formula rounds twice; fp32 leaves room for a different reduction order
TOL = {torch.bfloat16: 2**-6, torch.float16: 2**-9, torch.float32: 1e-5}


def hf_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm.forward`` as written in transformers."""
    input_dtype = x.dtype
    variance = x.float().pow(2).mean(-1, keepdim=True)
    x = x.float() * torch.rsqrt(variance + eps)
    return weight * x.to(input_dtype)


def make_case(hidden: int, dtype: torch.dtype) -> harness.Case:
    def make() -> harness.Inputs:
        x = torch.randn(ROWS, hidden, device="cuda", dtype=dtype, requires_grad=True)
        w = torch.nn.Parameter(1 + 0.1 * torch.randn(hidden, device="cuda", dtype=dtype))
        return harness.Inputs(args=(x, w), leaves=(x, w), grad_out=torch.randn_like(x))

    e = torch.empty((), dtype=dtype).element_size()
    fwd = 2 * ROWS * hidden * e + hidden * e
    bwd = 3 * ROWS * hidden * e + 4 * ROWS + 2 * hidden * e
    return harness.Case(f"{ROWS}x{hidden}", make, {"fwd": fwd, "bwd": bwd, "full": fwd + bwd})


def check(inputs: harness.Inputs, y: torch.Tensor):
    x, w = (t.detach() for t in inputs.args)
    ref = hf_rms_norm(x, w, EPS).float()
    tol = TOL[x.dtype]
    if not torch.allclose(y.float(), ref, atol=tol, rtol=tol):
        return f"forward differs from the HF formula by up to {(y.float() - ref).abs().max().item():.3g} (tol {tol:.3g})"
    return None


def providers(liger_aot, liger_kernel) -> list:
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x, w: liger_aot.ops.rms_norm(x, w, EPS)))
    # "bwd" mode replays one backward with retain_graph=True, which donated buffers forbid
    torch._functorch.config.donated_buffer = False
    compiled = torch.compile(hf_rms_norm, dynamic=False)
    found += [
        harness.Provider("torch F.rms_norm", lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS)),
        harness.Provider("HF eager", lambda x, w: hf_rms_norm(x, w, EPS)),
        harness.Provider("HF torch.compile", lambda x, w: compiled(x, w, EPS), compiled=True),
    ]
    if liger_kernel is not None:
        function = liger_kernel.LigerRMSNormFunction
        # what LigerRMSNorm.forward calls, with its defaults: offset 0, "llama", in_place=True, row_mode None
        found.append(harness.Provider("Liger-Kernel", lambda x, w: function.apply(x, w, EPS, 0.0, "llama", True, None)))
    return found


def launch_bound(liger_aot, liger_kernel, dtype, notes) -> str:
    """Host µs per forward call at 4×4096, where the kernels take less GPU time than their launches."""
    x = torch.randn(4, 4096, device="cuda", dtype=dtype)
    w = 1 + 0.1 * torch.randn(4096, device="cuda", dtype=dtype)
    calls = {}
    if liger_aot is not None:
        module = liger_aot.nn.LigerRMSNorm(4096, EPS, device="cuda", dtype=dtype)
        calls["liger_aot.ops.rms_norm"] = lambda: liger_aot.ops.rms_norm(x, w, EPS)
        calls["liger_aot.nn.LigerRMSNorm"] = lambda: module(x)
    calls["torch.add(x, x)"] = lambda: torch.add(x, x)
    calls["torch F.rms_norm"] = lambda: F.rms_norm(x, (4096,), w, EPS)
    if liger_kernel is not None:
        liger_module = liger_kernel.LigerRMSNorm(4096, EPS).to(device="cuda", dtype=dtype)
        calls["Liger-Kernel LigerRMSNorm"] = lambda: liger_module(x)
    us = {}
    for name, fn in calls.items():
        try:
            us[name] = harness.host_us_per_call(fn)
        except Exception as e:  # a failing provider is reported, the others still measured
            notes.append(f"launch-bound {name} failed: {type(e).__name__}: {str(e).splitlines()[0]}")
    add = us["torch.add(x, x)"]
    lines = [f"| 4×4096 {_name(dtype)} forward, no_grad | µs per call | × torch.add |", "|---|--:|--:|"]
    lines += [f"| {name} | {t:.1f} | {t / add:.2f} |" for name, t in us.items()]
    if "liger_aot.ops.rms_norm" in us:
        ratio = us["liger_aot.ops.rms_norm"] / add
        lines += ["", f"liger_aot.ops.rms_norm / torch.add = {ratio:.2f} (target ≤ 1.2: {'met' if ratio <= 1.2 else 'MISSED'})"]
    return "\n".join(lines)


# Runs in a fresh interpreter; CUDA is initialised (and autograd's CUDA thread started) before the clock
# starts, so the figures hold only what importing and first calling the provider cost.
_FIRST_CALL = r"""
import json, sys, time
import torch
provider, rows, hidden, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), getattr(torch, sys.argv[4])
x = torch.randn(rows, hidden, device="cuda", dtype=dtype, requires_grad=True)
w = torch.nn.Parameter(torch.ones(hidden, device="cuda", dtype=dtype))
dy = torch.randn_like(x)
# PyTorch's own first backward(grad) imports sympy and torch.fx (0.5 s here, 1.9 s on the H200): not ours
(torch.ones(4, device="cuda", requires_grad=True) * 2).backward(torch.ones(4, device="cuda"))
torch.cuda.synchronize()
t0 = time.perf_counter()
if provider == "liger_aot":
    import liger_aot
    t1 = time.perf_counter()
    fwd = lambda: liger_aot.ops.rms_norm(x, w, 1e-6)
else:
    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    t1 = time.perf_counter()
    module = LigerRMSNorm(hidden, eps=1e-6).to(device="cuda", dtype=dtype)
    w = module.weight
    fwd = lambda: module(x)
ms = []
for _ in range(2):
    x.grad = w.grad = None
    t = time.perf_counter()
    fwd().backward(dy)
    torch.cuda.synchronize()
    ms.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"import_s": t1 - t0, "first_ms": ms[0], "second_ms": ms[1]}))
"""


def first_call(provider: str, dtype: torch.dtype, env: dict, notes) -> dict:
    argv = [sys.executable, "-c", _FIRST_CALL, provider, str(ROWS), "4096", str(dtype).removeprefix("torch.")]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        notes.append(f"first call {provider} failed (exit {done.returncode}): {tail}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_calls(liger_aot, liger_kernel, dtype, notes) -> str:
    runs = {}
    if liger_aot is not None:
        pythonpath = os.pathsep.join(p for p in (harness.liger_aot_path(), os.environ.get("PYTHONPATH")) if p)
        runs["liger_aot"] = first_call("liger_aot", dtype, {"PYTHONPATH": pythonpath}, notes)
    if liger_kernel is not None:
        with tempfile.TemporaryDirectory() as cache:  # Liger JIT-compiles into the Triton cache
            runs["Liger-Kernel, empty Triton cache"] = first_call("liger_kernel", dtype, {"TRITON_CACHE_DIR": cache}, notes)
            runs["Liger-Kernel, warm Triton cache"] = first_call("liger_kernel", dtype, {"TRITON_CACHE_DIR": cache}, notes)
    lines = [f"| fresh process, {ROWS}×4096 {_name(dtype)} | import s | first fwd+bwd ms | second fwd+bwd ms |",
             "|---|--:|--:|--:|"]
    lines += [f"| {name} | {r['import_s']:.3f} | {r['first_ms']:.1f} | {r['second_ms']:.2f} |"
              for name, r in runs.items() if r is not None]
    if runs.get("liger_aot") is not None:
        r = runs["liger_aot"]
        lines += ["", f"liger_aot targets: import ≤ 1 s ({'met' if r['import_s'] <= 1 else 'MISSED'}), "
                      f"first fwd+bwd ≤ 5 ms ({'met' if r['first_ms'] <= 5 else 'MISSED'})"]
    return "\n".join(lines)


def same_size_copy(table, cases, dtype) -> str:
    """liger_aot's forward moves what a copy of x moves (read x, write y): time that copy the same way."""
    fwd_ms = {r.case: r.ms for r in table.rows if r.mode == "fwd" and r.provider == "liger_aot"}
    lines = ["| case | copy x→y ms | copy GB/s | liger_aot fwd ms | fwd / copy time |", "|---|--:|--:|--:|--:|"]
    for case in cases:
        rows, hidden = (int(v) for v in case.name.split("x"))
        src = torch.randn(rows, hidden, device="cuda", dtype=dtype)
        dst = torch.empty_like(src)
        ms = harness.time_ms(lambda: dst.copy_(src))
        gbps = 2 * src.numel() * src.element_size() / ms / 1e6
        f = fwd_ms.get(case.name)
        lines.append(f"| {case.name} | {ms:.4g} | {gbps:.0f} | {'—' if f is None else f'{f:.4g}'} | "
                     f"{'—' if f is None else f'{100 * ms / f:.0f} %'} |")
    return "\n".join(lines)


def _name(dtype: torch.dtype) -> str:
    return next(k for k, v in harness.DTYPES.items() if v == dtype)


def _load_liger_kernel():
    from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    return argparse.Namespace(LigerRMSNormFunction=LigerRMSNormFunction, LigerRMSNorm=LigerRMSNorm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=sorted(harness.DTYPES), default="bf16")
    parser.add_argument("--quick", action="store_true", help="hidden 4096 only (< 1 min)")
    parser.add_argument("--results", nargs="?", const="", metavar="PATH",
                        help="append the markdown to PATH (no PATH: benchmarks/results/<gpu>.md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_rms_norm: needs a CUDA GPU")
    dtype = harness.DTYPES[args.dtype]

    notes = []
    liger_aot = harness.optional(harness.import_liger_aot, "liger_aot", notes)
    liger_kernel = harness.optional(_load_liger_kernel, "Liger-Kernel", notes)
    header = harness.environment_header(f"rms_norm, {args.dtype}" + (" (--quick)" if args.quick else ""))
    print(header + "\n", *notes, sep="\n", flush=True)

    ceiling = harness.copy_ceiling_gbps()
    print(f"copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, read + written)\n", flush=True)
    cases = [make_case(h, dtype) for h in ((4096,) if args.quick else HIDDEN)]
    table = harness.run(cases, providers(liger_aot, liger_kernel), harness.MODES, ceiling, notes, check=check)
    sections = [
        f"Copy ceiling: {ceiling:.0f} GB/s (2 GiB device-to-device copy, bytes read + written / median time).",
        "Forward against a copy of the same tensor, timed the same way (the ceiling at this shape):\n\n"
        + same_size_copy(table, cases, dtype),
        "Device time, median of CUDA events after an L2 flush; peak MB above the inputs "
        "(bwd: above the retained forward graph as well).\n\n" + table.markdown(),
        "fwd+bwd at a glance:\n\n" + table.pivot("full"),
        "Host time per call (2000 calls in a loop, torch.cuda.synchronize before and after, median of 5):\n\n"
        + launch_bound(liger_aot, liger_kernel, dtype, notes),
        "First call after import (fresh interpreter, CUDA already initialised):\n\n"
        + first_calls(liger_aot, liger_kernel, dtype, notes),
    ]
    harness.report(header, sections + [table.verdicts()], notes, args.results)


if __name__ == "__main__":
    main()
