"""Tests of torch.ops.liger.rms_norm (and its internal rms_norm_fwd / rms_norm_bwd).

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here (not the
op's CPU path) may be at most twice the error of the same formula computed by eager PyTorch at the same
precision, plus a floor of FLOOR_ULPS ulps of the result's magnitude so that an exact baseline does not
demand exactness. CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools
import subprocess
import sys

import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerRMSNorm
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id,  # noqa: E402
                     poison_freed_blocks, run_memcheck)

liger = torch.ops.liger
gpu = pytest.mark.gpu

EPS = 1e-6
MODES = ("llama", "gemma", "none")
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
# 2 ulps: the op and the baseline may each round a final result once the other way.
FLOOR_ULPS = 2


# ---- float64 reference and eager baseline (independent of the op)


def reference(x, w, eps, offset):
    """The definition, in whatever precision it is given (float64 here): x * rsqrt(mean(x^2) + eps) * (offset + w)."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else y * (offset + w)


def eager(x, w, eps, offset, mode):
    """The formula as eager PyTorch computes it at x's precision in each casting mode: the 2x rule's baseline."""
    dt = x.dtype
    if mode == "none":  # every step in x's dtype, as written
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y if w is None else (y * (offset + w)).to(dt)
    h = x.to(torch.float64 if dt == torch.float64 else torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if mode == "llama":  # Hugging Face LlamaRMSNorm: normalize in fp32, round to x's dtype, then scale
        h = h.to(dt)
        return h if w is None else ((offset + w) * h).to(dt)
    return (h if w is None else h * (offset + w.to(h.dtype))).to(dt)  # GemmaRMSNorm: fp32 throughout


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(x, w, offset, mode, y, dy, dx, dw, *, eps=EPS, chunk_elems=1 << 26, what=""):
    """Asserts the op's y, dx and dw (for the incoming gradient dy; dw None without a weight) obey the 2x rule.

    Rows are independent, so the float64 reference and the eager baseline run over chunks of rows (1 << 26
    elements: 512 MB per float64 tensor): tensors of more than 2^31 elements fit in memory. Gradients of the
    reference are autograd's on the float64 formula.
    """
    hidden = x.shape[-1]
    check_output(y, x)
    check_output(dx, x)
    xs, ys, dys, dxs = (t.reshape(-1, hidden) for t in (x, y, dy, dx))
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    dw64, dw_eager = (torch.zeros(hidden, dtype=torch.float64, device=x.device) for _ in range(2))
    dw_terms = torch.zeros((), dtype=torch.float64, device=x.device)
    step = max(1, chunk_elems // hidden)
    for start in range(0, xs.shape[0], step):
        rows = slice(start, start + step)
        x64 = xs[rows].detach().double().requires_grad_()
        w64 = None if w is None else w.detach().double().requires_grad_()
        y64 = reference(x64, w64, eps, offset)
        xe = xs[rows].detach().requires_grad_()
        we = None if w is None else w.detach().requires_grad_()
        ye = eager(xe, we, eps, offset, mode)
        err_y.add(ys[rows], ye, y64, y64)
        dy64 = dys[rows].double()
        g64 = torch.autograd.grad(y64, [x64] + ([w64] if w is not None else []), dy64)
        ge = torch.autograd.grad(ye, [xe] + ([we] if w is not None else []), dys[rows])
        with torch.no_grad():
            rstd = torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
            dn = dy64 if w is None else dy64 * (offset + w64)
            # dx = rstd*dn - rstd^3*mean(dn*x)*x cancels (fully at hidden 1): its magnitude is that of rstd*dn.
            err_dx.add(dxs[rows], ge[0], g64[0], rstd * dn)
            if w is not None:
                dw64 += g64[1]
                dw_eager += ge[1].double()
                # dw sums dy * x * rstd over rows: its magnitude is that of the sum or of its largest term.
                dw_terms = torch.maximum(dw_terms, (dy64 * x64 * rstd).abs().max())
    err_y.check(what)
    err_dx.check(what)
    if w is None:
        return
    check_output(dw, w)
    err_dw = Error("dw", w.dtype)
    err_dw.add(dw, dw_eager.to(w.dtype), dw64, torch.maximum(dw64.abs().max(), dw_terms))
    err_dw.check(what)


def fwd_bwd(x, w, dy, offset, mode):
    """The op through its autograd path: (y, dx, dw); dw is None without a weight."""
    xg = x.detach().requires_grad_()
    wg = None if w is None else w.detach().requires_grad_()
    y = liger.rms_norm(xg, wg, EPS, offset, mode)
    grads = torch.autograd.grad(y, [xg] if wg is None else [xg, wg], dy)
    return y.detach(), grads[0], (grads[1] if wg is not None else None)


# ---- CPU numerics


def make_x(layout, dtype, device="cpu"):
    """x in a given memory layout; the op must accept every one."""
    randn = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
    return {
        "1d": lambda: randn(37),
        "hidden1": lambda: randn(5, 1),
        "odd_hidden": lambda: randn(3, 7, 131),
        "3d": lambda: randn(2, 3, 64),
        "transposed": lambda: randn(6, 4, 96).transpose(0, 1),  # leading dims share no single row stride
        "row_sliced": lambda: randn(5, 80)[:, :64],  # row stride 80 > hidden 64
        "last_dim_strided": lambda: randn(4, 128)[:, ::2],
        "storage_offset": lambda: randn(1 + 4 * 40)[1:].view(4, 40),
        "expanded_rows": lambda: randn(1, 64).expand(5, 64),  # row stride 0
    }[layout]()


CPU_LAYOUTS = ("1d", "hidden1", "odd_hidden", "3d", "transposed", "row_sliced", "last_dim_strided",
               "storage_offset", "expanded_rows")


@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_matches_float64_reference(mode, dtype, layout):
    x = make_x(layout, dtype)
    w = torch.randn(x.shape[-1], dtype=dtype)
    dy = torch.randn(x.shape, dtype=dtype)
    y, dx, dw = fwd_bwd(x, w, dy, 0.0, mode)
    check_against_reference(x, w, 0.0, mode, y, dy, dx, dw)
    assert torch.equal(liger.rms_norm(x, w, EPS, 0.0, mode), y)  # no-grad path: same values


def other_float_dtype(dtype):
    return torch.bfloat16 if dtype in (torch.float32, torch.float64) else torch.float32


@pytest.mark.parametrize("weight", ("none", "offset1", "other_dtype", "other_dtype_offset1"))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mode", MODES)
def test_weight_variants(mode, dtype, weight):
    x = torch.randn(6, 50, dtype=dtype)
    dy = torch.randn_like(x)
    w_dtype = other_float_dtype(dtype) if weight.startswith("other_dtype") else dtype
    w = None if weight == "none" else torch.randn(50, dtype=w_dtype)
    offset = 1.0 if weight.endswith("offset1") else 0.0
    y, dx, dw = fwd_bwd(x, w, dy, offset, mode)
    check_against_reference(x, w, offset, mode, y, dy, dx, dw)


def test_python_wrappers_call_the_op():
    x, w = torch.randn(4, 32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.rms_norm(x, w), liger.rms_norm(x, w, 1e-6, 0.0, "llama"))
    assert torch.equal(liger_aot.ops.rms_norm(x, None, 1e-5, 1.0, "gemma"), liger.rms_norm(x, None, 1e-5, 1.0, "gemma"))
    m = LigerRMSNorm(32, eps=1e-5, offset=1.0, casting_mode="gemma", init_fn="zeros", dtype=torch.bfloat16)
    assert torch.equal(m(x), liger.rms_norm(x, torch.zeros(32, dtype=torch.bfloat16), 1e-5, 1.0, "gemma"))
    m = LigerRMSNorm(32, elementwise_affine=False)
    assert m.weight is None and not list(m.parameters())
    assert torch.equal(m(x), liger.rms_norm(x, None))


def test_fast_binding_defers_what_it_does_not_handle():
    """liger_aot._fast calls the op directly, and returns NotImplemented (the wrapper then takes the torch.ops
    path) for Tensor subclasses, TorchFunctionModes, unexpected argument types and errors."""
    from liger_aot import _fast

    x, w = torch.randn(4, 32), torch.randn(32)
    assert torch.equal(_fast.rms_norm(x, w, 1e-6, 0.0, "llama"), liger.rms_norm(x, w))
    assert torch.equal(_fast.rms_norm(x, torch.nn.Parameter(w), 1e-5, 1, "gemma"), liger.rms_norm(x, w, 1e-5, 1.0, "gemma"))
    assert torch.equal(_fast.rms_norm(x, None, 1e-6, 0.0, "none"), liger.rms_norm(x, None, 1e-6, 0.0, "none"))

    class Sub(torch.Tensor):
        pass

    seen = []

    class Mode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    for args in [(x.as_subclass(Sub), w, 1e-6, 0.0, "llama"), (x, w.as_subclass(Sub), 1e-6, 0.0, "llama"),
                 (x, w, True, 0.0, "llama"), (x, w, "1e-6", 0.0, "llama"), (x, w, 1e-6, 0.0, b"llama"),
                 (x, w, 1e-6, 0.0), (x, w, 1e-6, 0.0, "mistral"), (x.int(), w, 1e-6, 0.0, "llama")]:
        assert _fast.rms_norm(*args) is NotImplemented
    with Mode():
        assert _fast.rms_norm(x, w, 1e-6, 0.0, "llama") is NotImplemented
        liger_aot.ops.rms_norm(x, w)
    assert seen, "the TorchFunctionMode must see the call"
    assert type(liger_aot.ops.rms_norm(x.as_subclass(Sub), w)) is Sub
    # errors are PyTorch's, raised by the torch.ops call
    with pytest.raises(RuntimeError, match="casting_mode must be"):
        liger_aot.ops.rms_norm(x, w, casting_mode="mistral")
    with pytest.raises(RuntimeError, match="x must be float32"):
        liger_aot.ops.rms_norm(x.int(), w)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 64), (2, 0, 64)))
