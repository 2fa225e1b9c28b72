"""Tests of torch.ops.liger.geglu (and its internal geglu_bwd), in both GELU forms ("tanh", "none").

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here (not the
op's CPU path) may be at most twice the error of the same formula computed by eager PyTorch at the same
precision, plus FLOOR_ULPS ulps of the result's magnitude. CPU tests run in CI; tests marked `gpu` need
CUDA and skip without it.
"""
import functools
import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerGEGLUMLP
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks)

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 2  # the op and the baseline may each round a final result once the other way
APPROX = ("tanh", "none")


# ---- float64 reference and eager baseline (independent of the op)


K = math.sqrt(2 / math.pi)


def reference(g, u, approximate):
    """The definition, in the precision given (float64 here): gelu(g) * u, GELU written out.

    tanh form with 1 + tanh(z) = 2 / (1 + exp(-2z)): as written with tanh, the sum cancels for g << 0
    and even float64 loses most digits there (the same for erfc vs 1 + erf).
    """
    if approximate == "tanh":
        return g * u / (1 + torch.exp(-2 * K * (g + 0.044715 * g**3)))
    return 0.5 * g * torch.special.erfc(-g / math.sqrt(2)) * u


def reference_grads(g, u, dy, approximate):
    """(dgate, dup) of reference(), derived by hand in the same cancellation-free forms."""
    if approximate == "tanh":
        z = K * (g + 0.044715 * g**3)
        one_plus_t = 2 / (1 + torch.exp(-2 * z))
        sech2 = torch.cosh(z).pow(-2)
        gelu = 0.5 * g * one_plus_t
        grad = 0.5 * one_plus_t + 0.5 * g * sech2 * K * (1 + 3 * 0.044715 * g**2)
    else:
        cdf = 0.5 * torch.special.erfc(-g / math.sqrt(2))
        gelu = g * cdf
        grad = cdf + g * torch.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)
    return dy * u * grad, dy * gelu


def eager(g, u, approximate):
    """What a user writes today (HF GemmaMLP): F.gelu(gate, approximate) * up at the inputs' precision."""
    return F.gelu(g, approximate=approximate) * u


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(g, u, dy, y, dg, du, approximate, *, chunk_elems=1 << 26, what=""):
    """Asserts y, dgate and dup obey the 2x rule; elementwise, so the check runs over flat chunks
    (1 << 26 elements: 512 MB per float64 tensor) and tensors of more than 2^31 elements fit in memory."""
    for t in (y, dg, du):
        check_output(t, g)
    errors = [Error(n, g.dtype) for n in ("y", "dgate", "dup")]
    flat = [t.reshape(-1) for t in (g, u, dy, y, dg, du)]
    for start in range(0, flat[0].numel(), chunk_elems):
        gc, uc, dyc, yc, dgc, duc = (t[start:start + chunk_elems] for t in flat)
        g64, u64 = (t.detach().double() for t in (gc, uc))
        y64 = reference(g64, u64, approximate)
        ge, ue = (t.detach().clone().requires_grad_() for t in (gc, uc))
        ye = eager(ge, ue, approximate)
        r64 = reference_grads(g64, u64, dyc.double(), approximate)
        re = torch.autograd.grad(ye, (ge, ue), dyc)
        # Magnitudes: those of the products the formula rounds (gelu(g) cancels to ~0 for g << 0, and the
        # float64 reference itself loses digits there; in float64 that is all the 2x rule can see).
        with torch.no_grad():
            gu, dyu, dyg = g64 * u64, dyc.double() * u64, dyc.double() * g64
        errors[0].add(yc, ye, y64, torch.maximum(y64.abs(), gu.abs()))
        errors[1].add(dgc, re[0], r64[0], torch.maximum(r64[0].abs(), dyu.abs()))
        errors[2].add(duc, re[1], r64[1], torch.maximum(r64[1].abs(), dyg.abs()))
    for e in errors:
        e.check(what)


def fwd_bwd(g, u, dy, approximate):
    """The op through its autograd path: (y, dgate, dup)."""
    gg, ug = g.detach().requires_grad_(), u.detach().requires_grad_()
    y = liger.geglu(gg, ug, approximate)
    dg, du = torch.autograd.grad(y, (gg, ug), dy)
    return y.detach(), dg, du


