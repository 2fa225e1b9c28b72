"""Tests of torch.ops.liger.group_norm (and its internal group_norm_fwd / group_norm_bwd).

Numerics follow the rule of tests/test_rms_norm.py: the op's error against a float64 reference (F.group_norm
in float64, gradients by autograd) may be at most twice the error of eager F.group_norm at x's precision plus
FLOOR_ULPS ulps of the result's magnitude. CPU tests run in CI; tests marked `gpu` need CUDA.
"""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerGroupNorm
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks, run_memcheck)

liger = torch.ops.liger
gpu = pytest.mark.gpu

EPS = 1e-5
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 2


def reference(x, g, w, b, eps):
    """The definition in x's precision (float64 here): normalize each group, then the per-channel affine."""
    n, c = x.shape[:2]
    xg = x.reshape(n, g, -1)
    mean = xg.mean(-1, keepdim=True)
    var = (xg - mean).square().mean(-1, keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + eps)).reshape(n, c, -1)
    if w is not None:
        y = y * w.view(1, c, 1)
    if b is not None:
        y = y + b.view(1, c, 1)
    return y.reshape(x.shape)


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS, finite_eager=False)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def op_grads(x, g, w, b, dy, eps=EPS):
    """(y, dx, dw, db) through the op's autograd path; dw/db None where the parameter is None."""
    leaves = [x.detach().requires_grad_()] + [None if p is None else p.detach().requires_grad_() for p in (w, b)]
    y = liger.group_norm(leaves[0], g, leaves[1], leaves[2], eps)
    inputs = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(y, inputs, dy))
    return (y.detach(),) + tuple(None if t is None else next(grads) for t in leaves)


def check_against_reference(x, g, w, b, dy, got, eps=EPS, what=""):
    """got = (y, dx, dw, db): each obeys the 2x rule against F.group_norm in float64."""
    y, dx, dw, db = got
    check_output(y, x)
    check_output(dx, x)
    if x.numel() == 0:
        return
    leaves64 = [x.detach().double().requires_grad_()] + [
        None if p is None else p.detach().double().requires_grad_() for p in (w, b)]
    y64 = reference(leaves64[0], g, leaves64[1], leaves64[2], eps)
    leaves_e = [x.detach().requires_grad_()] + [None if p is None else p.detach().requires_grad_() for p in (w, b)]
    # F.group_norm's backward fails with a bias and no weight ("tensor does not have a device"): a weight of
    # ones computes the same function.
    w_e = leaves_e[1] if w is not None or b is None else torch.ones(x.shape[1], dtype=x.dtype)
    ye = F.group_norm(leaves_e[0], g, w_e, leaves_e[2], eps)
    present = [i for i, t in enumerate(leaves64) if t is not None]
    g64 = dict(zip(present, torch.autograd.grad(y64, [leaves64[i] for i in present], dy.double())))
    ge = dict(zip(present, torch.autograd.grad(ye, [leaves_e[i] for i in present], dy)))
    err = Error("y", x.dtype)
    err.add(y, ye, y64, y64)
    err.check(what)
    with torch.no_grad():
        n, c = x.shape[:2]
        x64 = leaves64[0].detach().reshape(n, g, -1)
        xh = ((x64 - x64.mean(-1, keepdim=True)) / torch.sqrt(x64.var(-1, unbiased=False, keepdim=True) + eps))
        rstd = 1 / torch.sqrt(x64.var(-1, unbiased=False, keepdim=True) + eps)
        dyw = (dy.double().reshape(n, c, -1) * (1 if w is None else w.double().view(1, c, 1))).reshape(n, g, -1)
        # The saved mean is rounded to fp32 (as F.group_norm's): xh = (x - mean) * rstd then carries up to an ulp
        # of |mean| * rstd, which dominates where a group's spread is far below its mean (tiny groups).
        xh_err = x64.mean(-1, keepdim=True).abs() * rstd
        # dx = rstd * (dyw - mean(dyw) - xh * mean(dyw * xh)) cancels: its magnitude is that of rstd * |dyw|,
        # and the error of xh enters it through rstd * xh_err * |dyw|.
        dx_scale = (rstd * dyw.abs() * (1 + xh_err)).reshape(x.shape)
        terms = dy.double().reshape(n, c, -1).abs()
        xh_bound = (xh.abs() + xh_err).reshape(n, c, -1)
    err = Error("dx", x.dtype)
    err.add(dx, ge[0], g64[0], dx_scale)
    err.check(what)
    for i, got_p, name, term in ((1, dw, "dw", (terms * xh_bound).sum((0, 2))), (2, db, "db", terms.sum((0, 2)))):
        if i not in g64:
            continue
        p = (w, b)[i - 1]
        check_output(got_p, p)
        err = Error(name, p.dtype)
        # a sum over N and HW: its magnitude is the sum of its terms' magnitudes
        err.add(got_p, ge[i], g64[i], term.max())
        err.check(what)


