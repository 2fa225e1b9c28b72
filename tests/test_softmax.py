"""Tests of torch.ops.liger.softmax (and its internal softmax_bwd).

Numerics follow the rule of tests/test_rms_norm.py: the op's error against a float64 reference written here
may be at most twice the error of eager PyTorch (torch.softmax at x's precision) plus FLOOR_ULPS ulps of the
result's magnitude. CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools

import pytest
import torch

import liger_aot
from liger_aot.nn import LigerSoftmax
from _shared import MaxError, dtype_id
from _row_op_contract import contract_tests, gpu_tests

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
# The op and the baseline may each round a final result once the other way (2 ulps). In fp32 the kernels'
# own arithmetic shows as well: libdevice expf (<= 2 ulps), the reciprocal of the sum and the product with
# it (1 each): 4 ulps (an H200 run measured 4.5 ulps of the result on one row of an expanded batch).
FLOOR_ULPS = {torch.float32: 4}


# ---- float64 reference (independent of the op)


def reference(x):
    """The definition in float64: exp(x - max) / sum(exp(x - max)) over the last dimension."""
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS, finite_eager=False)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert not torch.isnan(t).any(), "NaN in the op's output"


def check_against_reference(x, y, dy, dx, *, chunk_elems=1 << 26, what=""):
    """Asserts y and dx (for the incoming gradient dy) obey the 2x rule, over chunks of rows."""
    hidden = x.shape[-1]
    check_output(y, x)
    check_output(dx, x)
    if x.numel() == 0:
        return
    xs, ys, dys, dxs = (t.reshape(-1, hidden) for t in (x, y, dy, dx))
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    step = max(1, chunk_elems // hidden)
    for start in range(0, xs.shape[0], step):
        rows = slice(start, start + step)
        x64 = xs[rows].detach().double().requires_grad_()
        y64 = reference(x64)
        xe = xs[rows].detach().requires_grad_()
        ye = torch.softmax(xe, -1)
        err_y.add(ys[rows], ye, y64, y64)
        dy64 = dys[rows].double()
        (g64,) = torch.autograd.grad(y64, x64, dy64)
        (ge,) = torch.autograd.grad(ye, xe, dys[rows])
        with torch.no_grad():
            # dx = y * (dy - sum(dy * y)) cancels: its magnitude is that of y * dy and y * sum(dy * y).
            scale = y64 * dy64.abs() + y64 * (dy64 * y64).sum(-1, keepdim=True).abs()
        err_dx.add(dxs[rows], ge, g64, scale)
    err_y.check(what)
    err_dx.check(what)


def fwd_bwd(x, dy):
    xg = x.detach().requires_grad_()
    y = liger.softmax(xg)
    (dx,) = torch.autograd.grad(y, xg, dy)
    return y.detach(), dx


# ---- CPU numerics


def make_x(layout, dtype, device="cpu"):
    randn = lambda *s: 3 * torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
    return {
        "1d": lambda: randn(37),
        "hidden1": lambda: randn(5, 1),
        "odd_hidden": lambda: randn(3, 7, 131),
        "3d": lambda: randn(2, 3, 64),
        "transposed": lambda: randn(6, 4, 96).transpose(0, 1),
        "row_sliced": lambda: randn(5, 80)[:, :64],
        "last_dim_strided": lambda: randn(4, 128)[:, ::2],
        "storage_offset": lambda: randn(1 + 4 * 40)[1:].view(4, 40),
        "expanded_rows": lambda: randn(1, 64).expand(5, 64),
    }[layout]()


CPU_LAYOUTS = ("1d", "hidden1", "odd_hidden", "3d", "transposed", "row_sliced", "last_dim_strided",
               "storage_offset", "expanded_rows")


@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, layout):
    x = make_x(layout, dtype)
    dy = torch.randn(x.shape, dtype=dtype)
    y, dx = fwd_bwd(x, dy)
    check_against_reference(x, y, dy, dx)
    assert torch.equal(liger.softmax(x), y)  # no-grad path: same values


def test_minus_infinity_and_large_values():
    x = torch.randn(4, 50) * 100
    x[0, :10] = float("-inf")
    x[1] = float("-inf")  # every entry -inf: NaN, as torch.softmax
    y = liger.softmax(x)
    ref = torch.softmax(x, -1)
    assert torch.isnan(y[1]).all() and torch.isnan(ref[1]).all()
    keep = [0, 2, 3]
    torch.testing.assert_close(y[keep], ref[keep], rtol=1e-6, atol=1e-7)
    assert torch.equal(y[0, :10], torch.zeros(10))


def test_python_wrappers_and_module():
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.softmax(x), liger.softmax(x))
    assert torch.equal(LigerSoftmax()(x), liger.softmax(x))


# ---- zero-size, the backward op, autograd, opcheck, torch.export, TorchScript, torch.compile, bad inputs: the
# tests softmax and sparsemax share (tests/_row_op_contract.py)


class Block(torch.nn.Module):
    def forward(self, x):
        return torch.ops.liger.softmax(x * 2.0) * 0.5


globals().update(contract_tests("softmax", Block))


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

# the matches-float64 sweep (every dtype, 1 to 262144 columns, 0 to 4099 rows, poisoned outputs, determinism),
# strided and expanded inputs, > 2^31 elements, CUDA graphs, float64 x refused, compute-sanitizer: the tests
# softmax and sparsemax share (tests/_row_op_contract.py)
globals().update(gpu_tests("softmax", fwd_bwd, check_against_reference))


@gpu
def test_cuda_minus_infinity():
    for hidden in (1000, 70000):
        x = torch.randn(3, hidden, device="cuda") * 30
        x[0, : hidden // 2] = float("-inf")
        torch.testing.assert_close(liger.softmax(x), torch.softmax(x, -1), rtol=1e-5, atol=1e-7)