# ---- CPU numerics


def make_pair(layout, dtype, device="cpu"):
    """(gate, up) in a given memory layout; the op must accept every one."""
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device=device) * 3  # |x| up to ~15: both tails of gelu

    return {
        "0d": lambda: (randn(()), randn(())),
        "1d": lambda: (randn(37), randn(37)),
        "odd": lambda: (randn(3, 7, 131), randn(3, 7, 131)),
        "transposed": lambda: (randn(6, 4, 96).transpose(0, 1), randn(4, 6, 96)),
        "strided": lambda: (randn(4, 128)[:, ::2], randn(4, 64)),
        "storage_offset": lambda: (randn(1 + 4 * 40)[1:].view(4, 40), randn(3 + 4 * 40)[3:].view(4, 40)),
        "expanded": lambda: (randn(1, 64).expand(5, 64), randn(5, 64)),
        "fused_chunks": lambda: randn(5, 2 * 48).chunk(2, dim=-1),  # Phi-3's gate_up_proj output
    }[layout]()


CPU_LAYOUTS = ("0d", "1d", "odd", "transposed", "strided", "storage_offset", "expanded", "fused_chunks")


@pytest.mark.parametrize("layout", CPU_LAYOUTS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("approximate", APPROX)
def test_matches_float64_reference(approximate, dtype, layout):
    g, u = make_pair(layout, dtype)
    dy = torch.randn(g.shape, dtype=dtype)
    y, dg, du = fwd_bwd(g, u, dy, approximate)
    check_against_reference(g, u, dy, y, dg, du, approximate)
    assert torch.equal(liger.geglu(g, u, approximate), y)  # no-grad path: same values


@pytest.mark.parametrize("approximate", APPROX)
def test_extreme_values(approximate):
    g = torch.tensor([-1e4, -100.0, -20.0, -5.0, -1e-30, 0.0, 1e-30, 5.0, 20.0, 100.0, 1e4])
    u = torch.ones_like(g)
    y, dg, du = fwd_bwd(g, u, torch.ones_like(g), approximate)
    check_against_reference(g, u, torch.ones_like(g), y, dg, du, approximate)


def test_python_wrapper_calls_the_op():
    g, u = torch.randn(4, 32, dtype=torch.bfloat16), torch.randn(4, 32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.geglu(g, u), liger.geglu(g, u, "tanh"))
    assert torch.equal(liger_aot.ops.geglu(g, u, "none"), liger.geglu(g, u, "none"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0,), (0, 64), (2, 0, 64)))
def test_zero_size(device, shape):
    g = torch.randn(shape, device=device, requires_grad=True)
    u = torch.randn(shape, device=device, requires_grad=True)
    y = liger.geglu(g, u)
    y.sum().backward()
    assert y.shape == shape and g.grad.shape == shape and u.grad.shape == shape
    dg, du = liger.geglu_bwd(y.detach(), g.detach(), u.detach(), "none")
    assert dg.shape == shape and du.shape == shape


def test_internal_op_matches_autograd():
    g, u = torch.randn(3, 5, 40, dtype=torch.float16), torch.randn(3, 5, 40, dtype=torch.float16)
    dy = torch.randn_like(g)
    for approximate in APPROX:
        _, dg, du = fwd_bwd(g, u, dy, approximate)
        dg2, du2 = liger.geglu_bwd(dy, g, u, approximate)
        assert torch.equal(dg, dg2) and torch.equal(du, du2)


def test_only_one_input_requires_grad():
    g, u = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    liger.geglu(g, u).sum().backward()
    assert g.grad is not None
    g, u = torch.randn(4, 8), torch.randn(4, 8, requires_grad=True)
    liger.geglu(g, u, "none").sum().backward()
    assert u.grad is not None


# ---- autograd: gradcheck, double backward


