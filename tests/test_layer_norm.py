"""Tests of torch.ops.liger.layer_norm (and its internal layer_norm_fwd / layer_norm_bwd).

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here (not the
op's CPU path) may be at most twice the error of eager PyTorch (F.layer_norm) at the same precision, plus a
floor of FLOOR_ULPS ulps of the result's magnitude so that an exact baseline does not demand exactness.
CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerLayerNorm
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks, run_memcheck)

liger = torch.ops.liger
gpu = pytest.mark.gpu

EPS = 1e-5
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
# 2 ulps: the op and the baseline may each round a final result once the other way.
FLOOR_ULPS = 2


# ---- float64 reference and eager baseline (independent of the op)


def reference(x, w, b, eps):
    """The definition, in whatever precision it is given (float64 here)."""
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if w is not None:
        y = y * w
    return y if b is None else y + b


def eager(x, w, b, eps):
    """F.layer_norm at x's precision: the 2x rule's baseline (parameters of another dtype cast to x's)."""
    cast = lambda p: None if p is None else p.to(x.dtype)  # noqa: E731
    return F.layer_norm(x, x.shape[-1:], cast(w), cast(b), eps)


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(x, w, b, y, dy, dx, dw, db, *, eps=EPS, chunk_elems=1 << 26, what=""):
    """Asserts the op's y, dx, dw and db (None for an absent parameter) obey the 2x rule, over chunks of rows."""
    hidden = x.shape[-1]
    check_output(y, x)
    check_output(dx, x)
    xs, ys, dys, dxs = (t.reshape(-1, hidden) for t in (x, y, dy, dx))
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    params = [p for p in (w, b) if p is not None]
    sums64 = [torch.zeros(hidden, dtype=torch.float64, device=x.device) for _ in params]
    sums_eager = [torch.zeros(hidden, dtype=torch.float64, device=x.device) for _ in params]
    terms = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in params]
    step = max(1, chunk_elems // hidden)
    for start in range(0, xs.shape[0], step):
        rows = slice(start, start + step)
        x64 = xs[rows].detach().double().requires_grad_()
        p64 = [p.detach().double().requires_grad_() for p in params]
        w64 = p64[0] if w is not None else None
        b64 = p64[-1] if b is not None else None
        y64 = reference(x64, w64, b64, eps)
        xe = xs[rows].detach().requires_grad_()
        pe = [p.detach().requires_grad_() for p in params]
        ye = eager(xe, pe[0] if w is not None else None, pe[-1] if b is not None else None, eps)
        err_y.add(ys[rows], ye, y64, y64)
        dy64 = dys[rows].double()
        g64 = torch.autograd.grad(y64, [x64] + p64, dy64)
        ge = torch.autograd.grad(ye, [xe] + pe, dys[rows])
        with torch.no_grad():
            rstd = torch.rsqrt((x64 - x64.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True) + eps)
            g = dy64 if w is None else dy64 * w64
            # dx = rstd*(g - mean(g) - xhat*mean(g*xhat)) cancels: its magnitude is that of rstd*g.
            err_dx.add(dxs[rows], ge[0], g64[0], rstd * g)
            xhat = (x64 - x64.mean(-1, keepdim=True)) * rstd
            for i, p in enumerate(params):
                sums64[i] += g64[1 + i]
                sums_eager[i] += ge[1 + i].double()
                term = dy64 * xhat if (w is not None and i == 0) else dy64
                terms[i] = torch.maximum(terms[i], term.abs().max())
    err_y.check(what)
    err_dx.check(what)
    for i, (p, got, name) in enumerate(zip(params, [g for g in (dw, db) if g is not None],
                                           [n for n, q in (("dw", w), ("db", b)) if q is not None])):
        check_output(got, p)
        # float64 parameters of a float32 x: the kernels sum in float32, whose ulps set the floor.
        err = Error(name, p.dtype if p.dtype != torch.float64 or x.dtype == torch.float64 else torch.float32)
        # dw and db sum over rows: their magnitude is that of the sum or of its largest term.
        err.add(got, sums_eager[i].to(p.dtype), sums64[i], torch.maximum(sums64[i].abs().max(), terms[i]))
        err.check(what)


def fwd_bwd(x, w, b, dy, eps=EPS):
    """The op through its autograd path: (y, dx, dw, db); dw / db are None for absent parameters."""
    xg = x.detach().requires_grad_()
    wg = None if w is None else w.detach().requires_grad_()
    bg = None if b is None else b.detach().requires_grad_()
    y = liger.layer_norm(xg, wg, bg, eps)
    leaves = [t for t in (xg, wg, bg) if t is not None]
    grads = list(torch.autograd.grad(y, leaves, dy))
    dx = grads.pop(0)
    dw = grads.pop(0) if wg is not None else None
    db = grads.pop(0) if bg is not None else None
    return y.detach(), dx, dw, db


# ---- CPU numerics


def make_x(layout, dtype, device="cpu"):
    randn = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
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
        "large_mean": lambda: randn(4, 96) * 0.1 + 100,  # |mean| >> std: a one-pass variance would cancel
    }[layout]()


