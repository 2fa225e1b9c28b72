"""Tests of torch.ops.liger.dyt (and its internal dyt_bwd).

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here may be at
most twice the error of the same formula computed by eager PyTorch at the same precision, plus FLOOR_ULPS
ulps of the result's magnitude. CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools

import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerDyT
from _shared import MaxError, check_compile_fullgraph, check_cuda_graph, dtype_id, opcheck_params

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 2  # the op and the baseline may each round a final result once the other way


# ---- float64 reference and eager baseline (independent of the op)


def reference(x, alpha, gamma, beta):
    """The definition (float64 here): gamma * tanh(alpha * x) + beta over the last dimension."""
    y = gamma * torch.tanh(alpha.reshape(()) * x)
    return y if beta is None else y + beta


def eager(x, alpha, gamma, beta):
    """The DyT paper's module at the inputs' precision (PyTorch's type promotion between x and parameters)."""
    y = gamma * torch.tanh(alpha * x)
    return y if beta is None else y + beta


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(x, alpha, gamma, beta, dy, y, grads, *, chunk_elems=1 << 26, what=""):
    """y, dx, dalpha, dgamma and dbeta (grads: the op's, None for beta without one) against float64 autograd.

    Rows are independent: the reference and the baseline run over chunks of rows (1 << 26 elements), so
    tensors of more than 2^31 elements fit in memory; parameter gradients are summed over the chunks.
    """
    hidden = x.shape[-1]
    dx, dalpha, dgamma, dbeta = grads
    check_output(y, x)
    check_output(dx, x)
    params = [alpha, gamma] + ([beta] if beta is not None else [])
    xs, ys, dys, dxs = (t.reshape(-1, hidden) for t in (x, y, dy, dx))
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    sums64 = [torch.zeros(p.shape, dtype=torch.float64, device=x.device) for p in params]
    sums_eager = [torch.zeros(p.shape, dtype=torch.float64, device=x.device) for p in params]
    terms = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in params]  # sums of |terms|
    step = max(1, chunk_elems // max(hidden, 1))
    for start in range(0, xs.shape[0], step):
        rows = slice(start, start + step)
        x64 = xs[rows].detach().double().requires_grad_()
        p64 = [p.detach().double().requires_grad_() for p in params]
        y64 = reference(x64, p64[0], p64[1], p64[2] if beta is not None else None)
        xe = xs[rows].detach().clone().requires_grad_()
        pe = [p.detach().clone().requires_grad_() for p in params]
        ye = eager(xe, pe[0], pe[1], pe[2] if beta is not None else None)
        err_y.add(ys[rows], ye, y64, y64)
        dy64 = dys[rows].double()
        g64 = torch.autograd.grad(y64, [x64] + p64, dy64)
        ge = torch.autograd.grad(ye, [xe] + pe, dys[rows])
        with torch.no_grad():
            t64 = torch.tanh(p64[0].reshape(()) * x64)
            # dx = dy gamma alpha (1 - t^2): its magnitude is that of dy gamma alpha
            err_dx.add(dxs[rows], ge[0], g64[0], dy64 * p64[1] * p64[0].reshape(()))
            # parameter gradients are sums, whose rounding error grows with the sum of their terms'
            # magnitudes (a float64 sum in another order differs by that much times float64's eps)
            chunk_terms = [(dy64 * p64[1] * x64 * (1 - t64 * t64)).abs().sum(), (dy64 * t64).abs().sum(0),
                           dy64.abs().sum(0)]
            for i in range(len(params)):
                sums64[i] += g64[1 + i]
                sums_eager[i] += ge[1 + i].double()
                terms[i] = terms[i] + chunk_terms[i]
    err_y.check(what)
    err_dx.check(what)
    for i, (name, got) in enumerate(zip(("dalpha", "dgamma", "dbeta"), (dalpha, dgamma, dbeta))):
        if i >= len(params):
            assert got is None
            continue
        check_output(got, params[i])
        err = Error(name, params[i].dtype)
        err.add(got, sums_eager[i].to(params[i].dtype), sums64[i], torch.maximum(sums64[i].abs(), terms[i]))
        err.check(what)


def fwd_bwd(x, alpha, gamma, beta, dy):
    """The op through its autograd path: (y, (dx, dalpha, dgamma, dbeta or None))."""
    leaves = [t.detach().requires_grad_() for t in (x, alpha, gamma)]
    b = None if beta is None else beta.detach().requires_grad_()
    y = liger.dyt(*leaves, b)
    grads = torch.autograd.grad(y, leaves + ([b] if b is not None else []), dy)
    return y.detach(), tuple(grads) + ((None,) if b is None else ())


def make_params(hidden, dtype, device="cpu", beta=True, alpha_value=0.7):
    alpha = torch.full((1,), alpha_value, dtype=dtype, device=device)
    gamma = 1 + 0.5 * torch.randn(hidden, dtype=dtype, device=device)
    return alpha, gamma, (0.5 * torch.randn(hidden, dtype=dtype, device=device) if beta else None)


# ---- CPU numerics


def make_x(layout, dtype, device="cpu"):
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device=device) * 2

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