# ---- CPU numerics


SHAPES = [((2, 6, 5, 7), 3), ((3, 8, 10), 2), ((4, 6), 3), ((2, 4, 3, 2, 5), 4), ((1, 32, 9, 9), 32),
          ((2, 16, 70), 1)]


@pytest.mark.parametrize("affine", ("weight_bias", "weight", "bias", "none"))
@pytest.mark.parametrize("shape,groups", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, shape, groups, affine):
    x = 2 * torch.randn(shape, dtype=dtype) + 3
    c = shape[1]
    w = torch.randn(c, dtype=dtype) if "weight" in affine else None
    b = torch.randn(c, dtype=dtype) if "bias" in affine else None
    dy = torch.randn(shape, dtype=dtype)
    got = op_grads(x, groups, w, b, dy)
    check_against_reference(x, groups, w, b, dy, got)
    assert torch.equal(liger.group_norm(x, groups, w, b, EPS), got[0])


@pytest.mark.parametrize("layout", ("transposed", "channels_last", "sliced", "expanded"))
def test_non_contiguous_inputs(layout):
    base = torch.randn(4, 6, 8, 8)
    x = {"transposed": base.transpose(2, 3), "channels_last": base.to(memory_format=torch.channels_last),
         "sliced": torch.randn(4, 6, 8, 16)[..., ::2], "expanded": torch.randn(1, 6, 8, 8).expand(4, 6, 8, 8)}[layout]
    w, b = torch.randn(6), torch.randn(6)
    dy = torch.randn(4, 6, 8, 8).transpose(2, 3)
    check_against_reference(x, 3, w, b, dy, op_grads(x, 3, w, b, dy))


def test_weight_of_another_dtype():
    x = torch.randn(2, 4, 9, dtype=torch.bfloat16)
    w, b = torch.randn(4), torch.randn(4)
    y, dx, dw, db = op_grads(x, 2, w, b, torch.randn_like(x))
    assert y.dtype == dx.dtype == torch.bfloat16 and dw.dtype == db.dtype == torch.float32
    torch.testing.assert_close(y.float(), reference(x.double(), 2, w.double(), b.double(), EPS).float(),
                               rtol=2**-7, atol=2**-7)


def test_python_wrappers_and_module():
    x = torch.randn(2, 8, 5, 5)
    w, b = torch.randn(8), torch.randn(8)
    assert torch.equal(liger_aot.ops.group_norm(x, 4, w, b), liger.group_norm(x, 4, w, b, 1e-5))
    m = LigerGroupNorm(8, 4, eps=1e-5, bias=True)
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert torch.equal(m(x), liger.group_norm(x, 4, m.weight, m.bias, 1e-5))
    m = LigerGroupNorm(8, 2, init_fn="zeros")
    assert torch.equal(m.weight, torch.zeros(8)) and torch.equal(m.bias, torch.zeros(8))
    with pytest.raises(ValueError, match="must be positive and divide"):
        LigerGroupNorm(8, 3)
    with pytest.raises(ValueError, match="init_fn"):
        LigerGroupNorm(8, 2, init_fn="normal")
    with pytest.raises(ValueError, match=r"input must have shape \[N, 8, \*\]"):
        LigerGroupNorm(8, 2)(torch.randn(2, 4, 3))


def test_loads_torch_group_norm_state_dict():
    ref = torch.nn.GroupNorm(4, 8, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = LigerGroupNorm(8, 4, eps=1e-5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 8, 6, 6)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 4, 8), (2, 4, 0), (0, 4)))