def test_zero_rows(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(64, device=device, requires_grad=True)
    y = liger.rms_norm(x, w)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    y, rstd = liger.rms_norm_fwd(x.detach(), w.detach(), EPS, 0.0, "llama")
    assert y.shape == shape and rstd.shape == shape[:-1]
    dx, dw = liger.rms_norm_bwd(y, x.detach(), w.detach(), rstd, 0.0, "llama", True)
    assert dx.shape == shape and torch.equal(dw, torch.zeros_like(w))
    dx, dw = liger.rms_norm_bwd(y, x.detach(), None, rstd, 0.0, "llama", False)
    assert dx.shape == shape and dw.shape == (0,)


def test_internal_ops_match_public_op():
    x, w = torch.randn(3, 5, 40, dtype=torch.float16), torch.randn(40, dtype=torch.float16)
    dy = torch.randn_like(x)
    y, rstd = liger.rms_norm_fwd(x, w, EPS, 0.0, "llama")
    assert torch.equal(y, liger.rms_norm(x, w)) and rstd.shape == (3, 5) and rstd.dtype == torch.float32
    dx, dw = liger.rms_norm_bwd(dy, x, w, rstd, 0.0, "llama", True)
    _, autograd_dx, autograd_dw = fwd_bwd(x, w, dy, 0.0, "llama")
    assert torch.equal(dx, autograd_dx) and torch.equal(dw, autograd_dw)
    dx2, dw2 = liger.rms_norm_bwd(dy, x, w, rstd, 0.0, "llama", False)
    assert torch.equal(dx2, dx) and dw2.shape == (0,) and dw2.dtype == w.dtype


# ---- autograd: gradcheck, double backward


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", (0.0, 1.0))
def test_gradcheck(mode, offset):
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: liger.rms_norm(x, w, EPS, offset, mode), (x, w))
    assert torch.autograd.gradcheck(lambda x: liger.rms_norm(x, None, EPS, offset, mode), (x,))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(lambda x, w: liger.rms_norm(x, w, EPS, offset, mode), (x, w))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = torch.randn(4, 16, device=device, requires_grad=True)
    w = torch.randn(16, device=device, requires_grad=True)
    dx, dw = torch.autograd.grad(liger.rms_norm(x, w).square().sum(), (x, w), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((dx.sum() + dw.sum()), (x, w))


# ---- opcheck


def opcheck_samples(device):
    """(op, args, requires grad) triples covering every op, with and without a weight and gradients."""
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for mode, dtype, offset in (("llama", torch.float32, 0.0), ("gemma", torch.bfloat16, 1.0),
                                ("none", torch.float16, 0.0)):
        for grad in (False, True):
            x, w = t(3, 5, 64, dtype=dtype, grad=grad), t(64, dtype=dtype, grad=grad)
            samples.append(("rms_norm", (x, w, EPS, offset, mode), grad))
            samples.append(("rms_norm", (t(7, 33, dtype=dtype, grad=grad), None, 1e-5, offset, mode), grad))
            samples.append(("rms_norm_fwd", (x, w, EPS, offset, mode), grad))
            y, rstd = liger.rms_norm_fwd(x.detach(), w.detach(), EPS, offset, mode)
            dy = torch.randn_like(y).requires_grad_(grad)
            samples.append(("rms_norm_bwd", (dy, x, w, rstd, offset, mode, True), grad))
            samples.append(("rms_norm_bwd", (dy, x, None, rstd, offset, mode, False), grad))
    samples.append(("rms_norm", (t(2, 3, 40, grad=True).transpose(0, 1), t(40, grad=True)), True))
    samples.append(("rms_norm", (t(64, dtype=torch.bfloat16, grad=True), t(64, grad=True)), True))
    return samples


def opcheck_params():
    params = []
    for device, marks in (("cpu", []), ("cuda", [gpu])):
        for i, (name, _, grad) in enumerate(opcheck_samples("cpu")):
            sample_marks = list(marks)
            test_id = f"{device}-{i}-{name}" + ("-grad" if grad else "")
            params.append(pytest.param(device, i, marks=sample_marks, id=test_id))
    return params


@pytest.mark.parametrize("device,index", opcheck_params())
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "rms_norm_bwd" and grad:
        tests = tests[:-1]  # differentiating rms_norm_bwd must raise: test_rms_norm_bwd_is_not_differentiable
    opcheck(getattr(liger, name).default, args, test_utils=tests)


def test_rms_norm_bwd_is_not_differentiable():
    x, w = torch.randn(3, 16), torch.randn(16)
    y, rstd = liger.rms_norm_fwd(x, w, EPS, 0.0, "llama")
    dy = torch.randn_like(y, requires_grad=True)
    dx, _ = liger.rms_norm_bwd(dy, x, w, rstd, 0.0, "llama", True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        dx.sum().backward()


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    """A small module around the op: what export and TorchScript see."""

    def __init__(self, hidden, offset=0.0, mode="llama"):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(hidden))
        self.offset, self.mode = offset, mode

    def forward(self, x):
        return torch.ops.liger.rms_norm(x * 2.0, self.weight, 1e-6, self.offset, self.mode) * 0.5


def liger_nodes(graph):
    return [n for n in graph.nodes if n.target is torch.ops.liger.rms_norm.default]


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Block(64, offset=1.0, mode="gemma")
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
    ep = torch.export.export(model, (torch.randn(2, 3, 64),), dynamic_shapes=dims)
    assert len(liger_nodes(ep.graph)) == 1
    path = tmp_path / "rms_norm.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    assert len(liger_nodes(loaded.graph)) == 1
    with torch.no_grad():
        for batch, seq in ((1, 1), (4, 17), (3, 1), (2, 3)):
            x = torch.randn(batch, seq, 64)
            expected = model(x)
            assert torch.equal(ep.module()(x), expected)
            assert torch.equal(loaded.module()(x), expected)


@pytest.mark.slow
def test_aot_inductor_package_with_dynamic_shapes(tmp_path):
    # AOTInductor calls the custom op from the compiled package through its proxy executor (~25 s on CPU).
    model = Block(64, offset=1.0, mode="gemma").eval()
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
    with torch.no_grad():
        ep = torch.export.export(model, (torch.randn(2, 3, 64),), dynamic_shapes=dims)
        package = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "rms_norm_aoti.pt2"))
        runner = torch._inductor.aoti_load_package(package)
        for batch, seq in ((1, 1), (4, 17), (3, 2)):
            x = torch.randn(batch, seq, 64)
            torch.testing.assert_close(runner(x), model(x), rtol=1e-6, atol=1e-6)