@pytest.mark.parametrize("approximate", APPROX)
def test_gradcheck(approximate):
    g = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, u: liger.geglu(g, u, approximate), (g, u))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(lambda g, u: liger.geglu(g, u, approximate), (g, u))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    g = torch.randn(4, 16, device=device, requires_grad=True)
    u = torch.randn(4, 16, device=device, requires_grad=True)
    dg, du = torch.autograd.grad(liger.geglu(g, u).square().sum(), (g, u), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(dg.sum() + du.sum(), (g, u))


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype, approximate in ((torch.float32, "tanh"), (torch.bfloat16, "none"), (torch.float16, "tanh")):
        for grad in (False, True):
            g, u = t(3, 5, 64, dtype=dtype, grad=grad), t(3, 5, 64, dtype=dtype, grad=grad)
            samples.append(("geglu", (g, u, approximate), grad))
            samples.append(("geglu", (t(7, 33, dtype=dtype, grad=grad), t(7, 33, dtype=dtype, grad=grad)), grad))
            samples.append(("geglu_bwd", (t(3, 5, 64, dtype=dtype, grad=grad), g, u, approximate), grad))
    samples.append(("geglu", (t(2, 3, 40, grad=True).transpose(0, 1), t(3, 2, 40, grad=True), "none"), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "geglu_bwd" and grad:
        tests = tests[:-1]  # differentiating geglu_bwd must raise: test_geglu_bwd_is_not_differentiable
    opcheck(getattr(liger, name).default, args, test_utils=tests)


def test_geglu_bwd_is_not_differentiable():
    g, u = torch.randn(3, 16), torch.randn(3, 16)
    dy = torch.randn_like(g, requires_grad=True)
    dg, _ = liger.geglu_bwd(dy, g, u, "tanh")
    with pytest.raises(RuntimeError, match="second derivatives"):
        dg.sum().backward()


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def forward(self, g, u):
        return torch.ops.liger.geglu(g * 2.0, u, "none") * 0.5


def liger_nodes(graph):
    return [n for n in graph.nodes if n.target is torch.ops.liger.geglu.default]


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Block()
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=1, max=8192)
    dims = {"g": {0: batch, 1: seq}, "u": {0: batch, 1: seq}}
    ep = torch.export.export(model, (torch.randn(2, 3, 64), torch.randn(2, 3, 64)), dynamic_shapes=dims)
    assert len(liger_nodes(ep.graph)) == 1
    path = tmp_path / "geglu.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    assert len(liger_nodes(loaded.graph)) == 1
    with torch.no_grad():
        for b, s in ((1, 1), (4, 17), (3, 1)):
            g, u = torch.randn(b, s, 64), torch.randn(b, s, 64)
            expected = model(g, u)
            assert torch.equal(ep.module()(g, u), expected)
            assert torch.equal(loaded.module()(g, u), expected)


def test_torchscript_save_load_and_backward(tmp_path):
    config = types.SimpleNamespace(hidden_size=24, intermediate_size=40, hidden_act="gelu_pytorch_tanh")
    model = LigerGEGLUMLP(config)
    scripted = torch.jit.script(model)
    assert "liger::geglu_mlp" in str(scripted.inlined_graph)  # the module runs the whole MLP as one op
    path = tmp_path / "geglu.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x, dy = torch.randn(3, 5, 24), torch.randn(3, 5, 24)
    outputs = []
    for m in (model, loaded):
        xg = x.clone().requires_grad_()
        y = m(xg)
        y.backward(dy)
        outputs.append((y.detach(), xg.grad, dict(m.named_parameters())["gate_proj.weight"].grad))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params(cpu_inductor=True))
def test_compile_fullgraph(device, backend, dynamic):
    def f(g, u):  # scaling by powers of 2 is exact: compiled and eager results must be bitwise equal
        return torch.ops.liger.geglu(g * 2.0, u, "tanh") * 0.5

    cases = []
    for shape in ((2, 5, 64), (3, 9, 64)):
        g, u, dy = (torch.randn(shape, device=device) for _ in range(3))
        cases.append(((g, u), (0, 1), dy))
    check_compile_fullgraph(f, cases, backend, dynamic)


# ---- the Hugging Face module


class HFGemmaMLP(torch.nn.Module):
    """transformers' GemmaMLP (hidden_activation="gelu_pytorch_tanh"), as written there."""

    def __init__(self, config):
        super().__init__()
        self.gate_proj = torch.nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = torch.nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = torch.nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_mlp_loads_hugging_face_state_dict(dtype, device):
    config = types.SimpleNamespace(hidden_size=64, intermediate_size=176, hidden_act="gelu_pytorch_tanh")
    hf = HFGemmaMLP(config).to(device=device, dtype=dtype)
    ours = LigerGEGLUMLP(config).to(device=device, dtype=dtype)
    ours.load_state_dict(hf.state_dict())
    assert [n for n, _ in ours.named_parameters()] == ["gate_proj.weight", "up_proj.weight", "down_proj.weight"]
    assert all(p.bias is None for p in (ours.gate_proj, ours.up_proj, ours.down_proj))
    assert ours.approximate == "tanh"
    x = torch.randn(4, 7, 64, dtype=dtype, device=device)
    with torch.no_grad():
        g, u = hf.gate_proj(x), hf.up_proj(x)
        a = hf.down_proj(F.gelu(g, approximate="tanh") * u)
        b = ours(x)
        # the activation obeys the 2x rule against float64; down_proj then sees inputs within that error
        err = Error("act", dtype)
        err.add(liger.geglu(g, u, "tanh"), eager(g, u, "tanh"), reference(g.double(), u.double(), "tanh"))
        err.check()
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(b, a, rtol=tol, atol=tol * a.abs().max().item())


@pytest.mark.parametrize("attrs,approximate", [
    ({"hidden_act": "gelu_pytorch_tanh"}, "tanh"), ({"hidden_act": "gelu"}, "none"),
    ({"hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh"}, "tanh"),  # Gemma: hidden_activation wins
    ({"hidden_act": "gelu_new"}, "tanh"), ({}, "tanh")])
def test_mlp_activation_from_config(attrs, approximate):
    m = LigerGEGLUMLP(types.SimpleNamespace(hidden_size=8, intermediate_size=16, **attrs))
    assert m.approximate == approximate


def test_mlp_rejects_other_activations():
    with pytest.raises(ValueError, match="activation"):
        LigerGEGLUMLP(types.SimpleNamespace(hidden_size=8, intermediate_size=16, hidden_act="silu"))


# ---- bad inputs


@pytest.mark.parametrize("args,match", [
    ((torch.ones(4, 8, dtype=torch.int32), torch.ones(4, 8, dtype=torch.int32)), "gate must be float32"),
    ((torch.ones(4, 8), torch.ones(4, 9)), r"up must have gate's shape \[4, 8\], got \[4, 9\]"),
    ((torch.ones(4, 8), torch.ones(32)), r"up must have gate's shape \[4, 8\], got \[32\]"),
    ((torch.ones(4, 8), torch.ones(1, 8)), r"up must have gate's shape"),  # no broadcasting
    ((torch.ones(4, 8), torch.ones(4, 8, dtype=torch.bfloat16)), "up must have gate's dtype"),
    ((torch.ones(4, 8), torch.ones(4, 8, device="meta")), "up is on meta but gate is on cpu"),
], ids=["int", "shape", "rank", "broadcast", "dtype", "device"])
def test_bad_inputs(args, match):
    with pytest.raises(RuntimeError, match=match):
        liger.geglu(*args)


def test_bad_approximate():
    with pytest.raises(RuntimeError, match="geglu: approximate must be 'tanh' or 'none', got 'erf'"):
        liger.geglu(torch.ones(2), torch.ones(2), "erf")
    with pytest.raises(RuntimeError, match="geglu_bwd: approximate must be 'tanh' or 'none'"):
        liger.geglu_bwd(torch.ones(2), torch.ones(2), torch.ones(2), "Tanh")


def test_bad_backward_inputs():
    g, u = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="dy must have gate's dtype"):
        liger.geglu_bwd(torch.randn(4, 8, dtype=torch.float64), g, u, "tanh")
    with pytest.raises(RuntimeError, match="dy must have gate's shape"):
        liger.geglu_bwd(torch.randn(3, 8), g, u, "tanh")


