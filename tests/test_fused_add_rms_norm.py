"""Tests of torch.ops.liger.fused_add_rms_norm (and its internal fused_add_rms_norm_fwd / _bwd).

The op returns (rms_norm(x + residual), x + residual). The sum must equal eager PyTorch's x + residual
bitwise; y and the gradients follow FlashAttention's rule against a float64 reference written here: the
op's error may be at most twice the error of the same formula in eager PyTorch at the same precision
(x + residual, then rms_norm in the casting mode), plus FLOOR_ULPS ulps of the result's magnitude.
CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools

import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerFusedAddRMSNorm
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     run_memcheck)

liger = torch.ops.liger
gpu = pytest.mark.gpu

EPS = 1e-6
MODES = ("llama", "gemma", "none")
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 2


# ---- float64 reference and eager baseline (independent of the op)


def reference(x, r, w, eps, offset):
    """The definition in float64: s = x + r, y = s * rsqrt(mean(s^2) + eps) * (offset + w)."""
    s = x + r
    y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    return (y if w is None else y * (offset + w)), s


def eager(x, r, w, eps, offset, mode):
    """x + r in x's dtype, then the RMSNorm formula as eager PyTorch computes it in each casting mode."""
    s = x + r
    dt = s.dtype
    if mode == "none":
        y = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
        return (y if w is None else (y * (offset + w)).to(dt)), s
    h = s.to(torch.float64 if dt == torch.float64 else torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if mode == "llama":
        h = h.to(dt)
        return (h if w is None else ((offset + w) * h).to(dt)), s
    return (h if w is None else h * (offset + w.to(h.dtype))).to(dt), s


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(x, r, w, offset, mode, y, s, dy, ds_out, dx, dr, dw, *, eps=EPS, chunk_elems=1 << 26,
                            what=""):
    """Asserts s == x + r bitwise, dx == dr, and that y, dx and dw obey the 2x rule (dy or ds_out may be None)."""
    hidden = x.shape[-1]
    check_output(y, x)
    check_output(s, x)
    check_output(dx, x)
    assert torch.equal(s, x + r), "s differs from eager x + residual"
    assert torch.equal(dx, dr), "x and residual must get the same gradient"
    xs, rs, ys, dxs = (t.reshape(-1, hidden) for t in (x, r, y, dx))
    dys = None if dy is None else dy.reshape(-1, hidden)
    dsos = None if ds_out is None else ds_out.reshape(-1, hidden)
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    dw64, dw_eager = (torch.zeros(hidden, dtype=torch.float64, device=x.device) for _ in range(2))
    dw_terms = torch.zeros((), dtype=torch.float64, device=x.device)
    dw_abs = torch.zeros(hidden, dtype=torch.float64, device=x.device)  # per column: the sum of |terms|
    step = max(1, chunk_elems // hidden)
    for start in range(0, xs.shape[0], step):
        rows = slice(start, start + step)
        x64, r64 = (t[rows].detach().double().requires_grad_() for t in (xs, rs))
        w64 = None if w is None else w.detach().double().requires_grad_()
        y64, s64 = reference(x64, r64, w64, eps, offset)
        xe, re = (t[rows].detach().requires_grad_() for t in (xs, rs))
        we = None if w is None else w.detach().requires_grad_()
        ye, se = eager(xe, re, we, eps, offset, mode)
        err_y.add(ys[rows], ye, y64, y64)
        outs64, outs_e, grads64, grads_e = [], [], [], []
        if dys is not None:
            outs64.append(y64), outs_e.append(ye), grads64.append(dys[rows].double()), grads_e.append(dys[rows])
        if dsos is not None:
            outs64.append(s64), outs_e.append(se), grads64.append(dsos[rows].double()), grads_e.append(dsos[rows])
        wanted64 = [x64] + ([w64] if w is not None and dys is not None else [])
        wanted_e = [xe] + ([we] if w is not None and dys is not None else [])
        g64 = torch.autograd.grad(outs64, wanted64, grads64)
        ge = torch.autograd.grad(outs_e, wanted_e, grads_e)
        with torch.no_grad():
            scale = torch.zeros_like(x64)
            if dys is not None:
                rstd = torch.rsqrt(s64.pow(2).mean(-1, keepdim=True) + eps)
                dn = dys[rows].double() if w is None else dys[rows].double() * (offset + w64)
                scale = rstd * dn
            if dsos is not None:
                scale = scale.abs() + dsos[rows].double().abs()
            err_dx.add(dxs[rows], ge[0], g64[0], scale)
            if len(wanted64) > 1:
                dw64 += g64[1]
                dw_eager += ge[1].double()
                terms = (dys[rows].double() * s64 * rstd).abs()
                dw_terms = torch.maximum(dw_terms, terms.max())
                dw_abs += terms.sum(0)
    err_y.check(what)
    err_dx.check(what)
    if w is None or dw is None and not w.requires_grad:  # no weight, or a frozen one
        return
    if dy is None:
        assert dw is None or not dw.any()
        return
    check_output(dw, w)
    err_dw = Error("dw", w.dtype)
    err_dw.add(dw, dw_eager.to(w.dtype), dw64, torch.maximum(dw64.abs().max(), dw_terms))
    # dW sums over every row in fp32 in the kernels' order (per-program partials, then a column sum): allow
    # 2 fp32 ulps of the sum of the terms' magnitudes on top (eager's pairwise sum can be much closer).
    err_dw.slack = 2 * torch.finfo(torch.float32).eps * dw_abs.max().item()
    err_dw.check(what)


def fwd_bwd(x, r, w, dy, ds_out, offset, mode):
    """The op through autograd: (y, s, dx, dresidual, dw); dy / ds_out None leave that output unused."""
    xg, rg = x.detach().requires_grad_(), r.detach().requires_grad_()
    wg = None if w is None else w.detach().requires_grad_()
    y, s = liger.fused_add_rms_norm(xg, rg, wg, EPS, offset, mode)
    outs = [o for o, g in ((y, dy), (s, ds_out)) if g is not None]
    grads = [g for g in (dy, ds_out) if g is not None]
    leaves = [xg, rg] + ([wg] if wg is not None else [])
    got = torch.autograd.grad(outs, leaves, grads, allow_unused=True)
    dw = got[2] if wg is not None else None
    return y.detach(), s.detach(), got[0], got[1], dw


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
        "expanded_rows": lambda: randn(1, 64).expand(5, 64),
    }[layout]()


CPU_LAYOUTS = ("1d", "hidden1", "odd_hidden", "3d", "transposed", "row_sliced", "last_dim_strided", "expanded_rows")


@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_matches_float64_reference(mode, dtype, layout):
    x = make_x(layout, dtype)
    r = torch.randn(x.shape, dtype=dtype)
    w = torch.randn(x.shape[-1], dtype=dtype)
    dy, ds_out = torch.randn(x.shape, dtype=dtype), torch.randn(x.shape, dtype=dtype)
    y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, 0.0, mode)
    check_against_reference(x, r, w, 0.0, mode, y, s, dy, ds_out, dx, dr, dw)
    y2, s2 = liger.fused_add_rms_norm(x, r, w, EPS, 0.0, mode)  # no-grad path: same values
    assert torch.equal(y2, y) and torch.equal(s2, s)


