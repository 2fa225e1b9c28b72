"""Benchmarks ``liger_aot.ops.rms_norm`` against PyTorch and Liger-Kernel.

    python benchmarks/bench_rms_norm.py                  # full run, ~3 min on an H200
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
import torch.nn.functional as F

import harness

ROWS = 8192
HIDDEN = (1024, 2048, 4096, 8192, 16384, 32768)
EPS = 1e-6
# sanity check only (tests/ hold the numerics): two ulps of the dtype, as F.rms_norm rounds once where
# the Llama formula rounds twice
TOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10, torch.float32: 2**-21}


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


def providers(liger_aot, liger_kernel, notes):
    found = []
    if liger_aot is not None:
        found.append(harness.Provider("liger_aot", lambda x, w: liger_aot.ops.rms_norm(x, w, EPS)))
    found += [
        harness.Provider("torch F.rms_norm", lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS)),
        harness.Provider("HF eager", lambda x, w: hf_rms_norm(x, w, EPS)),
        harness.Provider("HF torch.compile", torch.compile(hf_rms_norm, dynamic=False), compiled=True),
    ]
    if liger_kernel is not None:
        function = liger_kernel["LigerRMSNormFunction"]
        # LigerRMSNorm.forward's call, its defaults included: offset 0, llama, in_place=True, row_mode None
        found.append(harness.Provider("Liger-Kernel", lambda x, w: function.apply(x, w, EPS, 0.0, "llama", True, None)))
    if found[-1].fn is not None and found[3].compiled:
        found[3] = harness.Provider("HF torch.compile", _with_eps(found[3].fn), compiled=True)
    return found