# =====================================================================================================
# GPU tests: the CUDA kernels against the float64 reference (computed on the GPU). `pytest -m gpu`.

# Around the block sizes (2048 fp32, 4096 16-bit elements per program): one, partial, exact, one over.
NUMELS = (1, 7, 2047, 2048, 2049, 4095, 4096, 4097, 8192 * 3 + 5, 1 << 20, 8192 * 14336 // 16)


@gpu
@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("approximate", APPROX)
def test_cuda_matches_float64_reference(approximate, dtype, numel):
    g, u, dy = (torch.randn(numel, dtype=dtype, device="cuda") * s for s in (3, 1, 1))
    first = [t.clone() for t in fwd_bwd(g, u, dy, approximate)]
    poison_freed_blocks((numel, dtype), copies=3)
    y, dg, du = fwd_bwd(g, u, dy, approximate)
    for a, b in zip(first, (y, dg, du)):
        assert torch.equal(a, b), "not deterministic or reads a poisoned block"
    with torch.no_grad():
        assert torch.equal(liger.geglu(g, u, approximate), y)
    check_against_reference(g, u, dy, y, dg, du, approximate)


@gpu
@pytest.mark.parametrize("shape", ((8192, 4096), (3, 5, 11008), (2, 3, 4, 520)))
def test_cuda_llm_shapes(shape):
    for dtype in CUDA_DTYPES:
        for approximate in APPROX:
            g, u, dy = (torch.randn(shape, dtype=dtype, device="cuda") for _ in range(3))
            check_against_reference(g, u, dy, *fwd_bwd(g, u, dy, approximate), approximate,
                                    what=f"{dtype_id(dtype)}/{approximate}: ")


def make_cuda_pair(layout, dtype):
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device="cuda") * 3

    return {
        "transposed": lambda: (randn(64, 33, 100).transpose(0, 1), randn(33, 100, 64).transpose(1, 2)),
        "fused_chunks": lambda: randn(33, 2 * 4096).chunk(2, dim=-1),
        "storage_offset": lambda: (randn(33 * 4096 + 1)[1:].view(33, 4096), randn(33 * 4096 + 3)[3:].view(33, 4096)),
        "expanded": lambda: (randn(1, 4096).expand(33, 4096), randn(33, 1).expand(33, 4096)),
        "one_unaligned": lambda: (randn(33 * 4096), randn(33 * 4096 + 1)[1:]),
    }[layout]()


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", ("transposed", "fused_chunks", "storage_offset", "expanded", "one_unaligned"))
def test_cuda_strided_unaligned_and_expanded_inputs(layout, dtype):
    g, u = make_cuda_pair(layout, dtype)
    dy = torch.randn(g.shape, dtype=dtype, device="cuda")
    for approximate in APPROX:
        check_against_reference(g, u, dy, *fwd_bwd(g, u, dy, approximate), approximate, what=f"{layout}: ")