CPU_LAYOUTS = ("1d", "hidden1", "odd_hidden", "3d", "transposed", "row_sliced", "last_dim_strided",
               "storage_offset", "expanded_rows", "large_mean")


@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, layout):
    x = make_x(layout, dtype)
    w = torch.randn(x.shape[-1], dtype=dtype)
    b = torch.randn(x.shape[-1], dtype=dtype)
    dy = torch.randn(x.shape, dtype=dtype)
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db)
    assert torch.equal(liger.layer_norm(x, w, b, EPS), y)  # no-grad path: same values


def other_float_dtype(dtype):
    return torch.bfloat16 if dtype in (torch.float32, torch.float64) else torch.float32


@pytest.mark.parametrize("params", ("none", "weight", "bias", "both", "weight_other_dtype", "bias_other_dtype"))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_parameter_variants(dtype, params):
    x = torch.randn(6, 50, dtype=dtype)
    dy = torch.randn_like(x)
    w_dtype = other_float_dtype(dtype) if params == "weight_other_dtype" else dtype
    b_dtype = other_float_dtype(dtype) if params == "bias_other_dtype" else dtype
    w = torch.randn(50, dtype=w_dtype) if params not in ("none", "bias") else None
    b = torch.randn(50, dtype=b_dtype) if params not in ("none", "weight") else None
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db)


def test_matches_torch_layer_norm_in_float32():
    x, w, b = torch.randn(8, 300), torch.randn(300), torch.randn(300)
    torch.testing.assert_close(liger.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (300,), w, b, 1e-5))


def test_python_wrappers_call_the_op():
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    w, b = torch.randn(32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.layer_norm(x, w, b), liger.layer_norm(x, w, b, 1e-5))
    assert torch.equal(liger_aot.ops.layer_norm(x), liger.layer_norm(x, None, None))
    m = LigerLayerNorm(32, eps=1e-5, dtype=torch.bfloat16)
    assert torch.equal(m.weight, torch.ones(32, dtype=torch.bfloat16)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    assert torch.equal(m(x), liger.layer_norm(x, m.weight.detach(), m.bias.detach(), 1e-5))
    assert torch.equal(LigerLayerNorm(32, init_fn="zeros").weight, torch.zeros(32))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 64), (2, 0, 64)))