def test_torchscript_save_load_and_backward(tmp_path):
    model = Block(48, offset=1.0, mode="gemma")
    scripted = torch.jit.script(model)
    assert "liger::rms_norm" in str(scripted.graph)
    path = tmp_path / "rms_norm.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(3, 5, 48)
    dy = torch.randn(3, 5, 48)
    outputs = []
    for m in (model, loaded):
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(dy)
        outputs.append((y.detach(), xg.grad, dict(m.named_parameters())["weight"].grad))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params(cpu_inductor=True))
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, w):  # scaling by powers of 2 is exact: compiled and eager results must be bitwise equal
        return torch.ops.liger.rms_norm(x * 2.0, w, 1e-6, 0.0, "llama") * 0.5

    w = torch.randn(64, device=device)
    cases = []
    for shape in ((2, 5, 64), (3, 9, 64)):
        x, dy = torch.randn(shape, device=device), torch.randn(shape, device=device)
        cases.append(((x, w), (0, 1), dy))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- Hugging Face modules


class HFLlamaRMSNorm(torch.nn.Module):
    """transformers' LlamaRMSNorm, verbatim."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class HFGemmaRMSNorm(torch.nn.Module):
    """transformers' GemmaRMSNorm, verbatim."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("family", ("llama", "gemma"))