@gpu
def test_cuda_expanded_and_transposed_incoming_gradients():
    g, u = (torch.randn(6, 9, 4096, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    grads = {"sum": torch.ones((), dtype=g.dtype, device="cuda").expand_as(g),
             "transposed": torch.randn(9, 6, 4096, dtype=g.dtype, device="cuda").transpose(0, 1)}
    for name, dy in grads.items():
        gg, ug = g.clone().requires_grad_(), u.clone().requires_grad_()
        y = liger.geglu(gg, ug)
        if name == "sum":
            y.sum().backward()
        else:
            y.backward(dy)
        check_against_reference(g, u, dy, y.detach(), gg.grad, ug.grad, "tanh", what=f"{name}: ")


@gpu
def test_cuda_more_than_2_31_elements():
    numel = 2**31 + 4096 * 3 + 5  # past INT32_MAX, with a partial last block
    g, u, dy = (torch.randn(numel, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    y, dg, du = fwd_bwd(g, u, dy, "tanh")
    check_against_reference(g, u, dy, y, dg, du, "tanh")


@gpu
def test_cuda_graph_capture_and_replay():
    g = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)

    def step():
        y = liger.geglu(g, u, "none")
        return (y,) + torch.autograd.grad(y, (g, u), dy)

    check_cuda_graph(step, (g, u, dy), lambda *new: fwd_bwd(*new, "none"))


@gpu
def test_cuda_bad_inputs():
    g = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="up is on cpu but gate is on cuda"):
        liger.geglu(g, torch.randn(4, 8))
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.geglu(g.double(), g.double())