def other_float_dtype(dtype):
    return torch.bfloat16 if dtype in (torch.float32, torch.float64) else torch.float32


@pytest.mark.parametrize("weight", ("none", "offset1", "other_dtype", "other_dtype_offset1"))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_weight_variants(mode, dtype, weight):
    x, r = torch.randn(6, 50, dtype=dtype), torch.randn(6, 50, dtype=dtype)
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    w_dtype = other_float_dtype(dtype) if weight.startswith("other_dtype") else dtype
    w = None if weight == "none" else torch.randn(50, dtype=w_dtype)
    offset = 1.0 if weight.endswith("offset1") else 0.0
    y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, offset, mode)
    check_against_reference(x, r, w, offset, mode, y, s, dy, ds_out, dx, dr, dw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("used", ("y_only", "s_only"))
def test_one_output_used(device, used):
    x, r = (torch.randn(5, 96, dtype=torch.bfloat16, device=device) for _ in range(2))
    w = torch.randn(96, dtype=torch.bfloat16, device=device)
    g = torch.randn_like(x)
    dy, ds_out = (g, None) if used == "y_only" else (None, g)
    y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, 0.0, "llama")
    check_against_reference(x, r, w, 0.0, "llama", y, s, dy, ds_out, dx, dr, dw)
    if used == "s_only":
        assert torch.equal(dx, g) and dw is None