def test_loads_hugging_face_state_dict(family, dtype):
    hidden = 96
    if family == "llama":
        hf = HFLlamaRMSNorm(hidden, eps=1e-5)
        ours = LigerRMSNorm(hidden, eps=1e-5)
    else:
        hf = HFGemmaRMSNorm(hidden, eps=1e-5)
        ours = LigerRMSNorm(hidden, eps=1e-5, offset=1.0, casting_mode="gemma", init_fn="zeros")
    with torch.no_grad():
        hf.weight.normal_()
    hf, ours = hf.to(dtype), ours.to(dtype)
    ours.load_state_dict(hf.state_dict())
    assert torch.equal(ours.weight, hf.weight)
    x = torch.randn(4, 7, hidden, dtype=dtype)
    dy = torch.randn_like(x)
    results = []
    for m in (hf, ours):
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(dy)
        results.append((y.detach(), xg.grad, m.weight.grad))
    w, offset = hf.weight.detach(), (0.0 if family == "llama" else 1.0)
    y64 = reference(x.double(), w.double(), 1e-5, offset)
    # The HF module is the baseline: the op may be at most 2x as far from float64, plus FLOOR_ULPS ulps.
    err = Error("y", dtype)
    err.add(results[1][0], results[0][0], y64, y64)
    err.check(f"{family} vs HF: ")
    # Same arithmetic up to rsqrt vs 1/sqrt in fp32: at most one rounding of the result apart.
    ulp = torch.finfo(dtype).eps * y64.abs().max().item()
    assert (results[1][0].double() - results[0][0].double()).abs().max().item() <= ulp
    dx, dw = results[1][1], results[1][2]
    check_against_reference(x, w, offset, family, results[1][0], dy, dx, dw, eps=1e-5)


