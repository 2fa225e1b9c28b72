"""Tests of torch.ops.liger.sparsemax (and its internal sparsemax_bwd).

Numerics follow the rule of tests/test_rms_norm.py: the op's error against a float64 reference written here
may be at most twice the error of the eager baseline plus FLOOR_ULPS ulps of the result's magnitude. The
baseline is the sort-based formula computed by eager PyTorch in fp32 and rounded to x's dtype (what
Liger-Kernel computes; in bf16/fp16 the sort and cumulative sum themselves would be far less accurate). CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools

import pytest
import torch

import liger_aot
from liger_aot.nn import LigerSparsemax
from _shared import MaxError, dtype_id
from _row_op_contract import contract_tests, gpu_tests

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
FLOOR_ULPS = 2  # the op and the baseline may each round a final result once the other way


# ---- float64 reference (independent of the op)


def reference(x):
    """Sparsemax by the textbook algorithm (sort, cumulative sums, support size) in x's precision."""
    z = x.sort(-1, descending=True).values
    r = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    support = 1 + r * z > z.cumsum(-1)
    k = support.sum(-1, keepdim=True)
    tau = (torch.where(support, z, 0).sum(-1, keepdim=True) - 1) / k
    # where, not clamp_min: at x == tau (frequent on the bf16 grid) clamp_min's gradient is 1, which puts x
    # in the support for autograd; the op's backward (like Liger-Kernel's) uses the strict support y > 0.
    d = x - tau
    return torch.where(d > 0, d, 0)


def eager(x):
    """The baseline: the formula in fp32 (float64 for float64 x), rounded to x's dtype."""
    return reference(x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)).to(x.dtype)


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
        ye = eager(xe)
        # y = x - tau with tau computed in the op's precision: an error of an ulp or two of |tau| is inherent
        with torch.no_grad():
            support = y64 > 0
            tau64 = ((x64 - y64) * support).sum(-1, keepdim=True) / support.sum(-1, keepdim=True).clamp_min(1)
        err_y.add(ys[rows], ye, y64, y64.abs() + tau64.abs())
        dy64 = dys[rows].double()
        (g64,) = torch.autograd.grad(y64, x64, dy64)
        (ge,) = torch.autograd.grad(ye, xe, dys[rows])
        with torch.no_grad():
            # Where some x is within fp32 rounding of tau (ties are frequent on the bf16/fp16 grid) sparsemax is
            # not differentiable and either side's gradient is right: there the op's gradient must be the one
            # of its own support, which may differ from the exact one only at such near-ties.
            x64d, op_supp = x64.detach(), ys[rows] > 0
            tau64 = (x64d - y64.detach())[torch.arange(x64d.shape[0]), y64.detach().argmax(-1)].unsqueeze(-1)
            magnitude = torch.where(x64d.isfinite(), x64d.abs(), 0).amax(-1, keepdim=True)
            near = (x64d - tau64).abs() <= 8 * torch.finfo(torch.float32).eps * magnitude
            exact_supp = y64.detach() > 0
            assert torch.equal(op_supp & ~near, exact_supp & ~near), f"{what}support differs away from a tie"
            tie_rows = (near & (op_supp != exact_supp)).any(-1, keepdim=True)
            k = op_supp.sum(-1, keepdim=True).clamp_min(1)
            own = torch.where(op_supp, dy64 - torch.where(op_supp, dy64, 0).sum(-1, keepdim=True) / k, 0)
            g64 = torch.where(tie_rows, own, g64)
            ge = torch.where(tie_rows, own.to(ge.dtype), ge)  # no baseline error credited on those rows
            # dx = dy - mean(dy over the support) on the support: its magnitude is that of dy and the mean.
            scale = dy64.abs() + (g64 - dy64).abs()
        err_dx.add(dxs[rows], ge, g64, scale)
    err_y.check(what)
    err_dx.check(what)


def fwd_bwd(x, dy):
    xg = x.detach().requires_grad_()
    y = liger.sparsemax(xg)
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
    assert torch.equal(liger.sparsemax(x), y)  # no-grad path: same values