def test_zero_size(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(4, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = liger.group_norm(x, 2, w, b, EPS)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    y, mean, rstd = liger.group_norm_fwd(x.detach(), 2, w.detach(), b.detach(), EPS)
    assert mean.shape == rstd.shape == (shape[0], 2)


def test_internal_ops_match_public_op():
    x, w, b = torch.randn(3, 6, 10, dtype=torch.float16), torch.randn(6, dtype=torch.float16), torch.randn(6)
    dy = torch.randn_like(x)
    y, mean, rstd = liger.group_norm_fwd(x, 3, w, b, EPS)
    assert torch.equal(y, liger.group_norm(x, 3, w, b, EPS)) and mean.shape == (3, 3) and rstd.dtype == torch.float32
    dx, dw, db = liger.group_norm_bwd(dy, x, 3, w, mean, rstd, True, True)
    _, adx, adw, adb = op_grads(x, 3, w, b, dy)
    assert torch.equal(dx, adx) and torch.equal(dw, adw) and torch.equal(db.float(), adb)
    dx2, dw2, db2 = liger.group_norm_bwd(dy, x, 3, w, mean, rstd, False, False)
    assert torch.equal(dx2, dx) and dw2.shape == (0,) and db2.shape == (0,)


# ---- autograd


def test_gradcheck():
    x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: liger.group_norm(x, 3, w, b, EPS), (x, w, b))
    assert torch.autograd.gradcheck(lambda x: liger.group_norm(x, 2, None, None, EPS), (x,))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(lambda x, w, b: liger.group_norm(x, 3, w, b, EPS), (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = torch.randn(2, 4, 8, device=device, requires_grad=True)
    w = torch.randn(4, device=device, requires_grad=True)
    dx, dw = torch.autograd.grad(liger.group_norm(x, 2, w, None, EPS).square().sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(dx.sum() + dw.sum(), (x, w))


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for grad in (False, True):
            x, w, b = t(2, 6, 4, 5, dtype=dtype, grad=grad), t(6, dtype=dtype, grad=grad), t(6, dtype=dtype, grad=grad)
            samples.append(("group_norm", (x, 3, w, b, EPS), grad))
            samples.append(("group_norm", (t(3, 4, 7, dtype=dtype, grad=grad), 2, None, None, 1e-6), grad))
            samples.append(("group_norm_fwd", (x, 3, w, b, EPS), grad))
            _, mean, rstd = liger.group_norm_fwd(x.detach(), 3, w.detach(), b.detach(), EPS)
            dy = torch.randn_like(x).requires_grad_(grad)
            samples.append(("group_norm_bwd", (dy, x, 3, w, mean, rstd, True, True), grad))
            samples.append(("group_norm_bwd", (dy, x, 3, None, mean, rstd, False, False), grad))
    samples.append(("group_norm", (t(2, 4, 6, 3, grad=True).transpose(2, 3), 2, t(4, grad=True), None, EPS), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "group_norm_bwd" and grad:
        tests = tests[:-1]  # differentiating group_norm_bwd raises (test_double_backward_raises)
    opcheck(getattr(liger, name).default, args, test_utils=tests)


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def __init__(self, channels=8, groups=4):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels))
        self.bias = torch.nn.Parameter(torch.randn(channels))
        self.groups = groups

    def forward(self, x):
        return torch.ops.liger.group_norm(x * 2.0, self.groups, self.weight, self.bias, 1e-5) * 0.5


def liger_nodes(graph):
    return [n for n in graph.nodes if n.target is torch.ops.liger.group_norm.default]


def test_export_dynamic_shapes(tmp_path):
    model = Block()
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 2: torch.export.Dim("h", min=1, max=4096),
                  3: torch.export.Dim("w", min=1, max=4096)}}
    ep = torch.export.export(model, (torch.randn(2, 8, 3, 5),), dynamic_shapes=dims)
    assert len(liger_nodes(ep.graph)) == 1
    path = tmp_path / "group_norm.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for shape in ((1, 8, 1, 1), (4, 8, 7, 3), (2, 8, 3, 5)):
            x = torch.randn(shape)
            assert torch.equal(ep.module()(x), model(x))
            assert torch.equal(loaded.module()(x), model(x))


def test_torchscript_save_load_and_backward(tmp_path):
    model = Block()
    scripted = torch.jit.script(model)
    assert "liger::group_norm" in str(scripted.graph)
    scripted.save(str(tmp_path / "group_norm.pt"))
    loaded = torch.jit.load(str(tmp_path / "group_norm.pt"))
    x, dy = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 4, 4)
    outputs = []
    for m in (model, loaded):
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(dy)
        params = dict(m.named_parameters())
        outputs.append((y.detach(), xg.grad, params["weight"].grad, params["bias"].grad))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, w, b):
        return torch.ops.liger.group_norm(x * 2.0, 4, w, b, 1e-5) * 0.5

    w, b = torch.randn(8, device=device), torch.randn(8, device=device)
    cases = []
    for shape in ((2, 8, 5, 5), (3, 8, 7, 2)):
        x, dy = torch.randn(shape, device=device), torch.randn(shape, device=device)
        cases.append(((x, w, b), (0, 1, 2), dy))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- bad inputs