# ---- bad inputs


@pytest.mark.parametrize("args,match", [
    ((torch.randint(0, 5, (4, 8)), None), r"x must be float32, bfloat16 or float16"),
    ((torch.tensor(1.0), None), r"x must have at least one dimension"),
    ((torch.randn(4, 0), None), r"x's last dimension must not be empty"),
    ((torch.randn(4, 8), torch.ones(7)), r"weight must have shape \[8\]"),
    ((torch.randn(4, 8), torch.ones(1, 8)), r"weight must be 1-D"),
    ((torch.randn(4, 8), torch.ones(8, dtype=torch.int32)), r"weight must be a floating-point"),
    ((torch.randn(4, 8), torch.ones(8, device="meta")), r"weight is on meta but x is on cpu"),
    ((torch.randn(4, 8), torch.ones(8), 1e-6, 0.0, "mistral"), r"casting_mode must be 'llama', 'gemma' or 'none'"),
], ids=["int_x", "0d_x", "empty_hidden", "weight_length", "weight_2d", "int_weight", "weight_device",
        "casting_mode"])
def test_bad_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        liger.rms_norm(*args)
    with pytest.raises(RuntimeError, match=match):
        liger.rms_norm_fwd(*(args + (1e-6, 0.0, "llama")[len(args) - 2:]))