@pytest.mark.parametrize("beta", (True, False), ids=("beta", "no_beta"))
@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, layout, beta):
    x = make_x(layout, dtype)
    alpha, gamma, b = make_params(x.shape[-1], dtype, beta=beta)
    dy = torch.randn(x.shape, dtype=dtype)
    y, grads = fwd_bwd(x, alpha, gamma, b, dy)
    check_against_reference(x, alpha, gamma, b, dy, y, grads)
    assert torch.equal(liger.dyt(x, alpha, gamma, b), y)  # no-grad path: same values


@pytest.mark.parametrize("x_dtype,p_dtype", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                             (torch.float16, torch.bfloat16), (torch.float32, torch.bfloat16)],
                         ids=lambda d: dtype_id(d))
def test_parameters_of_another_dtype(x_dtype, p_dtype):
    x = torch.randn(6, 50, dtype=x_dtype) * 2
    alpha, gamma, beta = make_params(50, p_dtype)
    dy = torch.randn_like(x)
    y, grads = fwd_bwd(x, alpha, gamma, beta, dy)
    assert [g.dtype for g in grads[1:]] == [p_dtype] * 3
    # The op computes in fp32 and returns x's dtype, where eager promotes: compare with the 2x rule at x's dtype.
    err = Error("y", x_dtype)
    y64 = reference(x.double(), alpha.double(), gamma.double(), beta.double())
    err.add(y, eager(x, alpha, gamma, beta).to(x_dtype), y64, y64)
    err.check()
    assert y.dtype == x_dtype


def test_alpha_of_any_one_element_shape():
    x = torch.randn(3, 8)
    _, gamma, beta = make_params(8, torch.float32)
    for shape in ((), (1,), (1, 1)):
        alpha = torch.full(shape, 0.3, requires_grad=True)
        y = liger.dyt(x, alpha, gamma, beta)
        y.sum().backward()
        assert alpha.grad.shape == shape
        assert torch.allclose(y, reference(x, alpha.detach(), gamma, beta))


def test_python_wrappers_and_module():
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    alpha, gamma, beta = make_params(32, torch.bfloat16)
    assert torch.equal(liger_aot.ops.dyt(x, alpha, gamma, beta), liger.dyt(x, alpha, gamma, beta))
    assert torch.equal(liger_aot.ops.dyt(x, alpha, gamma), liger.dyt(x, alpha, gamma, None))
    m = LigerDyT(32, init_alpha=0.25)
    assert [n for n, _ in m.named_parameters()] == ["alpha", "gamma", "beta"]
    assert m.alpha.shape == (1,) and m.alpha.item() == 0.25
    assert torch.equal(m.gamma, torch.ones(32)) and torch.equal(m.beta, torch.zeros(32))
    x = x.float()
    assert torch.equal(m(x), liger.dyt(x, m.alpha, m.gamma, m.beta))
    m = LigerDyT(32, beta=False)
    assert m.beta is None and [n for n, _ in m.named_parameters()] == ["alpha", "gamma"]
    assert torch.equal(m(x), liger.dyt(x, m.alpha, m.gamma, None))
    # the same state dict keys as Liger-Kernel's LigerDyT
    assert list(LigerDyT(8).state_dict()) == ["alpha", "gamma", "beta"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 64), (2, 0, 64)))