def test_matches_rms_norm_of_the_sum():
    x, r = torch.randn(3, 5, 40, dtype=torch.float16), torch.randn(3, 5, 40, dtype=torch.float16)
    w = torch.randn(40, dtype=torch.float16)
    for mode in MODES:
        y, s = liger.fused_add_rms_norm(x, r, w, EPS, 1.0, mode)
        assert torch.equal(s, x + r) and torch.equal(y, liger.rms_norm(x + r, w, EPS, 1.0, mode))


def test_python_wrappers_call_the_op():
    x, r = torch.randn(4, 32, dtype=torch.bfloat16), torch.randn(4, 32, dtype=torch.bfloat16)
    w = torch.randn(32, dtype=torch.bfloat16)
    for a, b in zip(liger_aot.ops.fused_add_rms_norm(x, r, w), liger.fused_add_rms_norm(x, r, w, 1e-6, 0.0, "llama")):
        assert torch.equal(a, b)
    m = LigerFusedAddRMSNorm(32, eps=1e-5, offset=1.0, casting_mode="gemma", init_fn="zeros", dtype=torch.bfloat16)
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    for a, b in zip(m(x, r), liger.fused_add_rms_norm(x, r, torch.zeros(32, dtype=torch.bfloat16), 1e-5, 1.0, "gemma")):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 64), (2, 0, 64)))
def test_zero_rows(device, shape):
    x, r = (torch.randn(shape, device=device, requires_grad=True) for _ in range(2))
    w = torch.randn(64, device=device, requires_grad=True)
    y, s = liger.fused_add_rms_norm(x, r, w)
    (y.sum() + s.sum()).backward()
    assert y.shape == s.shape == shape and x.grad.shape == r.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_internal_ops_match_public_op():
    x, r = torch.randn(3, 5, 40, dtype=torch.float16), torch.randn(3, 5, 40, dtype=torch.float16)
    w = torch.randn(40, dtype=torch.float16)
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    y, s, rstd = liger.fused_add_rms_norm_fwd(x, r, w, EPS, 0.0, "llama")
    y2, s2 = liger.fused_add_rms_norm(x, r, w)
    assert torch.equal(y, y2) and torch.equal(s, s2) and rstd.shape == (3, 5) and rstd.dtype == torch.float32
    ds, dw = liger.fused_add_rms_norm_bwd(dy, ds_out, s, w, rstd, 0.0, "llama", True)
    _, _, dx, _, autograd_dw = fwd_bwd(x, r, w, dy, ds_out, 0.0, "llama")
    assert torch.equal(ds, dx) and torch.equal(dw, autograd_dw)
    ds2, dw2 = liger.fused_add_rms_norm_bwd(dy, None, s, w, rstd, 0.0, "llama", False)
    dx_rms, _ = liger.rms_norm_bwd(dy, s, w, rstd, 0.0, "llama", False)
    assert torch.equal(ds2, dx_rms) and dw2.shape == (0,) and dw2.dtype == w.dtype