def test_zero_rows(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(64, device=device, requires_grad=True)
    b = torch.randn(64, device=device, requires_grad=True)
    y = liger.layer_norm(x, w, b)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    y, mean, rstd = liger.layer_norm_fwd(x.detach(), w.detach(), b.detach(), EPS)
    assert y.shape == shape and mean.shape == shape[:-1] and rstd.shape == shape[:-1]
    dx, dw, db = liger.layer_norm_bwd(y, x.detach(), w.detach(), b.detach(), mean, rstd, True, True)
    assert dx.shape == shape and torch.equal(dw, torch.zeros_like(w)) and torch.equal(db, torch.zeros_like(b))


def test_internal_ops_match_public_op():
    x, w, b = (torch.randn(3, 5, 40, dtype=torch.float16), torch.randn(40, dtype=torch.float16),
               torch.randn(40, dtype=torch.float16))
    dy = torch.randn_like(x)
    y, mean, rstd = liger.layer_norm_fwd(x, w, b, EPS)
    assert torch.equal(y, liger.layer_norm(x, w, b)) and mean.shape == rstd.shape == (3, 5)
    assert mean.dtype == rstd.dtype == torch.float32
    dx, dw, db = liger.layer_norm_bwd(dy, x, w, b, mean, rstd, True, True)
    _, autograd_dx, autograd_dw, autograd_db = fwd_bwd(x, w, b, dy)
    assert torch.equal(dx, autograd_dx) and torch.equal(dw, autograd_dw) and torch.equal(db, autograd_db)
    dx2, dw2, db2 = liger.layer_norm_bwd(dy, x, w, b, mean, rstd, False, False)
    assert torch.equal(dx2, dx) and dw2.shape == db2.shape == (0,) and dw2.dtype == db2.dtype == w.dtype


def test_gradients_only_for_parameters_that_need_them():
    x = torch.randn(4, 24, requires_grad=True)
    w, b = torch.randn(24, requires_grad=True), torch.randn(24)
    liger.layer_norm(x, w, b).sum().backward()
    assert w.grad is not None and b.grad is None
    w2 = torch.randn(24)
    b2 = torch.randn(24, requires_grad=True)
    liger.layer_norm(x.detach(), w2, b2).sum().backward()
    torch.testing.assert_close(b2.grad, torch.full((24,), 4.0))


# ---- autograd: gradcheck, double backward


def test_gradcheck():
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: liger.layer_norm(x, w, b, EPS), (x, w, b))
    assert torch.autograd.gradcheck(lambda x: liger.layer_norm(x, None, None, EPS), (x,))
    assert torch.autograd.gradcheck(lambda x, b: liger.layer_norm(x, None, b, EPS), (x, b))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(lambda x, w, b: liger.layer_norm(x, w, b, EPS), (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = torch.randn(4, 16, device=device, requires_grad=True)
    w = torch.randn(16, device=device, requires_grad=True)
    dx, dw = torch.autograd.grad(liger.layer_norm(x, w, None).square().sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((dx.sum() + dw.sum()), (x, w))


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for grad in (False, True):
            x, w, b = t(3, 5, 64, dtype=dtype, grad=grad), t(64, dtype=dtype, grad=grad), t(64, dtype=dtype, grad=grad)
            samples.append(("layer_norm", (x, w, b, EPS), grad))
            samples.append(("layer_norm", (t(7, 33, dtype=dtype, grad=grad), None, None, 1e-6), grad))
            samples.append(("layer_norm_fwd", (x, w, b, EPS), grad))
            y, mean, rstd = liger.layer_norm_fwd(x.detach(), w.detach(), b.detach(), EPS)
            dy = torch.randn_like(y).requires_grad_(grad)
            samples.append(("layer_norm_bwd", (dy, x, w, b, mean, rstd, True, True), grad))
            samples.append(("layer_norm_bwd", (dy, x, None, None, mean, rstd, False, False), grad))
    samples.append(("layer_norm", (t(2, 3, 40, grad=True).transpose(0, 1), t(40, grad=True), None, EPS), True))
    samples.append(("layer_norm", (t(64, dtype=torch.bfloat16, grad=True), t(64, grad=True), t(64, grad=True), EPS),
                    True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "layer_norm_bwd" and grad:
        tests = tests[:-1]  # differentiating layer_norm_bwd must raise (test_double_backward_raises)
    opcheck(getattr(liger, name).default, args, test_utils=tests)


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(hidden))
        self.bias = torch.nn.Parameter(torch.randn(hidden))

    def forward(self, x):
        return torch.ops.liger.layer_norm(x * 2.0, self.weight, self.bias, 1e-5) * 0.5


def liger_nodes(graph):
    return [n for n in graph.nodes if n.target is torch.ops.liger.layer_norm.default]


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Block(64)
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
    ep = torch.export.export(model, (torch.randn(2, 3, 64),), dynamic_shapes=dims)
    assert len(liger_nodes(ep.graph)) == 1
    path = tmp_path / "layer_norm.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for batch, seq in ((1, 1), (4, 17), (3, 1), (2, 3)):
            x = torch.randn(batch, seq, 64)
            expected = model(x)
            assert torch.equal(ep.module()(x), expected)
            assert torch.equal(loaded.module()(x), expected)


def test_torchscript_save_load_and_backward(tmp_path):
    model = Block(48)
    scripted = torch.jit.script(model)
    assert "liger::layer_norm" in str(scripted.graph)
    path = tmp_path / "layer_norm.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x, dy = torch.randn(3, 5, 48), torch.randn(3, 5, 48)
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
    def f(x, w, b):  # scaling by powers of 2 is exact: compiled and eager results must be bitwise equal
        return liger_aot.ops.layer_norm(x * 2.0, w, b, 1e-5) * 0.5

    w, b = torch.randn(64, device=device), torch.randn(64, device=device)
    cases = []
    for shape in ((2, 5, 64), (3, 9, 64)):
        x, dy = torch.randn(shape, device=device), torch.randn(shape, device=device)
        cases.append(((x, w, b), (0, 1, 2), dy))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- torch.nn.LayerNorm state dicts


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_loads_torch_layer_norm_state_dict(dtype):
    hidden = 96
    ref = torch.nn.LayerNorm(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = LigerLayerNorm(hidden, eps=1e-5).to(dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 7, hidden, dtype=dtype)
    dy = torch.randn_like(x)
    xg = x.clone().requires_grad_()
    y = ours(xg)
    y.backward(dy)
    w, b = ref.weight.detach(), ref.bias.detach()
    check_against_reference(x, w, b, y.detach(), dy, xg.grad, ours.weight.grad, ours.bias.grad)


# ---- bad inputs


@pytest.mark.parametrize("args,match", [
    ((torch.randint(0, 5, (4, 8)), None, None), r"x must be float32, bfloat16 or float16"),
    ((torch.tensor(1.0), None, None), r"x must have at least one dimension"),
    ((torch.randn(4, 0), None, None), r"x's last dimension must not be empty"),
    ((torch.randn(4, 8), torch.ones(7), None), r"weight must have shape \[8\]"),
    ((torch.randn(4, 8), None, torch.ones(9)), r"bias must have shape \[8\]"),
    ((torch.randn(4, 8), torch.ones(1, 8), None), r"weight must be 1-D"),
    ((torch.randn(4, 8), None, torch.ones(8, dtype=torch.int32)), r"bias must be a floating-point"),
    ((torch.randn(4, 8), torch.ones(8, device="meta"), None), r"weight is on meta but x is on cpu"),
], ids=["int_x", "0d_x", "empty_hidden", "weight_length", "bias_length", "weight_2d", "int_bias", "weight_device"])
def test_bad_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        liger.layer_norm(*args)
    with pytest.raises(RuntimeError, match=match):
        liger.layer_norm_fwd(*args, EPS)


def test_bad_backward_inputs():
    x, w = torch.randn(4, 8), torch.randn(8)
    y, mean, rstd = liger.layer_norm_fwd(x, w, None, EPS)
    with pytest.raises(RuntimeError, match=r"dy must have x's dtype"):
        liger.layer_norm_bwd(y.double(), x, w, None, mean, rstd, True, False)
    with pytest.raises(RuntimeError, match=r"dy must have x's shape"):
        liger.layer_norm_bwd(y[:3], x, w, None, mean, rstd, True, False)
    with pytest.raises(RuntimeError, match=r"mean must hold one value per row"):
        liger.layer_norm_bwd(y, x, w, None, mean[:3], rstd, True, False)
    with pytest.raises(RuntimeError, match=r"rstd must hold one value per row"):
        liger.layer_norm_bwd(y, x, w, None, mean, rstd[:3], True, False)


def test_module_rejects_bad_init_fn():
    with pytest.raises(ValueError, match="init_fn"):
        LigerLayerNorm(8, init_fn="randn")


# =====================================================================================================
# GPU tests: CUDA kernels against the float64 reference, layouts, graphs. Run with `pytest -m gpu`.

HIDDEN_SIZES = (1, 7, 127, 128, 256, 1000, 4096, 5120, 8192, 12288, 16384, 32768, 65536, 100000, 262144)
ROW_COUNTS = (0, 1, 3, 4099)
PARAM_KINDS = ("both", "weight", "none")


def params_for(kind, hidden, dtype):
    w = torch.randn(hidden, dtype=dtype, device="cuda") if kind in ("both", "weight") else None
    b = torch.randn(hidden, dtype=dtype, device="cuda") if kind == "both" else None
    return w, b


@gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, hidden, rows):
    if rows * hidden > 2**28:
        rows = 2**28 // hidden + 3  # keeps the float64 reference within memory; still many programs
    x = torch.randn(rows, hidden, dtype=dtype, device="cuda") * 2 + 0.5
    dy = torch.randn_like(x)
    for kind in PARAM_KINDS:
        w, b = params_for(kind, hidden, dtype)
        first = [t.clone() for t in fwd_bwd(x, w, b, dy) if t is not None]
        poison_freed_blocks(*[(x.numel(), dtype)] * 3, (rows, torch.float32), (rows, torch.float32),
                            (hidden, dtype), (2 * min(rows, 4096) * hidden, torch.float32), copies=2)
        y, dx, dw, db = fwd_bwd(x, w, b, dy)
        with torch.no_grad():
            y_inference = liger.layer_norm(x, w, b, EPS)  # the kernel without the mean/rstd stores
        for a, c in zip(first, [t for t in (y, dx, dw, db) if t is not None]):
            assert torch.equal(a, c), f"{kind}: not deterministic or reads a poisoned block"
        assert torch.equal(y_inference, y)
        check_against_reference(x, w, b, y, dy, dx, dw, db, what=f"{kind}: ")


@gpu
@pytest.mark.parametrize("hidden", (1000, 4096, 16384, 20000, 32768, 70000))  # 16384-32768: persistent
@pytest.mark.parametrize("x_dtype,w_dtype,b_dtype", [
    (torch.bfloat16, torch.float32, torch.float32), (torch.float16, torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16, torch.float32), (torch.float16, torch.bfloat16, torch.float16),
    (torch.float32, torch.bfloat16, torch.bfloat16), (torch.float32, torch.float64, torch.float64)],
    ids=lambda d: dtype_id(d))
def test_cuda_parameters_of_another_dtype(x_dtype, w_dtype, b_dtype, hidden):
    x = torch.randn(37, hidden, dtype=x_dtype, device="cuda")
    dy = torch.randn_like(x)
    w = torch.randn(hidden, dtype=w_dtype, device="cuda")
    b = torch.randn(hidden, dtype=b_dtype, device="cuda")
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db)


@gpu
@pytest.mark.parametrize("hidden", (4096, 16384, 32768, 100000))
def test_cuda_large_mean(hidden):
    # |mean| 1000 x std: the variance must be centred (one-pass E[x^2] - E[x]^2 loses every digit in fp32).
    x = (torch.randn(300, hidden, device="cuda") + 1000).to(torch.bfloat16)  # 300: persistent programs loop
    w, b = params_for("both", hidden, torch.bfloat16)
    dy = torch.randn_like(x)
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db)


def make_cuda_layout(layout, rows, hidden, dtype):
    randn = lambda *s: torch.randn(*s, dtype=dtype, device="cuda")  # noqa: E731
    return {
        "row_stride_aligned": lambda: randn(rows, hidden + 8)[:, :hidden],
        "row_stride_odd": lambda: randn(rows, hidden + 3)[:, :hidden],
        "transposed": lambda: randn(3, rows, hidden).transpose(0, 1),
        "storage_offset": lambda: randn(rows * hidden + 1)[1:].view(rows, hidden),
        "last_dim_strided": lambda: randn(rows, 2 * hidden)[:, ::2],
        "expanded_rows": lambda: randn(1, hidden).expand(rows, hidden),
        "expanded_batch": lambda: randn(rows, hidden).expand(2, rows, hidden),
    }[layout]()


@gpu
@pytest.mark.parametrize("hidden", (127, 4096, 20000, 70000))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=dtype_id)
@pytest.mark.parametrize("layout", ("row_stride_aligned", "row_stride_odd", "transposed", "storage_offset",
                                    "last_dim_strided", "expanded_rows", "expanded_batch"))
def test_cuda_strided_and_expanded_inputs(layout, dtype, hidden):
    x = make_cuda_layout(layout, 33, hidden, dtype)
    dy = make_cuda_layout(layout, 33, hidden, dtype) if not layout.startswith("expanded") else torch.randn_like(x)
    w, b = params_for("both", hidden, dtype)
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db, what=f"{layout}: ")