def test_bad_backward_inputs():
    x, w = torch.randn(4, 8), torch.randn(8)
    y, rstd = liger.rms_norm_fwd(x, w, EPS, 0.0, "llama")
    with pytest.raises(RuntimeError, match=r"dy must have x's dtype"):
        liger.rms_norm_bwd(y.double(), x, w, rstd, 0.0, "llama", True)
    with pytest.raises(RuntimeError, match=r"dy must have x's shape"):
        liger.rms_norm_bwd(y[:3], x, w, rstd, 0.0, "llama", True)
    with pytest.raises(RuntimeError, match=r"rstd must hold one value per row"):
        liger.rms_norm_bwd(y, x, w, rstd[:3], 0.0, "llama", True)


def test_module_rejects_bad_casting_mode():
    with pytest.raises(ValueError, match="casting_mode"):
        LigerRMSNorm(8, casting_mode="mistral")


# =====================================================================================================
# GPU tests: CUDA kernels against the float64 reference (computed on the GPU), layouts, graphs, threads,
# streams, compute-sanitizer. Run with `pytest -m gpu`.

HIDDEN_SIZES = (1, 7, 127, 128, 1000, 4096, 5120, 8192, 12288, 65536, 100000, 262144)
ROW_COUNTS = (0, 1, 3, 4099)
WEIGHT_KINDS = ("weight", "weight_offset1", "none")


def weight_for(kind, hidden, dtype, device="cuda"):
    if kind == "none":
        return None, 0.0
    return torch.randn(hidden, dtype=dtype, device=device), (1.0 if kind == "weight_offset1" else 0.0)


@gpu
@pytest.mark.parametrize("rows", ROW_COUNTS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, hidden, rows):
    x = torch.randn(rows, hidden, dtype=dtype, device="cuda")
    dy = torch.randn_like(x)
    for kind in WEIGHT_KINDS:
        w, offset = weight_for(kind, hidden, dtype)
        for mode in MODES:
            first = [t.clone() for t in fwd_bwd(x, w, dy, offset, mode) if t is not None]
            poison_freed_blocks(*[(x.numel(), dtype)] * 3, (rows, torch.float32), (hidden, dtype),
                                (min(rows, 2048) * hidden, torch.float32), copies=2)
            y, dx, dw = fwd_bwd(x, w, dy, offset, mode)
            with torch.no_grad():
                y_inference = liger.rms_norm(x, w, EPS, offset, mode)  # the kernel without the rstd store
            for a, b in zip(first, (y, dx, dw)):
                assert torch.equal(a, b), f"{mode}/{kind}: not deterministic or reads a poisoned block"
            assert torch.equal(y_inference, y)
            check_against_reference(x, w, offset, mode, y, dy, dx, dw, what=f"{mode}/{kind}: ")


@gpu
@pytest.mark.parametrize("hidden", (1000, 70000))
@pytest.mark.parametrize("x_dtype,w_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float16, torch.bfloat16),
    (torch.bfloat16, torch.float16), (torch.float32, torch.bfloat16)], ids=lambda d: dtype_id(d))
def test_cuda_weight_of_another_dtype(x_dtype, w_dtype, hidden):
    x = torch.randn(37, hidden, dtype=x_dtype, device="cuda")
    dy = torch.randn_like(x)
    for offset in (0.0, 1.0):
        w = torch.randn(hidden, dtype=w_dtype, device="cuda")
        for mode in MODES:
            y, dx, dw = fwd_bwd(x, w, dy, offset, mode)
            check_against_reference(x, w, offset, mode, y, dy, dx, dw, what=f"{mode}/offset {offset}: ")