# ---- autograd: gradcheck, double backward


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", (0.0, 1.0))
def test_gradcheck(mode, offset):
    x, r = (torch.randn(3, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, r, w: liger.fused_add_rms_norm(x, r, w, EPS, offset, mode), (x, r, w))
    assert torch.autograd.gradcheck(lambda x, r: liger.fused_add_rms_norm(x, r, None, EPS, offset, mode), (x, r))
    assert torch.autograd.gradcheck(lambda x, r, w: liger.fused_add_rms_norm(x, r, w, EPS, offset, mode)[0], (x, r, w))
    assert torch.autograd.gradcheck(lambda x, r, w: liger.fused_add_rms_norm(x, r, w, EPS, offset, mode)[1], (x, r, w))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(lambda x, r, w: liger.fused_add_rms_norm(x, r, w, EPS, offset, mode), (x, r, w))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x, r = (torch.randn(4, 16, device=device, requires_grad=True) for _ in range(2))
    w = torch.randn(16, device=device, requires_grad=True)
    y, s = liger.fused_add_rms_norm(x, r, w)
    dx, dw = torch.autograd.grad(y.square().sum() + s.sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((dx.sum() + dw.sum()), (x, w))


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for mode, dtype, offset in (("llama", torch.float32, 0.0), ("gemma", torch.bfloat16, 1.0),
                                ("none", torch.float16, 0.0)):
        for grad in (False, True):
            x, r = t(3, 5, 64, dtype=dtype, grad=grad), t(3, 5, 64, dtype=dtype, grad=grad)
            w = t(64, dtype=dtype, grad=grad)
            samples.append(("fused_add_rms_norm", (x, r, w, EPS, offset, mode), grad))
            samples.append(("fused_add_rms_norm", (t(7, 33, dtype=dtype, grad=grad), t(7, 33, dtype=dtype, grad=grad),
                                                   None, 1e-5, offset, mode), grad))
            samples.append(("fused_add_rms_norm_fwd", (x, r, w, EPS, offset, mode), grad))
            _, s, rstd = liger.fused_add_rms_norm_fwd(x.detach(), r.detach(), w.detach(), EPS, offset, mode)
            dy, ds_out = (torch.randn_like(s).requires_grad_(grad) for _ in range(2))
            samples.append(("fused_add_rms_norm_bwd", (dy, ds_out, s, w, rstd, offset, mode, True), grad))
            samples.append(("fused_add_rms_norm_bwd", (dy, None, s, None, rstd, offset, mode, False), grad))
            samples.append(("fused_add_rms_norm_bwd", (None, ds_out, s, w, rstd, offset, mode, True), grad))
    samples.append(("fused_add_rms_norm", (t(2, 3, 40, grad=True).transpose(0, 1), t(3, 2, 40, grad=True),
                                           t(40, grad=True)), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "fused_add_rms_norm_bwd" and grad:
        tests = tests[:-1]  # differentiating the backward must raise (test_double_backward_raises)
    opcheck(getattr(liger, name).default, args, test_utils=tests)


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def __init__(self, hidden, offset=0.0, mode="llama"):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(hidden))
        self.offset, self.mode = offset, mode

    def forward(self, x, r):
        y, s = torch.ops.liger.fused_add_rms_norm(x * 2.0, r * 2.0, self.weight, 1e-6, self.offset, self.mode)
        return y * 0.5, s * 0.5


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Block(64, offset=1.0, mode="gemma")
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=1, max=8192)
    dims = {"x": {0: batch, 1: seq}, "r": {0: batch, 1: seq}}
    ep = torch.export.export(model, (torch.randn(2, 3, 64), torch.randn(2, 3, 64)), dynamic_shapes=dims)
    assert len([n for n in ep.graph.nodes if n.target is torch.ops.liger.fused_add_rms_norm.default]) == 1
    path = tmp_path / "fused_add_rms_norm.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for b, s in ((1, 1), (4, 17), (3, 1)):
            x, r = torch.randn(b, s, 64), torch.randn(b, s, 64)
            expected = model(x, r)
            for got in (ep.module()(x, r), loaded.module()(x, r)):
                assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_torchscript_save_load_and_backward(tmp_path):
    model = Block(48, offset=1.0, mode="gemma")
    scripted = torch.jit.script(model)
    assert "liger::fused_add_rms_norm" in str(scripted.graph)
    path = tmp_path / "fused_add_rms_norm.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x, r, dy, ds = (torch.randn(3, 5, 48) for _ in range(4))
    outputs = []
    for m in (model, loaded):
        xg, rg = x.clone().requires_grad_(), r.clone().requires_grad_()
        y, s = m(xg, rg)
        torch.autograd.backward((y, s), (dy, ds))
        outputs.append((y.detach(), s.detach(), xg.grad, rg.grad, dict(m.named_parameters())["weight"].grad))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, r, w):
        y, s = liger_aot.ops.fused_add_rms_norm(x * 2.0, r, w, 1e-6)
        return y * 0.5, s * 0.5

    w = torch.randn(64, device=device)
    cases = []
    for shape in ((2, 5, 64), (3, 9, 64)):
        x, r, dy, ds = (torch.randn(shape, device=device) for _ in range(4))
        cases.append(((x, r, w), (0, 1, 2), (dy, ds)))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- bad inputs


@pytest.mark.parametrize("args,match", [
    ((torch.randint(0, 5, (4, 8)), torch.randint(0, 5, (4, 8)), None), r"x must be float32, bfloat16 or float16"),
    ((torch.randn(4, 8), torch.randn(4, 7), None), r"residual must have x's shape \[4, 8\]"),
    ((torch.randn(4, 8), torch.randn(4, 8, dtype=torch.float16), None), r"residual must have x's dtype"),
    ((torch.randn(4, 8), torch.randn(4, 8, device="meta"), None), r"residual is on meta but x is on cpu"),
    ((torch.randn(4, 8), torch.randn(4, 8), torch.ones(7)), r"weight must have shape \[8\]"),
    ((torch.randn(4, 8), torch.randn(4, 8), None, 1e-6, 0.0, "mistral"), r"casting_mode must be 'llama', 'gemma'"),
], ids=["int_x", "residual_shape", "residual_dtype", "residual_device", "weight_length", "casting_mode"])
def test_bad_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        liger.fused_add_rms_norm(*args)


def test_module_rejects_bad_casting_mode():
    with pytest.raises(ValueError, match="casting_mode"):
        LigerFusedAddRMSNorm(8, casting_mode="mistral")


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

# 12000 and 16384: the backward's reload kernel (8193-16384, aligned, 16-bit), 32768 and up (and fp32): the split path
HIDDEN_SIZES = (1, 7, 127, 512, 1000, 4096, 5120, 8192, 12000, 16384, 32768, 65536, 100000, 262144)
ROW_COUNTS = (0, 1, 3, 4099)


@gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, hidden, rows):
    if rows * hidden > 2**28:
        rows = 2**28 // hidden + 3
    x, r = (torch.randn(rows, hidden, dtype=dtype, device="cuda") for _ in range(2))
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    for kind in ("weight", "weight_offset1", "none"):
        w = None if kind == "none" else torch.randn(hidden, dtype=dtype, device="cuda")
        offset = 1.0 if kind == "weight_offset1" else 0.0
        for mode in MODES:
            first = [t.clone() for t in fwd_bwd(x, r, w, dy, ds_out, offset, mode) if t is not None]
            blocks = [torch.full((x.numel(),), float("nan"), dtype=dtype, device="cuda") for _ in range(8)]
            del blocks  # the next outputs start as NaN wherever a kernel fails to write
            y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, offset, mode)
            for a, b in zip(first, [t for t in (y, s, dx, dr, dw) if t is not None]):
                assert torch.equal(a, b), f"{mode}/{kind}: not deterministic or reads a poisoned block"
            with torch.no_grad():
                y_inf, s_inf = liger.fused_add_rms_norm(x, r, w, EPS, offset, mode)
            assert torch.equal(y_inf, y) and torch.equal(s_inf, s)
            check_against_reference(x, r, w, offset, mode, y, s, dy, ds_out, dx, dr, dw, what=f"{mode}/{kind}: ")


