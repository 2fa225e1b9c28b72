"""Tests of torch.ops.liger.swiglu_mlp and geglu_mlp (the Llama- and Gemma-style MLPs as one op each) and of their
swiglu_bwd_inplace / geglu_bwd_inplace.

Numerics follow FlashAttention's rule (see test_swiglu.py): the op's error against a float64 reference written
here may be at most twice the error of the same MLP computed by eager PyTorch (three F.linear around
F.silu(gate) * up, or F.gelu(gate, approximate) * up) at the same precision, plus FLOOR_ULPS ulps of the result's
magnitude. The op's point is
memory: its backward recomputes the SwiGLU product from the saved gate and up and overwrites them with their
gradients, which the tests check by counting saved tensors (CPU) and by the allocator (GPU).
"""
import functools
import types

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerGEGLUMLP, LigerSwiGLUMLP
from _shared import (MaxError, check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks)

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 4  # each of the three products may round its sum differently from eager's
Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)


GATES = ("silu", "tanh", "none")  # swiglu_mlp, geglu_mlp with approximate="tanh" and "none"


# ---- float64 reference and eager baseline (independent of the op)


def act_reference(g, gate):
    """silu(g) = g / (1 + exp(-g)); gelu: 0.5 g (1 + erf(g / sqrt 2)), or its tanh form."""
    if gate == "silu":
        return g / (1 + torch.exp(-g))
    if gate == "none":
        return 0.5 * g * (1 + torch.erf(g / 2 ** 0.5))
    return 0.5 * g * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (g + 0.044715 * g ** 3)))