def test_zero_rows(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    alpha, gamma, beta = (t.requires_grad_() for t in make_params(64, torch.float32, device))
    y = liger.dyt(x, alpha, gamma, beta)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    for p in (alpha, gamma, beta):
        assert torch.equal(p.grad, torch.zeros_like(p))
    dx, da, dg, db = liger.dyt_bwd(y.detach(), x.detach(), alpha.detach(), gamma.detach(), None, False)
    assert dx.shape == shape and da.shape == (0,) and dg.shape == (0,) and db.shape == (0,)


def test_internal_op_matches_autograd():
    x = torch.randn(3, 5, 40, dtype=torch.float16)
    alpha, gamma, beta = make_params(40, torch.float16)
    dy = torch.randn_like(x)
    _, grads = fwd_bwd(x, alpha, gamma, beta, dy)
    out = liger.dyt_bwd(dy, x, alpha, gamma, beta, True)
    for a, b in zip(grads, out):
        assert torch.equal(a, b)
    dx, da, dg, db = liger.dyt_bwd(dy, x, alpha, gamma, beta, False)
    assert torch.equal(dx, grads[0]) and da.numel() == dg.numel() == db.numel() == 0


def test_only_x_requires_grad():
    x = torch.randn(4, 8, requires_grad=True)
    alpha, gamma, beta = make_params(8, torch.float32)
    liger.dyt(x, alpha, gamma, beta).sum().backward()
    assert x.grad is not None


# ---- autograd: gradcheck, double backward


@pytest.mark.parametrize("beta", (True, False), ids=("beta", "no_beta"))
def test_gradcheck(beta):
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() for p in make_params(7, torch.float64, beta=beta) if p is not None]
    fn = (lambda x, a, g, b: liger.dyt(x, a, g, b)) if beta else (lambda x, a, g: liger.dyt(x, a, g, None))
    assert torch.autograd.gradcheck(fn, (x, *params))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(fn, (x, *params))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = torch.randn(4, 16, device=device, requires_grad=True)
    alpha, gamma, beta = (t.requires_grad_() for t in make_params(16, torch.float32, device))
    grads = torch.autograd.grad(liger.dyt(x, alpha, gamma, beta).square().sum(), (x, gamma), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(grads[0].sum() + grads[1].sum(), (x, gamma))


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype, p_dtype in ((torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                           (torch.float16, torch.float32)):
        for grad in (False, True):
            x = t(3, 5, 64, dtype=dtype, grad=grad)
            a, g, b = t(1, dtype=p_dtype, grad=grad), t(64, dtype=p_dtype, grad=grad), t(64, dtype=p_dtype, grad=grad)
            samples.append(("dyt", (x, a, g, b), grad))
            samples.append(("dyt", (t(7, 33, dtype=dtype, grad=grad), a, t(33, dtype=p_dtype, grad=grad), None), grad))
            dy = t(3, 5, 64, dtype=dtype, grad=grad)
            samples.append(("dyt_bwd", (dy, x, a, g, b, True), grad))
            samples.append(("dyt_bwd", (dy, x, a, g, None, False), grad))
    samples.append(("dyt", (t(2, 3, 40, grad=True).transpose(0, 1), t(1, grad=True), t(40, grad=True), None), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "dyt_bwd" and grad:
        tests = tests[:-1]  # differentiating dyt_bwd must raise: test_dyt_bwd_is_not_differentiable
    opcheck(getattr(liger, name).default, args, test_utils=tests)


def test_dyt_bwd_is_not_differentiable():
    x = torch.randn(3, 16)
    alpha, gamma, beta = make_params(16, torch.float32)
    dy = torch.randn_like(x, requires_grad=True)
    dx = liger.dyt_bwd(dy, x, alpha, gamma, beta, True)[0]
    with pytest.raises(RuntimeError, match="second derivatives"):
        dx.sum().backward()


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def __init__(self, hidden, beta=True):
        super().__init__()
        self.norm = LigerDyT(hidden, beta=beta)
        with torch.no_grad():
            self.norm.gamma.normal_()
            if beta:
                self.norm.beta.normal_()

    def forward(self, x):
        return self.norm(x * 2.0) * 0.5


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Block(64)
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
    ep = torch.export.export(model, (torch.randn(2, 3, 64),), dynamic_shapes=dims)
    path = tmp_path / "dyt.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    for graph in (ep.graph, loaded.graph):
        assert len([n for n in graph.nodes if n.target is torch.ops.liger.dyt.default]) == 1
    with torch.no_grad():
        for b, s in ((1, 1), (4, 17), (3, 1)):
            x = torch.randn(b, s, 64)
            assert torch.equal(ep.module()(x), model(x))
            assert torch.equal(loaded.module()(x), model(x))


@pytest.mark.parametrize("beta", (True, False), ids=("beta", "no_beta"))
def test_torchscript_save_load_and_backward(tmp_path, beta):
    model = Block(48, beta=beta)
    scripted = torch.jit.script(model)
    assert "liger::dyt" in str(scripted.inlined_graph)
    scripted.save(str(tmp_path / "dyt.pt"))
    loaded = torch.jit.load(str(tmp_path / "dyt.pt"))
    x, dy = torch.randn(3, 5, 48), torch.randn(3, 5, 48)
    outputs = []
    for m in (model, loaded):
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(dy)
        params = dict(m.named_parameters())
        outputs.append((y.detach(), xg.grad, params["norm.alpha"].grad, params["norm.gamma"].grad))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", [
    pytest.param("cpu", "aot_eager", False), pytest.param("cpu", "aot_eager", True),
    pytest.param("cpu", "inductor", None, marks=pytest.mark.slow), pytest.param("cuda", "inductor", None, marks=gpu)])
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, a, g, b):  # scaling by powers of 2 is exact: compiled and eager results must be bitwise equal
        return torch.ops.liger.dyt(x * 2.0, a, g, b) * 0.5

    alpha, gamma, beta = make_params(64, torch.float32, device)
    cases = []
    for shape in ((2, 5, 64), (3, 9, 64)):
        x, dy = torch.randn(shape, device=device), torch.randn(shape, device=device)
        cases.append(((x, alpha, gamma, beta), (0, 1, 2, 3), dy))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- bad inputs


def _args(**over):
    args = {"x": torch.randn(4, 8), "alpha": torch.ones(1), "gamma": torch.ones(8), "beta": torch.zeros(8)}
    args.update(over)
    return args["x"], args["alpha"], args["gamma"], args["beta"]


@pytest.mark.parametrize("over,match", [
    ({"x": torch.ones(4, 8, dtype=torch.int32)}, "dyt: x must be float32, bfloat16 or float16"),
    ({"x": torch.tensor(1.0)}, "x must have at least one dimension"),
    ({"alpha": torch.ones(2)}, r"alpha must hold one value, got shape \[2\]"),
    ({"alpha": torch.ones(1, dtype=torch.int64)}, "alpha must be a floating-point tensor"),
    ({"gamma": torch.ones(7)}, r"gamma must have shape \[8\] to match x's last dimension, got \[7\]"),
    ({"gamma": torch.ones(1, 8)}, "gamma must be 1-D"),
    ({"beta": torch.ones(9)}, r"beta must have shape \[8\] to match x's last dimension, got \[9\]"),
    ({"beta": torch.ones(8, device="meta")}, "beta is on meta but x is on cpu"),
], ids=["int_x", "0d_x", "alpha_numel", "int_alpha", "gamma_length", "gamma_2d", "beta_length", "beta_device"])
def test_bad_inputs(over, match):
    with pytest.raises(RuntimeError, match=match):
        liger.dyt(*_args(**over))


def test_bad_backward_inputs():
    x, alpha, gamma, beta = _args()
    with pytest.raises(RuntimeError, match="dy must have x's dtype"):
        liger.dyt_bwd(x.double(), x, alpha, gamma, beta, True)
    with pytest.raises(RuntimeError, match="dy must have x's shape"):
        liger.dyt_bwd(x[:3], x, alpha, gamma, beta, True)


# =====================================================================================================
# GPU tests: `pytest -m gpu`.

HIDDEN_SIZES = (1, 7, 255, 256, 257, 1000, 1024, 4096, 5120, 16384, 100000, 262144)
ROW_COUNTS = (0, 1, 3, 4099)


@gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, hidden, rows):
    x = torch.randn(rows, hidden, dtype=dtype, device="cuda") * 2
    dy = torch.randn_like(x)
    for beta in (True, False):
        alpha, gamma, b = make_params(hidden, dtype, "cuda", beta=beta)
        y, grads = fwd_bwd(x, alpha, gamma, b, dy)
        first = [t.clone() for t in (y,) + grads if t is not None]
        blocks = [torch.full((n,), float("nan"), dtype=dtype, device="cuda")
                  for n in (x.numel(), hidden, 1, 512 * hidden) for _ in range(3)]
        del blocks  # outputs and partial sums allocated next start as NaN where a kernel fails to write
        y, grads = fwd_bwd(x, alpha, gamma, b, dy)
        for a, c in zip(first, [t for t in (y,) + grads if t is not None]):
            assert torch.equal(a, c), "not deterministic or reads a poisoned block"
        with torch.no_grad():
            assert torch.equal(liger.dyt(x, alpha, gamma, b), y)
        check_against_reference(x, alpha, gamma, b, dy, y, grads, what=f"beta={beta}: ")