@gpu
@pytest.mark.parametrize("hidden", (4096, 12000, 16384, 70000))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_frozen_weight_and_unused_sum(dtype, hidden):
    """A weight without requires_grad (no dw: the wide backward's variant with runtime branches), and s unused
    (no ds_out), next to the usual case."""
    x, r = (torch.randn(37, hidden, dtype=dtype, device="cuda") for _ in range(2))
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    for mode in MODES:
        for ds in (ds_out, None):
            xg, rg = x.detach().requires_grad_(), r.detach().requires_grad_()
            y, s = liger.fused_add_rms_norm(xg, rg, w, EPS, 0.5, mode)
            outs, grads = ((y, s), (dy, ds)) if ds is not None else ((y,), (dy,))
            dx, dr = torch.autograd.grad(outs, (xg, rg), grads)
            check_against_reference(x, r, w, 0.5, mode, y.detach(), s.detach(), dy, ds, dx, dr, None,
                                    what=f"frozen weight, {mode}, ds_out {ds is not None}: ")
        y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, None, 0.5, mode)  # weight trained, s unused
        check_against_reference(x, r, w, 0.5, mode, y, s, dy, None, dx, dr, dw, what=f"{mode}, no ds_out: ")


@gpu
@pytest.mark.parametrize("hidden", (1000, 4096, 12000, 70000))
@pytest.mark.parametrize("x_dtype,w_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float16, torch.bfloat16),
    (torch.float32, torch.bfloat16)], ids=lambda d: dtype_id(d))