@pytest.mark.parametrize("args,match", [
    ((torch.randint(0, 5, (2, 4, 8)), 2, None, None), r"x must be float32, bfloat16 or float16"),
    ((torch.randn(8), 2, None, None), r"x must have shape \[N, C, \*\]"),
    ((torch.randn(2, 6, 8), 4, None, None), r"num_groups \(4\) must divide the number of channels C = x.shape\[1\] \(6\)"),
    ((torch.randn(2, 6, 8), 0, None, None), r"num_groups must be positive"),
    ((torch.randn(2, 6, 8), 3, torch.ones(5), None), r"weight must have shape \[6\]"),
    ((torch.randn(2, 6, 8), 3, None, torch.ones(6, 1)), r"bias must be 1-D"),
    ((torch.randn(2, 6, 8), 3, torch.ones(6, dtype=torch.int32), None), r"weight must be a floating-point"),
    ((torch.randn(2, 6, 8), 3, None, torch.ones(6, device="meta")), r"bias is on meta but x is on cpu"),
], ids=["int_x", "1d_x", "groups_divide", "groups_positive", "weight_length", "bias_2d", "int_weight", "bias_device"])
def test_bad_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        liger.group_norm(*args, EPS)
    with pytest.raises(RuntimeError, match=match):
        liger.group_norm_fwd(*args, EPS)


def test_bad_backward_inputs():
    x, w = torch.randn(2, 6, 8), torch.randn(6)
    y, mean, rstd = liger.group_norm_fwd(x, 3, w, None, EPS)
    with pytest.raises(RuntimeError, match=r"dy must have x's dtype"):
        liger.group_norm_bwd(y.double(), x, 3, w, mean, rstd, True, False)
    with pytest.raises(RuntimeError, match=r"dy must have x's shape"):
        liger.group_norm_bwd(y[:1], x, 3, w, mean, rstd, True, False)
    with pytest.raises(RuntimeError, match=r"rstd must have shape \[N, num_groups\]"):
        liger.group_norm_bwd(y, x, 3, w, mean, rstd[:, :2], True, False)


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