@gpu
def test_cuda_expanded_incoming_gradient():
    x = torch.randn(6, 9, 4096, dtype=torch.bfloat16, device="cuda")
    w, b = params_for("both", 4096, torch.bfloat16)
    xg, wg, bg = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    y = liger.layer_norm(xg, wg, bg)
    y.sum().backward()
    check_against_reference(x, w, b, y.detach(), torch.ones_like(x), xg.grad, wg.grad, bg.grad)


@gpu
@pytest.mark.parametrize("hidden", (4096, 32768, 100003))  # one block per row, persistent; odd: the unaligned loop
def test_cuda_more_than_2_31_elements(hidden):
    rows = 2**31 // hidden + 8
    x = torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda")
    assert x.numel() > 2**31
    w, b = params_for("both", hidden, torch.bfloat16)
    dy = torch.randn_like(x)
    y, dx, dw, db = fwd_bwd(x, w, b, dy)
    check_against_reference(x, w, b, y, dy, dx, dw, db)


@gpu
@pytest.mark.parametrize("hidden", (4096, 32768, 100000))
def test_cuda_graph_capture_and_replay(hidden):
    x = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w, b = (t.requires_grad_() for t in params_for("both", hidden, torch.bfloat16))
    dy = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16)

    def step():
        y = liger.layer_norm(x, w, b)
        return (y,) + torch.autograd.grad(y, (x, w, b), dy)

    def check(out, new_x, new_dy):
        y, dx, dw, db = out
        check_against_reference(new_x, w.detach(), b.detach(), y.detach(), new_dy, dx, dw, db)

    check_cuda_graph(step, (x, dy), lambda new_x, new_dy: fwd_bwd(new_x, w, b, new_dy), check=check)