def test_cuda_weight_of_another_dtype(x_dtype, w_dtype, hidden):
    x, r = (torch.randn(37, hidden, dtype=x_dtype, device="cuda") for _ in range(2))
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    w = torch.randn(hidden, dtype=w_dtype, device="cuda")
    for mode in MODES:
        y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, 1.0, mode)
        check_against_reference(x, r, w, 1.0, mode, y, s, dy, ds_out, dx, dr, dw, what=f"{mode}: ")


def make_cuda_layout(layout, rows, hidden, dtype):
    randn = lambda *s: torch.randn(*s, dtype=dtype, device="cuda")  # noqa: E731
    return {
        "row_stride_aligned": lambda: randn(rows, hidden + 8)[:, :hidden],
        "row_stride_odd": lambda: randn(rows, hidden + 3)[:, :hidden],
        "transposed": lambda: randn(3, rows, hidden).transpose(0, 1),
        "storage_offset": lambda: randn(rows * hidden + 1)[1:].view(rows, hidden),
        "last_dim_strided": lambda: randn(rows, 2 * hidden)[:, ::2],
        "expanded_rows": lambda: randn(1, hidden).expand(rows, hidden),
    }[layout]()


@gpu
@pytest.mark.parametrize("hidden", (127, 4096, 12000, 70000))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=dtype_id)
@pytest.mark.parametrize("layout", ("row_stride_aligned", "row_stride_odd", "transposed", "storage_offset",
                                    "last_dim_strided", "expanded_rows"))
def test_cuda_strided_and_expanded_inputs(layout, dtype, hidden):
    x = make_cuda_layout(layout, 33, hidden, dtype)
    r = torch.randn(x.shape, dtype=dtype, device="cuda")  # contiguous residual beside a strided x
    dy = make_cuda_layout(layout, 33, hidden, dtype)
    ds_out = make_cuda_layout(layout, 33, hidden, dtype)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    for mode in MODES:
        y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, 0.0, mode)
        check_against_reference(x, r, w, 0.0, mode, y, s, dy, ds_out, dx, dr, dw, what=f"{layout}/{mode}: ")
        y, s, dx, dr, dw = fwd_bwd(r, x, w, dy, ds_out, 0.0, mode)  # the strided tensor as the residual
        check_against_reference(r, x, w, 0.0, mode, y, s, dy, ds_out, dx, dr, dw, what=f"{layout}/{mode}: ")