def make_cuda_layout(layout, rows, hidden, dtype):
    """x (or dy) in a layout the launcher must handle: strided rows, unaligned pointers, stride-0 dims."""
    randn = lambda *s: torch.randn(*s, dtype=dtype, device="cuda")  # noqa: E731
    return {
        "row_stride_aligned": lambda: randn(rows, hidden + 8)[:, :hidden],  # 16-byte multiple row stride
        "row_stride_odd": lambda: randn(rows, hidden + 3)[:, :hidden],
        "transposed": lambda: randn(3, rows, hidden).transpose(0, 1),
        "storage_offset": lambda: randn(rows * hidden + 1)[1:].view(rows, hidden),  # pointer not 16-byte aligned
        "last_dim_strided": lambda: randn(rows, 2 * hidden)[:, ::2],
        "expanded_rows": lambda: randn(1, hidden).expand(rows, hidden),  # row stride 0
        "expanded_batch": lambda: randn(rows, hidden).expand(2, rows, hidden),  # leading stride 0
    }[layout]()


@gpu
@pytest.mark.parametrize("hidden", (127, 4096, 70000))  # odd (unaligned loop), one block, aligned loop
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=dtype_id)
@pytest.mark.parametrize("layout", ("row_stride_aligned", "row_stride_odd", "transposed", "storage_offset",
                                    "last_dim_strided", "expanded_rows", "expanded_batch"))
def test_cuda_strided_and_expanded_inputs(layout, dtype, hidden):
    x = make_cuda_layout(layout, 33, hidden, dtype)
    dy = make_cuda_layout(layout, 33, hidden, dtype) if not layout.startswith("expanded") else torch.randn_like(x)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    for mode in MODES:
        y, dx, dw = fwd_bwd(x, w, dy, 0.0, mode)
        check_against_reference(x, w, 0.0, mode, y, dy, dx, dw, what=f"{layout}/{mode}: ")


@gpu
@pytest.mark.parametrize("shape", ((1000,), (70000,), (2, 3, 4, 520)))
def test_cuda_one_and_four_dimensional_x(shape):
    x = torch.randn(shape, dtype=torch.float16, device="cuda")
    w, dy = torch.randn(shape[-1], dtype=x.dtype, device="cuda"), torch.randn_like(x)
    for mode in MODES:
        y, dx, dw = fwd_bwd(x, w, dy, 0.0, mode)
        check_against_reference(x, w, 0.0, mode, y, dy, dx, dw, what=f"{mode}: ")


@gpu
@pytest.mark.parametrize("hidden", (4096, 70000))
def test_cuda_expanded_and_transposed_incoming_gradients(hidden):
    x = torch.randn(6, 9, hidden, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(hidden, dtype=torch.bfloat16, device="cuda")
    grads = {"sum": torch.ones((), dtype=x.dtype, device="cuda").expand_as(x),  # what y.sum().backward() sends
             "transposed": torch.randn(9, 6, hidden, dtype=x.dtype, device="cuda").transpose(0, 1)}
    for name, g in grads.items():
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = liger.rms_norm(xg, wg)
        if name == "sum":
            y.sum().backward()
        else:
            y.backward(g)
        check_against_reference(x, w, 0.0, "llama", y.detach(), g, xg.grad, wg.grad, what=f"{name}: ")


@gpu
@pytest.mark.parametrize("hidden", (4096, 100003))  # one block per row; odd: the unaligned loop
def test_cuda_more_than_2_31_elements(hidden):
    rows = 2**31 // hidden + 8
    x = torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda")
    assert x.numel() > 2**31
    w = torch.randn(hidden, dtype=torch.bfloat16, device="cuda")
    dy = torch.randn_like(x)
    y, dx, dw = fwd_bwd(x, w, dy, 0.0, "llama")
    check_against_reference(x, w, 0.0, "llama", y, dy, dx, dw)


@gpu
@pytest.mark.parametrize("hidden", (4096, 100000))
def test_cuda_graph_capture_and_replay(hidden):
    x = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16)

    def step():
        y = liger.rms_norm(x, w)
        return (y,) + torch.autograd.grad(y, (x, w), dy)

    def check(out, new_x, new_dy):
        y, dx, dw = out
        check_against_reference(new_x, w, 0.0, "llama", y.detach(), new_dy, dx, dw)

    check_cuda_graph(step, (x, dy), lambda new_x, new_dy: fwd_bwd(new_x, w, new_dy, 0.0, "llama"), check=check)