# (shape, groups): HW 1 / 3 / 49 / 4096 / 65536, groups of 1 channel up to 512 channels, odd sizes
# One-tile groups, more of them than programs ([32, 512, 16, 16], [64, 128, 32, 32]); wide tiles ([2, 8, 256, 256];
# [4, 40, 64, 64]: 5 channels per group, backward only; [2, 12, 130, 130]: 6 channels, unaligned spatial size).
# 16-bit groups held in registers (group_norm_fwd_regs_kernel: 16385-65536 elements, HW 256 / 1024 / 4096 / 16384):
# full tiles ([3, 64, 64, 64], [3, 8, 128, 128], [2, 64, 32, 32]) and tiles with idle channel rows ([4, 40, 64, 64]:
# 5 of 8, [2, 40, 32, 32]: 20 of 32, [2, 96, 16, 16]: 96 of 128, [2, 12, 64, 64]: 12 of 16); channels per group a
# multiple of 16 (the cpg16 variants): [3, 64, 64, 64], [2, 64, 32, 32] and [2, 96, 16, 16].
# BIG tiles (groups of 2-8192 / BLOCK_HW channels read once, launched as programmatic dependents): [8, 1024, 16, 16]
# (32 x 256), [16, 1024, 16, 16] (more groups than programs), [3, 60, 10, 12] (20 of 32 rows, 120 of 256 columns),
# [4, 48, 24, 24] (6 x 576 in 8 x 1024), [3, 16, 48, 48] (2 x 2304 in 2 x 4096); 16-bit groups of 8193-16384:
# [16, 320, 32, 32] (10 of 16 rows of 1024), [4, 1280, 16, 16] (40 of 64 rows of 256), [2, 64, 16, 16] (64 x 256),
# [3, 48, 20, 20] (16 x 400 in 16 x 1024). One-tile groups of at most OWN_MAX_N samples (the backward's G programs
# sum dweight / dbias themselves): [2, 64, 8, 8], [4, 30, 7, 7], [4, 64], [3, 6, 3], and [3, 8, 64, 64] on a WIDE
# variant's one [4, 4096] tile. 16-bit groups of exactly 65536 elements with a spatial size a multiple of 256 take
# group_norm_fwd_split16_kernel on sm_90: HW 4096 ([3, 64, 64, 64]), 16384 ([3, 8, 128, 128]), 1024
# ([2, 64, 32, 32]), 256 ([2, 512, 16, 16]: 256 channels a group), 512 ([2, 128, 16, 32]: two rows of 256 a channel)
# and 65536 ([2, 4, 256, 256]: one channel a group).
GPU_SHAPES = [((2, 64, 8, 8), 32), ((4, 30, 7, 7), 5), ((3, 8, 64, 64), 2), ((8, 1024, 16, 16), 32), ((16, 1024, 16, 16), 32), ((3, 60, 10, 12), 3), ((4, 48, 24, 24), 8),
              ((3, 16, 48, 48), 8), ((16, 320, 32, 32), 32), ((4, 1280, 16, 16), 32), ((2, 64, 16, 16), 1),
              ((3, 48, 20, 20), 3),
              ((4, 64), 8), ((3, 6, 3), 3), ((8, 64, 7, 7), 32), ((5, 30, 11, 13), 5), ((32, 512, 16, 16), 32),
              ((2, 64, 64, 64), 32), ((2, 8, 256, 256), 2), ((7, 4, 8, 8), 4), ((1, 2048, 3), 1), ((2, 6, 4097), 3),
              ((64, 128, 32, 32), 32), ((4, 40, 64, 64), 8), ((2, 12, 130, 130), 2), ((3, 64, 64, 64), 4),
              ((3, 8, 128, 128), 2), ((2, 40, 32, 32), 2), ((2, 96, 16, 16), 1), ((2, 12, 64, 64), 1),
              ((2, 64, 32, 32), 2), ((2, 512, 16, 16), 2), ((2, 128, 16, 32), 1), ((2, 4, 256, 256), 4)]


@gpu
@pytest.mark.parametrize("shape,groups", GPU_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, shape, groups):
    x = 2 * torch.randn(shape, dtype=dtype, device="cuda") + 3
    c = shape[1]
    dy = torch.randn_like(x)
    for affine in ("weight_bias", "none", "weight"):
        w = torch.randn(c, dtype=dtype, device="cuda") if "weight" in affine else None
        b = torch.randn(c, dtype=dtype, device="cuda") if "bias" in affine else None
        first = [t.clone() for t in op_grads(x, groups, w, b, dy) if t is not None]
        poison_freed_blocks(*[(x.numel(), dtype)] * 3, (2 * shape[0] * c, torch.float32), (c, dtype),
                            copies=2)
        got = op_grads(x, groups, w, b, dy)
        for a, b_ in zip(first, [t for t in got if t is not None]):
            assert torch.equal(a, b_), f"{affine}: not deterministic or reads a poisoned block"
        with torch.no_grad():
            assert torch.equal(liger.group_norm(x, groups, w, b, EPS), got[0])
        check_against_reference(x, groups, w, b, dy, got, what=f"{affine}: ")