@gpu
@pytest.mark.parametrize("hidden", (1000, 4096, 70000))
@pytest.mark.parametrize("x_dtype,p_dtype", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                             (torch.float16, torch.bfloat16), (torch.float32, torch.bfloat16)],
                         ids=lambda d: dtype_id(d))
def test_cuda_parameters_of_another_dtype(x_dtype, p_dtype, hidden):
    x = torch.randn(37, hidden, dtype=x_dtype, device="cuda") * 2
    alpha, gamma, beta = make_params(hidden, p_dtype, "cuda")
    dy = torch.randn_like(x)
    y, grads = fwd_bwd(x, alpha, gamma, beta, dy)
    assert [g.dtype for g in grads[1:]] == [p_dtype] * 3 and y.dtype == x_dtype
    # eager promotes y to fp32 here: it is the baseline for the parameter gradients and dx (autograd
    # returns each in its input's dtype); y is held to two ulps of x's dtype around float64
    check_against_reference(x, alpha, gamma, beta, dy, y, grads)


def make_cuda_layout(layout, rows, hidden, dtype):
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device="cuda") * 2

    return {
        "row_stride_aligned": lambda: randn(rows, hidden + 8)[:, :hidden],
        "row_stride_odd": lambda: randn(rows, hidden + 3)[:, :hidden],
        "transposed": lambda: randn(3, rows, hidden).transpose(0, 1),
        "storage_offset": lambda: randn(rows * hidden + 1)[1:].view(rows, hidden),  # pointer not 16-byte aligned
        "last_dim_strided": lambda: randn(rows, 2 * hidden)[:, ::2],
        "expanded_rows": lambda: randn(1, hidden).expand(rows, hidden),
    }[layout]()