@gpu
@pytest.mark.parametrize("hidden", (4096, 100003))
def test_cuda_more_than_2_31_elements(hidden):
    rows = 2**31 // hidden + 8
    x, r = (torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    assert x.numel() > 2**31
    w = torch.randn(hidden, dtype=torch.bfloat16, device="cuda")
    dy, ds_out = torch.randn_like(x), torch.randn_like(x)
    y, s, dx, dr, dw = fwd_bwd(x, r, w, dy, ds_out, 0.0, "llama")
    check_against_reference(x, r, w, 0.0, "llama", y, s, dy, ds_out, dx, dr, dw)


@gpu
@pytest.mark.parametrize("hidden", (4096, 100000))
def test_cuda_graph_capture_and_replay(hidden):
    x, r = (torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    w = torch.randn(hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy, ds_out = (torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))

    def step():
        y, s = liger.fused_add_rms_norm(x, r, w)
        return (y, s) + torch.autograd.grad((y, s), (x, r, w), (dy, ds_out))

    def check(out, new_x, new_r, new_dy, new_ds):
        y, s, dx, dr, dw = out
        check_against_reference(new_x, new_r, w.detach(), 0.0, "llama", y.detach(), s.detach(), new_dy, new_ds,
                                dx, dr, dw)

    check_cuda_graph(step, (x, r, dy, ds_out),
                     lambda new_x, new_r, new_dy, new_ds: fwd_bwd(new_x, new_r, w, new_dy, new_ds, 0.0, "llama"),
                     check=check)


@gpu
def test_cuda_bad_inputs():
    x = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="residual is on cpu but x is on cuda"):
        liger.fused_add_rms_norm(x, torch.randn(4, 8), None)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.fused_add_rms_norm(x.double(), x.double(), None)


SANITIZER_SCRIPT = """
import torch
import liger_aot

liger = torch.ops.liger
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, hidden, layout in ((1, 1, "contiguous"), (3, 7, "contiguous"), (5, 127, "contiguous"),
                                 (0, 64, "contiguous"), (4, 4097, "offset"), (3, 16384, "padded"),
                                 (5, 8192, "contiguous"), (2, 70001, "contiguous"), (3, 32768, "contiguous"),
                                 (4, 12000, "padded"),
                                 (9, 4096, "padded"), (7, 300, "contiguous")):
        pad = 8 if layout == "padded" else 0
        base = torch.randn(rows * (hidden + pad) + 1, dtype=dtype, device="cuda")
        start = 1 if layout == "offset" else 0
        x = base[start:start + rows * (hidden + pad)].view(rows, hidden + pad)[:, :hidden]
        r = torch.randn(rows, hidden, dtype=dtype, device="cuda")
        w = torch.randn(hidden, dtype=dtype, device="cuda")
        for mode in ("llama", "gemma", "none"):
            for weight in (w, None):
                xg, rg = x.detach().requires_grad_(), r.detach().requires_grad_()
                wg = None if weight is None else weight.detach().requires_grad_()
                y, s = liger.fused_add_rms_norm(xg, rg, wg, 1e-6, 0.0, mode)
                torch.autograd.backward((y, s), (torch.randn_like(y), torch.randn_like(s)))
                y, s = liger.fused_add_rms_norm(xg, rg, wg, 1e-6, 0.0, mode)
                y.backward(torch.randn_like(y))
                torch.cuda.synchronize()
print("sanitizer script ok")
"""


@gpu
def test_cuda_compute_sanitizer_memcheck(tmp_path):
    run_memcheck(SANITIZER_SCRIPT, tmp_path)