@gpu
@pytest.mark.parametrize("layout", ("transposed", "channels_last", "storage_offset", "expanded"))
def test_cuda_non_contiguous_inputs(layout):
    base = torch.randn(4, 32, 16, 16, device="cuda", dtype=torch.bfloat16)
    x = {"transposed": base.transpose(2, 3), "channels_last": base.to(memory_format=torch.channels_last),
         "storage_offset": torch.randn(1 + base.numel(), device="cuda", dtype=torch.bfloat16)[1:].view(base.shape),
         "expanded": base[:1].expand(4, 32, 16, 16)}[layout]
    w, b = torch.randn(32, device="cuda", dtype=torch.bfloat16), torch.randn(32, device="cuda", dtype=torch.bfloat16)
    dy = torch.randn(4, 32, 16, 16, device="cuda", dtype=torch.bfloat16).transpose(2, 3)
    check_against_reference(x, 8, w, b, dy, op_grads(x, 8, w, b, dy))


@gpu
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_cuda_unaligned_x_of_a_register_shape(dtype):
    # a group of 16 x 4096 elements takes the register kernel when x is 16-byte aligned, the tiles when not
    aligned = 2 * torch.randn(2, 16, 64, 64, device="cuda", dtype=dtype) + 1
    unaligned = torch.empty(1 + aligned.numel(), device="cuda", dtype=dtype)[1:].view(aligned.shape)
    unaligned.copy_(aligned)
    w, b = torch.randn(16, device="cuda", dtype=dtype), torch.randn(16, device="cuda", dtype=dtype)
    dy = torch.randn_like(aligned)
    for x in (aligned, unaligned):
        check_against_reference(x, 1, w, b, dy, op_grads(x, 1, w, b, dy))


@gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="group_norm_fwd_split16_kernel is built for sm_90 only")
def test_cuda_split16_kernel_takes_its_groups():
    # which forward kernel runs, seen by the profiler: the split16 kernel for aligned 16-bit groups of 65536
    # elements (with fp32 parameters too), the register kernel for 16-bit groups of 32768, the tiles for unaligned
    # x and for fp32
    def kernels(x):
        w = torch.randn(x.shape[1], device="cuda", dtype=torch.float32 if x.dtype == torch.float16 else x.dtype)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            liger.group_norm(x, 4, w, None, EPS)
            torch.cuda.synchronize()
        return {e.key for e in prof.key_averages() if "group_norm_fwd" in e.key}

    x = torch.randn(3, 64, 64, 64, device="cuda", dtype=torch.bfloat16)
    unaligned = torch.empty(1 + x.numel(), device="cuda", dtype=x.dtype)[1:].view(x.shape).copy_(x)
    assert kernels(x) == {"group_norm_fwd_split16_kernel"}
    assert kernels(x.half()) == {"group_norm_fwd_split16_kernel"}
    assert kernels(x[:, :32].contiguous()) == {"group_norm_fwd_regs_kernel"}
    assert kernels(unaligned) == {"group_norm_fwd_kernel"}
    assert kernels(x.float()) == {"group_norm_fwd_kernel"}