@gpu
@pytest.mark.parametrize("hidden", (127, 4096, 70000))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=dtype_id)
@pytest.mark.parametrize("layout", ("row_stride_aligned", "row_stride_odd", "transposed", "storage_offset",
                                    "last_dim_strided", "expanded_rows"))
def test_cuda_strided_and_expanded_inputs(layout, dtype, hidden):
    x = make_cuda_layout(layout, 33, hidden, dtype)
    dy = make_cuda_layout(layout, 33, hidden, dtype) if layout != "expanded_rows" else torch.randn_like(x)
    alpha, gamma, beta = make_params(hidden, dtype, "cuda")
    y, grads = fwd_bwd(x, alpha, gamma, beta, dy)
    check_against_reference(x, alpha, gamma, beta, dy, y, grads, what=f"{layout}: ")
    # unaligned parameters: views at an odd offset
    gamma_u, beta_u = (torch.randn(hidden + 1, dtype=dtype, device="cuda")[1:] for _ in range(2))
    y, grads = fwd_bwd(x, alpha, gamma_u, beta_u, dy)
    check_against_reference(x, alpha, gamma_u, beta_u, dy, y, grads, what=f"{layout}, unaligned params: ")


@gpu
@pytest.mark.parametrize("hidden", (4096, 100003))
def test_cuda_more_than_2_31_elements(hidden):
    rows = 2**31 // hidden + 8
    x = torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda")
    assert x.numel() > 2**31
    alpha, gamma, beta = make_params(hidden, torch.bfloat16, "cuda")
    dy = torch.randn_like(x)
    y, grads = fwd_bwd(x, alpha, gamma, beta, dy)
    check_against_reference(x, alpha, gamma, beta, dy, y, grads)


@gpu
def test_cuda_graph_capture_and_replay():
    x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    params = [p.requires_grad_() for p in make_params(4096, torch.bfloat16, "cuda")]
    dy = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)

    def step():
        y = liger.dyt(x, *params)
        return (y,) + torch.autograd.grad(y, [x] + params, dy)

    def eager(new_x, new_dy):
        y, grads = fwd_bwd(new_x, *params, new_dy)
        return (y,) + grads

    check_cuda_graph(step, (x, dy), eager)


@gpu
def test_cuda_bad_inputs():
    x = torch.randn(4, 8, device="cuda")
    alpha, gamma, beta = make_params(8, torch.float32, "cuda")
    with pytest.raises(RuntimeError, match="gamma is on cpu but x is on cuda"):
        liger.dyt(x, alpha, gamma.cpu(), beta)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.dyt(x.double(), alpha, gamma, beta)