@gpu
def test_cuda_bad_inputs():
    x = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="bias is on cpu but x is on cuda"):
        liger.layer_norm(x, None, torch.ones(8))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.layer_norm(x.double(), None, None)


FIRST_CALL_SCRIPT = """
import torch
import liger_aot
x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = torch.ones(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
b = torch.zeros(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
torch.ops.liger.layer_norm(x, w, b).backward(torch.randn_like(x))
torch.cuda.synchronize()
assert torch.isfinite(w.grad).all() and torch.isfinite(b.grad).all()
print("first call ok")
"""


@gpu
def test_cuda_first_call_in_a_fresh_process(tmp_path):
    # dw / db are added up by a Triton kernel, never at::sum: a fresh process must not need PyTorch's reductions.
    script = tmp_path / "first.py"
    script.write_text(FIRST_CALL_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "first call ok" in done.stdout, done.stdout + done.stderr


SANITIZER_SCRIPT = """
import torch
import liger_aot

liger = torch.ops.liger
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, hidden, layout in ((1, 1, "contiguous"), (3, 7, "contiguous"), (5, 127, "contiguous"),
                                 (0, 64, "contiguous"), (4, 4097, "offset"), (3, 16384, "padded"),
                                 (5, 8192, "contiguous"), (2, 70001, "contiguous"), (3, 32768, "contiguous"),
                                 (9, 4096, "padded"), (7, 300, "contiguous")):
        pad = 8 if layout == "padded" else 0
        base = torch.randn(rows * (hidden + pad) + 1, dtype=dtype, device="cuda")
        start = 1 if layout == "offset" else 0
        x = base[start:start + rows * (hidden + pad)].view(rows, hidden + pad)[:, :hidden]
        w = torch.randn(hidden, dtype=dtype, device="cuda")
        b = torch.randn(hidden, dtype=torch.float32, device="cuda")
        for weight, bias in ((w, b), (w, None), (None, b), (None, None)):
            xg = x.detach().requires_grad_()
            wg = None if weight is None else weight.detach().requires_grad_()
            bg = None if bias is None else bias.detach().requires_grad_()
            y = liger.layer_norm(xg, wg, bg, 1e-5)
            y.backward(torch.randn_like(y))
            torch.cuda.synchronize()
print("sanitizer script ok")
"""


@gpu
def test_cuda_compute_sanitizer_memcheck(tmp_path):
    run_memcheck(SANITIZER_SCRIPT, tmp_path)