def reference(x, wg, wu, wd, gate="silu"):
    """The definition: (act(x wg^T) * (x wu^T)) wd^T; wu None: wg holds the gate's rows, then the up's."""
    if wu is None:
        return (act_reference(x @ wg[:wg.shape[0] // 2].T, gate) * (x @ wg[wg.shape[0] // 2:].T)) @ wd.T
    return (act_reference(x @ wg.T, gate) * (x @ wu.T)) @ wd.T


def eager(x, wg, wu, wd, gate="silu"):
    """What Hugging Face's LlamaMLP / GemmaMLP compute: down_proj(act_fn(gate_proj(x)) * up_proj(x)); wu None:
    Phi3MLP's gate_up_proj(x).chunk(2, -1)."""
    if wu is None:
        g, u = F.linear(x, wg).chunk(2, dim=-1)
    else:
        g, u = F.linear(x, wg), F.linear(x, wu)
    act = F.silu(g) if gate == "silu" else F.gelu(g, approximate=gate)
    return F.linear(act * u, wd)


def mlp_op(gate):
    """The op under test as f(x, wg, wu, wd)."""
    if gate == "silu":
        return liger.swiglu_mlp
    return functools.partial(liger.geglu_mlp, approximate=gate)


def make_inputs(dtype, device, lead=(3, 7), hidden=48, inter=72, out=None, layout="contiguous", packed=False):
    """x [*lead, hidden] and the three weights, scaled so that gate spans both tails of silu; packed: [x, the gate
    and up weights as one [2 * inter, hidden], None, the down weight]."""
    def randn(*s):
        return torch.randn(*s, dtype=torch.float64, device=device)

    out = hidden if out is None else out
    x = randn(*lead, hidden)
    if layout == "transposed" and len(lead) == 2:
        x = randn(lead[1], lead[0], hidden).transpose(0, 1)
    wg = randn(inter, hidden) * (3.0 / hidden ** 0.5)
    wu = randn(inter, hidden) / hidden ** 0.5
    wd = randn(out, inter) / inter ** 0.5
    if packed:
        return [x.to(dtype), torch.cat([wg, wu]).to(dtype), None, wd.to(dtype)]
    return [t.to(dtype) for t in (x, wg, wu, wd)]


def fwd_bwd(op, inputs, dy, retain=False):
    """(y, dx, dwg, dwu, dwd) of op through autograd (twice from one graph with retain=True: the second's); an
    input given as None (up_weight of a packed weight) passes as None and gets gradient None."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    tensors = [t for t in leaves if t is not None]
    y = op(*leaves)
    grads = iter(torch.autograd.grad(y, tensors, dy, retain_graph=retain))
    if retain:
        grads = iter(torch.autograd.grad(y, tensors, dy))
    return [y.detach()] + [None if t is None else next(grads) for t in leaves]


def check_against_reference(inputs, dy, got, gate="silu", what=""):
    names = ("y", "dx", "dgate_weight", "dup_weight", "ddown_weight")
    for t, like in zip(got, [dy] + list(inputs)):
        assert (t is None) == (like is None)
        assert t is None or (t.shape == like.shape and t.dtype == like.dtype and torch.isfinite(t).all())
    ref = fwd_bwd(functools.partial(reference, gate=gate), [None if t is None else t.double() for t in inputs],
                  dy.double())
    base = fwd_bwd(functools.partial(eager, gate=gate), inputs, dy)
    for name, g, b, r in zip(names, got, base, ref):
        if g is None:
            continue
        e = Error(name, inputs[0].dtype)
        e.add(g, b, r)
        e.check(what)


# ---- numerics, CPU and CUDA

SHAPES = {
    "tokens": dict(lead=(3, 7)),
    "one_token": dict(lead=(1,)),
    "1d": dict(lead=()),
    "odd_sizes": dict(lead=(5, 3), hidden=33, inter=37, out=19),
    "transposed_x": dict(lead=(4, 6), layout="transposed"),
    "packed_gate_up": dict(lead=(3, 7), packed=True),
}
CUDA_SHAPES = {**SHAPES, "llama_like": dict(lead=(2, 301), hidden=512, inter=1376),
               "phi3_like_packed": dict(lead=(2, 129), hidden=384, inter=1024, packed=True),
               "many_tokens": dict(lead=(4099,), hidden=64, inter=256)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", GATES)
def test_matches_float64_reference(gate, dtype, shape):
    inputs = make_inputs(dtype, "cpu", **SHAPES[shape])
    dy = torch.randn(*inputs[0].shape[:-1], inputs[3].shape[0], dtype=dtype)
    got = fwd_bwd(mlp_op(gate), inputs, dy)
    check_against_reference(inputs, dy, got, gate)
    with torch.no_grad():
        assert torch.equal(mlp_op(gate)(*inputs), got[0])  # the no-grad path: the same values


@gpu
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", GATES)
def test_cuda_matches_float64_reference(gate, dtype, shape):
    inputs = make_inputs(dtype, "cuda", **CUDA_SHAPES[shape])
    dy = torch.randn(*inputs[0].shape[:-1], inputs[3].shape[0], dtype=dtype, device="cuda")
    tokens = dy.numel() // dy.shape[-1]
    poison_freed_blocks(*[(t.numel(), dtype) for t in (dy, *inputs) if t is not None], (tokens * inputs[1].shape[0], dtype),
                        copies=2)
    got = fwd_bwd(mlp_op(gate), inputs, dy)
    check_against_reference(inputs, dy, got, gate)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("packed", (False, True), ids=("separate", "packed"))
def test_in_place_and_retained_backwards_agree(gate, device, dtype, packed):
    """A freed graph's backward overwrites gate and up; a retained graph's must not, and both give one result."""
    inputs = make_inputs(dtype, device, lead=(2, 65), hidden=64, inter=160, packed=packed)
    dy = torch.randn(2, 65, 64, dtype=dtype, device=device)
    once = fwd_bwd(mlp_op(gate), inputs, dy)
    twice = fwd_bwd(mlp_op(gate), inputs, dy, retain=True)  # the second backward of one graph
    for a, b in zip(once, twice):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("gate", GATES)
def test_saves_gate_and_up_but_not_their_product(gate):
    """What autograd keeps for the backward: x, the weights, gate and up; the modular MLP also keeps the product."""
    inter = 72

    def saved_intermediates(f):
        shapes = []

        def pack(t):
            shapes.append(tuple(t.shape))
            return t

        inputs = [t.requires_grad_() for t in make_inputs(torch.float32, "cpu", lead=(3, 7), inter=inter)]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = f(*inputs)
        y.sum().backward()
        return sorted(s for s in shapes if s == (3, 7, inter) or s == (21, inter))

    assert len(saved_intermediates(mlp_op(gate))) == 2
    assert len(saved_intermediates(lambda x, wg, wu, wd: F.linear(liger.swiglu(F.linear(x, wg), F.linear(x, wu)),
                                                                  wd))) == 3


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("packed", (False, True), ids=("separate", "packed"))
def test_gradcheck_and_no_second_derivative(gate, packed):
    x, wg, wu, wd = make_inputs(torch.float64, "cpu", lead=(2, 3), hidden=6, inter=10, packed=packed)
    inputs = [t.requires_grad_() for t in (x, wg, wd)] + ([] if packed else [wu.requires_grad_()])

    def f(x, wg, wd, *wu):
        return mlp_op(gate)(x, wg, wu[0] if wu else None, wd)

    assert torch.autograd.gradcheck(f, inputs)
    dx = torch.autograd.grad(f(*inputs).square().sum(), inputs[0], create_graph=True)[0]
    with pytest.raises(RuntimeError, match="second derivatives"):
        dx.sum().backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("needs", ((0,), (1, 2, 3), (0, 1), (3,)), ids=str)
def test_gradients_of_a_subset(device, needs):
    """A frozen weight (LoRA) or a frozen input gets no gradient; the others the full MLP's."""
    inputs = make_inputs(torch.float32, device, lead=(4, 9), hidden=32, inter=48)
    dy = torch.randn(4, 9, 32, device=device)
    full = fwd_bwd(liger.swiglu_mlp, inputs, dy)
    leaves = [t.clone().requires_grad_(i in needs) for i, t in enumerate(inputs)]
    liger.swiglu_mlp(*leaves).backward(dy)
    for i, t in enumerate(leaves):
        if i in needs:
            torch.testing.assert_close(t.grad, full[1 + i], rtol=1e-5, atol=1e-5)
        else:
            assert t.grad is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lead", ((0,), (2, 0)), ids=str)
def test_zero_tokens(device, lead):
    inputs = [t.requires_grad_() for t in make_inputs(torch.float32, device, lead=lead, hidden=16, inter=24)]
    y = liger.swiglu_mlp(*inputs)
    assert y.shape == (*lead, 16)
    y.sum().backward()
    assert inputs[0].grad.shape == inputs[0].shape
    for w in inputs[1:]:
        assert torch.equal(w.grad, torch.zeros_like(w))


def test_python_wrappers_call_the_ops():
    inputs = make_inputs(torch.bfloat16, "cpu")
    assert torch.equal(liger_aot.ops.swiglu_mlp(*inputs), liger.swiglu_mlp(*inputs))
    assert torch.equal(liger_aot.ops.geglu_mlp(*inputs), liger.geglu_mlp(*inputs, "tanh"))
    assert torch.equal(liger_aot.ops.geglu_mlp(*inputs, "none"), liger.geglu_mlp(*inputs, "none"))


# ---- swiglu_bwd_inplace, geglu_bwd_inplace


def inplace_case(dtype, device, n=300, offset=0):
    """dy, gate, up of n elements each, starting `offset` elements into their storage (unaligned for offset 1)."""
    def randn():
        return (torch.randn(n + offset, dtype=dtype, device=device) * 3)[offset:]
    return randn(), randn(), randn()


def gate_ops(gate):
    """(forward, functional backward, in-place backward) of the gate's elementwise op, each f(tensors...)."""
    if gate == "silu":
        return liger.swiglu, liger.swiglu_bwd, liger.swiglu_bwd_inplace
    return (functools.partial(liger.geglu, approximate=gate), functools.partial(liger.geglu_bwd, approximate=gate),
            functools.partial(liger.geglu_bwd_inplace, approximate=gate))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("n,offset", ((300, 0), (4097, 1), (1, 0)), ids=str)
@pytest.mark.parametrize("gate", GATES)
def test_bwd_inplace_writes_h_and_gradients(gate, device, dtype, n, offset):
    """The in-place pass gives what the forward and the functional backward give, bitwise (one formula each)."""
    fwd, bwd, bwd_inplace = gate_ops(gate)
    dy, g, u = inplace_case(dtype, device, n, offset)
    h = fwd(g, u)
    dg, du = bwd(dy, g, u)
    versions = [t._version for t in (dy, g, u)]
    bwd_inplace(dy, g, u)
    assert torch.equal(dy, h) and torch.equal(g, dg) and torch.equal(u, du)
    assert [t._version for t in (dy, g, u)] == [v + 1 for v in versions]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gate", GATES)
def test_bwd_inplace_rejects_bad_inputs(gate, device):
    bwd_inplace = gate_ops(gate)[2]
    dy, g, u = inplace_case(torch.float32, device)
    with pytest.raises(RuntimeError, match="must not share memory \\(gate and up do\\)"):
        bwd_inplace(dy, g, g)
    with pytest.raises(RuntimeError, match="gate is overwritten, so its elements must not overlap"):
        bwd_inplace(dy[:5], g[:1].expand(5), u[:5])
    with pytest.raises(RuntimeError, match="must have gate's shape"):
        bwd_inplace(dy[:-1], g, u)
    with pytest.raises(RuntimeError, match="not differentiable"):
        bwd_inplace(dy.clone().requires_grad_(), g, u)
    if device == "cuda":
        a, b, c = (torch.randn(8, 6, device=device).t() for _ in range(3))
        with pytest.raises(RuntimeError, match="must be contiguous"):
            bwd_inplace(a, b, c)


# ---- errors


@pytest.mark.parametrize("case,match", [
    ("weight_dtype", "gate_weight must have x's dtype"),
    ("hidden", "gate_weight must be \\[intermediate, hidden\\]"),
    ("inter", "down_weight must be \\[out, intermediate\\]"),
    ("up_shape", "up_weight must have gate_weight's shape"),
    ("weight_1d", "must be 2-D"),
    ("x_0d", "at least one dimension"),
    ("x_int", "x must be float32, bfloat16 or float16"),
    ("approximate", "geglu_mlp: approximate must be 'tanh' or 'none', got 'erf'"),
    ("packed_odd", "packed gate_up weight \\[2 \\* intermediate, hidden\\] \\(gate rows first\\), so its row count "
                   "must be even, got \\[23, 8\\]"),
    ("packed_inter", "down_weight must be \\[out, intermediate\\] with intermediate = 12, got \\[8, 11\\]"),
])
def test_bad_inputs(case, match):
    x, wg, wu, wd = make_inputs(torch.float32, "cpu", lead=(2, 3), hidden=8, inter=12)
    args = {
        "weight_dtype": (x, wg.double(), wu, wd),
        "hidden": (x[..., :7], wg, wu, wd),
        "inter": (x, wg, wu, wd[:, :11]),
        "up_shape": (x, wg, wu[:11], wd),
        "weight_1d": (x, wg, wu, wd[0]),
        "x_0d": (x[0, 0, 0], wg, wu, wd),
        "x_int": (x.long(), wg.long(), wu.long(), wd.long()),
        "approximate": (x, wg, wu, wd),
        "packed_odd": (x, torch.cat([wg, wu])[:23], None, wd),
        "packed_inter": (x, torch.cat([wg, wu]), None, wd[:, :11]),
    }[case]
    with pytest.raises(RuntimeError, match=match):
        if case == "approximate":
            liger.geglu_mlp(*args, "erf")
        else:
            liger.swiglu_mlp(*args)


# ---- autocast, modules


@pytest.mark.parametrize("gate", GATES)
def test_autocast_casts_like_nn_linear(gate):
    x, wg, wu, wd = make_inputs(torch.float32, "cpu", lead=(3, 5), hidden=32, inter=40)
    leaves = [[t.clone().requires_grad_() for t in (x, wg, wu, wd)] for _ in range(2)]
    act = gate_ops(gate)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mlp_op(gate)(*leaves[0])
        y_mod = F.linear(act(F.linear(leaves[1][0], leaves[1][1]), F.linear(leaves[1][0], leaves[1][2])),
                         leaves[1][3])
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_mod)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_mod.backward(dy)
    for a, b in zip(*leaves):
        assert a.grad.dtype == torch.float32
        torch.testing.assert_close(a.grad, b.grad, rtol=2e-2, atol=2e-2)


def mlp_module(bias=False, gate="silu"):
    act = {"silu": "silu", "tanh": "gelu_pytorch_tanh", "none": "gelu"}[gate]
    config = types.SimpleNamespace(hidden_size=24, intermediate_size=40, hidden_act=act)
    torch.manual_seed(0)
    m = LigerSwiGLUMLP(config) if gate == "silu" else LigerGEGLUMLP(config)
    if bias:
        m.up_proj = torch.nn.Linear(24, 40, bias=True)
    return m


def count_saved(m, x):
    n = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: n.append(t) or t, lambda t: t):
        y = m(x)
    return y, len(n)


@pytest.mark.parametrize("gate", GATES)
def test_module_takes_the_fused_op_only_for_plain_projections(gate):
    x = torch.randn(2, 5, 24, requires_grad=True)
    m = mlp_module(gate=gate)
    y_fused, saved_fused = count_saved(m, x)
    calls = []
    handle = m.gate_proj.register_forward_hook(lambda *a: calls.append(1))
    y_mod, saved_mod = count_saved(m, x)  # a hooked projection: the modules are called, the hook runs
    handle.remove()
    assert calls == [1] and saved_mod > saved_fused
    torch.testing.assert_close(y_fused, y_mod, rtol=1e-5, atol=1e-6)
    mb = mlp_module(bias=True, gate=gate)  # a projection with a bias: the modules
    _, saved_bias = count_saved(mb, x)
    assert saved_bias > saved_fused


@pytest.mark.parametrize("gate", GATES)
def test_fused_gate_up_forward_takes_the_packed_op(gate):
    """Phi-3 / GLM-4's patched MLP (one gate_up_proj) runs the packed op when its projections are plain, and what a
    module call computes otherwise; the packed weight's gradient matches the modular one's."""
    from liger_aot.transformers.forwards import fused_gate_up_mlp_forward

    mlp = torch.nn.Module()
    mlp.gate_up_proj, mlp.down_proj = torch.nn.Linear(24, 80, bias=False), torch.nn.Linear(40, 24, bias=False)
    mlp._liger_act = gate
    x = torch.randn(2, 5, 24, requires_grad=True)
    y_fused, saved_fused = count_saved(lambda t: fused_gate_up_mlp_forward(mlp, t), x)
    y_fused.sum().backward()
    g_fused = mlp.gate_up_proj.weight.grad
    mlp.gate_up_proj.weight.grad = None
    handle = mlp.down_proj.register_forward_hook(lambda *a: None)
    y_mod, saved_mod = count_saved(lambda t: fused_gate_up_mlp_forward(mlp, t), x)
    handle.remove()
    y_mod.sum().backward()
    assert saved_mod > saved_fused
    torch.testing.assert_close(y_fused, y_mod, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fused, mlp.gate_up_proj.weight.grad, rtol=1e-5, atol=1e-5)


# ---- opcheck, export, compile


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for grad in (False, True):
            inputs = [t.requires_grad_(grad) for t in make_inputs(dtype, device, lead=(3, 5), hidden=16, inter=24)]
            samples.append(("swiglu_mlp", tuple(inputs), grad))
            samples.append(("geglu_mlp", (*inputs, "none" if grad else "tanh"), grad))
        samples.append(("swiglu_bwd_inplace", inplace_case(dtype, device, 64), False))
        samples.append(("geglu_bwd_inplace", (*inplace_case(dtype, device, 64), "tanh"), False))
    inputs = [t.requires_grad_() for t in make_inputs(torch.float32, device, lead=(4, 6), layout="transposed",
                                                      hidden=16, inter=24)]
    samples.append(("swiglu_mlp", tuple(inputs), True))
    x, w, _, wd = make_inputs(torch.bfloat16, device, lead=(3, 5), hidden=16, inter=24, packed=True)
    samples.append(("swiglu_mlp", (x.requires_grad_(), w.requires_grad_(), None, wd.requires_grad_()), True))
    samples.append(("geglu_mlp", (x, w, None, wd, "tanh"), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args,
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))


class Block(torch.nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.gate = gate
        self.w = torch.nn.ParameterList(make_inputs(torch.float32, "cpu", hidden=32, inter=48)[1:])

    def forward(self, x):
        if self.gate == "silu":
            return liger_aot.ops.swiglu_mlp(x, *self.w)
        return liger_aot.ops.geglu_mlp(x, *self.w, self.gate)


@pytest.mark.parametrize("gate", GATES)
def test_export_dynamic_tokens(gate, tmp_path):
    model = Block(gate)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=1, max=8192)
    ep = torch.export.export(model, (torch.randn(2, 3, 32),), dynamic_shapes={"x": {0: batch, 1: seq}})
    path = tmp_path / "swiglu_mlp.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for b, s in ((1, 1), (4, 17), (3, 1)):
            x = torch.randn(b, s, 32)
            expected = model(x)
            torch.testing.assert_close(ep.module()(x), expected, rtol=0, atol=0)
            torch.testing.assert_close(loaded.module()(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
@pytest.mark.parametrize("gate", GATES)
def test_compile_fullgraph(gate, device, backend, dynamic):
    op = mlp_op(gate)

    def f(x, wg, wu, wd):  # scaling by powers of 2 is exact
        return op(x * 2.0, wg, wu, wd) * 0.5

    cases = []
    for lead in ((2, 5), (3, 9)):
        x, wg, wu, wd = make_inputs(torch.float32, device, lead=lead, hidden=32, inter=48)
        cases.append(((x, wg, wu, wd), (0, 1, 2, 3), torch.randn(*lead, 32, device=device)))

    def close(a, b):  # compiled graphs may pick other matrix-product kernels
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    check_compile_fullgraph(f, cases, backend, dynamic, compare=None if device == "cpu" else close)


# ---- GPU: CUDA graphs, memory, > 2^31 elements


@gpu
def test_cuda_graph():
    inputs = [t.requires_grad_() for t in make_inputs(torch.bfloat16, "cuda", lead=(4, 33), hidden=64, inter=96)]
    dy = torch.randn(4, 33, 64, dtype=torch.bfloat16, device="cuda")

    def step():
        for t in inputs:
            t.grad = None
        y = liger.swiglu_mlp(*inputs)
        y.backward(dy)
        return [y.detach()] + [t.grad for t in inputs]

    def expected(*new):
        return fwd_bwd(liger.swiglu_mlp, new, dy)

    check_cuda_graph(step, [t.data for t in inputs], expected,
                     fresh=lambda: make_inputs(torch.bfloat16, "cuda", lead=(4, 33), hidden=64, inter=96))


@gpu
def test_memory_saved_and_backward_peak():
    """The fused MLP keeps tokens x intermediate fewer elements after its forward than the modular one, and its
    backward peaks no higher (Liger-Kernel's modular MLP with an in-place SwiGLU backward peaks at d h)."""
    tokens, hidden, inter = 8192, 1024, 4096
    inputs = [t.requires_grad_() for t in make_inputs(torch.bfloat16, "cuda", lead=(tokens,), hidden=hidden,
                                                      inter=inter)]
    dy = torch.randn(tokens, hidden, dtype=torch.bfloat16, device="cuda")

    def modular(x, wg, wu, wd):
        return F.linear(liger.swiglu(F.linear(x, wg), F.linear(x, wu)), wd)

    for f in (liger.swiglu_mlp, modular):  # warm-up: cuBLAS's workspace is allocated by the first products
        f(*inputs).backward(dy)
    held, peak = {}, {}
    for name, f in (("fused", liger.swiglu_mlp), ("modular", modular)):
        for t in inputs:
            t.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        y = f(*inputs)
        held[name] = torch.cuda.memory_allocated() - base
        torch.cuda.reset_peak_memory_stats()
        y.backward(dy)
        del y
        peak[name] = torch.cuda.max_memory_allocated() - base
    assert held["modular"] - held["fused"] == tokens * inter * 2
    assert peak["fused"] <= peak["modular"] - tokens * inter * 2, peak


@gpu
@pytest.mark.parametrize("gate", GATES)
def test_bwd_inplace_above_2_31_elements(gate):
    fwd, bwd, bwd_inplace = gate_ops(gate)
    n = 2 ** 31 + 4097
    torch.manual_seed(0)
    dy, g, u = (torch.randn(n, dtype=torch.bfloat16, device="cuda") for _ in range(3))
    tail = slice(n - 8192, n)  # the 64-bit variant's last blocks, and a head check
    want = [(fwd(g[s], u[s]), *bwd(dy[s], g[s], u[s])) for s in (slice(0, 8192), tail)]
    bwd_inplace(dy, g, u)
    for s, (h, dg, du) in zip((slice(0, 8192), tail), want):
        assert torch.equal(dy[s], h) and torch.equal(g[s], dg) and torch.equal(u[s], du)