THREADS_SCRIPT = """
import threading
import torch
import liger_aot

liger = torch.ops.liger
# Threads share variants pairwise (same dtype and size) so that two first calls race for one module load.
cases = [(torch.bfloat16, 128), (torch.bfloat16, 128), (torch.float16, 4096), (torch.float16, 4096),
         (torch.float32, 100000), (torch.float32, 100000), (torch.bfloat16, 1000), (torch.float16, 7)]
torch.manual_seed(0)
inputs = [tuple(torch.randn(*s, dtype=dt, device="cuda") for s in ((64, h), (h,), (64, h))) for dt, h in cases]
torch.cuda.synchronize()
barrier = threading.Barrier(len(cases))
results, errors = [None] * len(cases), []


def run(x, w, dy):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = liger.rms_norm(x, w)
    return (y.detach(),) + torch.autograd.grad(y, (x, w), dy)


def work(i):
    try:
        barrier.wait()
        results[i] = run(*inputs[i])
        torch.cuda.current_stream().synchronize()
    except BaseException as e:
        errors.append(f"thread {i}: {e!r}")


threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
for i, args in enumerate(inputs):  # the same calls again, one at a time, now that every module is loaded
    for got, want in zip(results[i], run(*args)):
        assert torch.isfinite(got).all() and torch.equal(got, want), f"thread {i} differs"
print("threads ok")
"""


@gpu
def test_cuda_first_calls_from_threads(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "threads ok" in done.stdout, done.stdout + done.stderr


@gpu
def test_cuda_two_streams():
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    shapes = [(512, 8192), (1024, 100000)]  # a single-block and a looped variant
    bases = [torch.randn(s, dtype=torch.bfloat16, device="cuda") for s in shapes]
    ws = [torch.randn(s[-1], dtype=torch.bfloat16, device="cuda") for s in shapes]
    dys = [torch.randn_like(b) for b in bases]
    expected = [fwd_bwd(b * 2, w, dy, 0.0, "llama") for b, w, dy in zip(bases, ws, dys)]
    results = [None, None]
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
    for i, s in enumerate(streams):
        with torch.cuda.stream(s):
            # ~10 ms of spinning on s before its input exists: a kernel launched on any other stream
            # than the current one would read x before it is written.
            torch.cuda._sleep(20_000_000)
            x = bases[i] * 2
            results[i] = fwd_bwd(x, ws[i], dys[i], 0.0, "llama")
    for s in streams:
        torch.cuda.current_stream().wait_stream(s)
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


@gpu
def test_cuda_bad_inputs():
    x = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="weight is on cpu but x is on cuda"):
        liger.rms_norm(x, torch.ones(8))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.rms_norm(x.double(), None)


SANITIZER_SCRIPT = """
import torch
import liger_aot

liger = torch.ops.liger
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, hidden, layout in ((1, 1, "contiguous"), (3, 7, "contiguous"), (5, 127, "contiguous"),
                                 (0, 64, "contiguous"), (4, 4097, "offset"), (3, 65536, "padded"),
                                 (2, 70001, "contiguous"), (2, 32769, "contiguous"), (9, 4096, "padded")):
        pad = 8 if layout == "padded" else 0
        base = torch.randn(rows * (hidden + pad) + 1, dtype=dtype, device="cuda")
        start = 1 if layout == "offset" else 0
        x = base[start:start + rows * (hidden + pad)].view(rows, hidden + pad)[:, :hidden]
        w = torch.randn(hidden, dtype=dtype, device="cuda")
        for mode in ("llama", "gemma", "none"):
            for weight in (w, None):
                xg = x.detach().requires_grad_()  # keeps the strides and the storage offset
                wg = None if weight is None else weight.detach().requires_grad_()
                y = liger.rms_norm(xg, wg, 1e-6, 0.0, mode)
                y.backward(torch.randn_like(y))
                torch.cuda.synchronize()
print("sanitizer script ok")
"""


@gpu
def test_cuda_compute_sanitizer_memcheck(tmp_path):
    run_memcheck(SANITIZER_SCRIPT, tmp_path)