@gpu
def test_cuda_weight_of_another_dtype():
    x = torch.randn(4, 16, 9, 9, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(16, device="cuda"), torch.randn(16, device="cuda")
    got = op_grads(x, 4, w, b, torch.randn_like(x))
    ref = op_grads(x.cpu(), 4, w.cpu(), b.cpu(), torch.zeros_like(x.cpu()))[0]
    assert got[2].dtype == torch.float32 and got[3].dtype == torch.float32
    torch.testing.assert_close(got[0].cpu().float(), ref.float(), rtol=2**-7, atol=2**-6)


@gpu
@pytest.mark.parametrize("param_dtype", (torch.float16, torch.float64), ids=dtype_id)
def test_cuda_parameters_of_a_third_dtype(param_dtype):
    # bf16 x with fp16 / fp64 weight and bias: the kernels read fp32 copies of them, and dweight / dbias come back
    # in the parameters' dtype (the reduce kernel stores fp16 directly, fp64 through fp32)
    x = torch.randn(4, 16, 9, 9, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(16, device="cuda", dtype=param_dtype)
    b = torch.randn(16, device="cuda", dtype=param_dtype)
    dy = torch.randn_like(x)
    got = op_grads(x, 4, w, b, dy)
    assert got[2].dtype == param_dtype and got[3].dtype == param_dtype
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y64 = F.group_norm(leaves[0], 4, leaves[1], leaves[2], EPS)
    ref = (y64.detach(),) + torch.autograd.grad(y64, leaves, dy.double())
    for name, a, r in zip(("y", "dx", "dw", "db"), got, ref):
        scale = r.abs().max().item()
        err = (a.double() - r).abs().max().item() / scale
        assert err < 2 ** -6, f"{name}: relative error {err:.3g}"


@gpu
@pytest.mark.parametrize("shape,groups", (((33, 64, 1024, 1024), 32), ((2049, 256, 64, 64), 16)),
                         ids=("groups_of_2^21", "groups_in_registers"))
def test_cuda_more_than_2_31_elements(shape, groups):
    x = torch.randn(shape, dtype=torch.bfloat16, device="cuda")  # 2.2e9 elements
    assert x.numel() > 2**31
    c = shape[1]
    w, b = torch.randn(c, dtype=torch.bfloat16, device="cuda"), torch.randn(c, dtype=torch.bfloat16, device="cuda")
    dy = torch.randn_like(x)
    got = op_grads(x, groups, w, b, dy)
    # the float64 reference of the whole tensor does not fit: check a few samples against F.group_norm in fp32
    for i in (0, shape[0] // 2, shape[0] - 1):
        xs, dys = x[i:i + 1].float().requires_grad_(), dy[i:i + 1].float()
        ws, bs = w.float().requires_grad_(), b.float().requires_grad_()
        ys = F.group_norm(xs, groups, ws, bs, EPS)
        (dxs,) = torch.autograd.grad(ys, xs, dys)
        torch.testing.assert_close(got[0][i:i + 1].float(), ys, rtol=2**-7, atol=2**-6)
        torch.testing.assert_close(got[1][i:i + 1].float(), dxs, rtol=2**-7, atol=2**-6)
    db = dy.float().sum((0, 2, 3))
    torch.testing.assert_close(got[3].float(), db, rtol=2**-7, atol=db.abs().max().item() * 2**-7)


@gpu
@pytest.mark.parametrize("shape,groups", (((8, 64, 32, 32), 16), ((4, 64, 64, 64), 4), ((8, 256, 16, 16), 8),
                                          ((2, 1280, 16, 16), 32)), ids=str)
def test_cuda_graph_capture_and_replay(shape, groups):
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(shape[1], device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(shape[1], device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn_like(x)

    def step():
        y = liger.group_norm(x, groups, w, b, EPS)
        return (y,) + torch.autograd.grad(y, (x, w, b), dy)

    check_cuda_graph(step, (x, dy), lambda new_x, new_dy: op_grads(new_x, groups, w, b, new_dy)[:4])


@gpu
def test_cuda_bad_inputs():
    x = torch.randn(2, 4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="weight is on cpu but x is on cuda"):
        liger.group_norm(x, 2, torch.ones(4), None, EPS)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.group_norm(x.double(), 2, None, None, EPS)


SANITIZER_SCRIPT = """
import torch
import liger_aot

liger = torch.ops.liger
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for shape, groups, offset in (((2, 4), 2, 0), ((3, 6, 5), 3, 1), ((2, 8, 7, 9), 4, 0), ((0, 4, 3), 2, 0),
                                  ((2, 64, 8, 8), 32, 1), ((2, 32, 64, 64), 8, 0), ((1, 6, 4097), 3, 0),
                                  ((2, 64, 16, 16), 2, 0), ((3, 60, 10, 12), 3, 0), ((2, 64, 16, 16), 1, 0)):
        numel = 1
        for s in shape:
            numel *= s
        x = torch.randn(numel + 1, dtype=dtype, device="cuda")[offset:offset + numel].view(shape)
        c = shape[1]
        for w, b in ((torch.randn(c, device="cuda"), torch.randn(c, device="cuda")), (None, None)):
            xg = x.detach().requires_grad_()
            wg = None if w is None else w.requires_grad_()
            bg = None if b is None else b.requires_grad_()
            y = liger.group_norm(xg, groups, wg, bg, 1e-5)
            y.backward(torch.randn_like(y))
            torch.cuda.synchronize()
print("sanitizer script ok")
"""


@gpu
def test_cuda_compute_sanitizer_memcheck(tmp_path):
    run_memcheck(SANITIZER_SCRIPT, tmp_path)