def test_special_rows():
    x = torch.randn(6, 50, dtype=torch.float64) * 100
    x[0, :10] = float("-inf")
    x[2] = 0.25  # ties: uniform output
    x[3] = torch.randn(50, dtype=torch.float64) * 1e-3  # support is the whole row
    x[4, :3] = 7.0  # a tie at the top
    y = liger.sparsemax(x)
    torch.testing.assert_close(y, reference(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.sum(-1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y[2], torch.full((50,), 1 / 50, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.equal(y[0, :10], torch.zeros(10, dtype=torch.float64))


def test_python_wrappers_and_module():
    x = torch.randn(4, 6, 32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.sparsemax(x), liger.sparsemax(x))
    assert torch.equal(LigerSparsemax()(x), liger.sparsemax(x))
    for dim in (0, 1, -2, -3):
        xg = x.detach().float().requires_grad_()
        y = LigerSparsemax(dim=dim)(xg)
        assert torch.equal(y, liger.sparsemax(x.float().transpose(dim, -1)).transpose(dim, -1))
        torch.testing.assert_close(y.sum(dim), torch.ones_like(y.sum(dim)))
        y.backward(torch.randn_like(y))
        assert xg.grad.shape == x.shape
    with pytest.raises(ValueError, match="out of range"):
        LigerSparsemax(dim=3)(x)
    assert "dim=1" in repr(LigerSparsemax(dim=1))


# ---- zero-size, the backward op, autograd, opcheck, torch.export, TorchScript, torch.compile, bad inputs: the
# tests softmax and sparsemax share (tests/_row_op_contract.py)


class Block(torch.nn.Module):
    def forward(self, x):
        return torch.ops.liger.sparsemax(x * 2.0) * 0.5


globals().update(contract_tests("sparsemax", Block))


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

# the matches-float64 sweep (every dtype, 1 to 262144 columns, 0 to 4099 rows, poisoned outputs, determinism),
# strided and expanded inputs, > 2^31 elements, CUDA graphs, float64 x refused, compute-sanitizer: the tests
# softmax and sparsemax share (tests/_row_op_contract.py)
globals().update(gpu_tests("sparsemax", fwd_bwd, check_against_reference))


@gpu
@pytest.mark.parametrize("hidden", (1000, 20000, 70000))  # one block, persistent, looped
@pytest.mark.parametrize("scale", (1e-3, 1.0, 100.0))  # support: the whole row, a few entries, one entry
def test_cuda_special_rows(hidden, scale):
    x = torch.randn(4, hidden, device="cuda") * scale
    x[0, : hidden // 2] = float("-inf")
    x[1] = 0.5
    x[2, :5] = x[2].max() + 1
    dy = torch.randn_like(x)
    y, dx = fwd_bwd(x, dy)
    check_against_reference(x, y, dy, dx)
    # y = x - tau cancels: each entry carries up to an ulp of max|x|
    magnitude = torch.where(x.isfinite(), x.abs(), 0).amax().item()
    atol = 2 * hidden * torch.finfo(torch.float32).eps * max(magnitude, 1.0)
    torch.testing.assert_close(y.sum(-1), torch.ones(4, device="cuda"), rtol=0, atol=atol)


@gpu
@pytest.mark.parametrize("hidden", (1024, 4096, 5000, 20000, 32768, 70000))  # one row per program, persistent, looped
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_candidates_in_one_vector(dtype, hidden):
    """One-row and looped forwards take the threshold from each 16-byte vector's maximum when no vector holds two
    entries >= max - 1, from the whole row otherwise: rows of both kinds, side by side in one launch."""
    x = 3 * torch.randn(64, hidden, device="cuda", dtype=torch.float32)
    top = x.amax(-1, keepdim=True)
    x[0::4, 8:10] = top[0::4] + torch.tensor([0.5, 0.25], device="cuda")  # two in one vector: the whole row
    x[1::4, 0] = top[1::4, 0] + 0.5  # neighbouring vectors: the maxima
    x[1::4, 16] = top[1::4, 0] + 0.25
    x[2::4, 3:6] = top[2::4] + 0.125  # three tied entries in one vector
    x = x.to(dtype)
    dy = torch.randn_like(x)
    y, dx = fwd_bwd(x, dy)
    check_against_reference(x, y, dy, dx)
    assert (y[1::4, 0] > 0).all() and (y[0::4, 8] > 0).all()
