"""Tests of torch.ops.liger.relu_squared (and its internal relu_squared_bwd).

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here may be at
most twice the error of the same formula computed by eager PyTorch at the same precision, plus FLOOR_ULPS
ulps of the result's magnitude. CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import functools

import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot.nn import LigerReLUSquared
from _shared import MaxError, check_compile_fullgraph, check_cuda_graph, dtype_id, opcheck_params

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
FLOOR_ULPS = 2  # the op and the baseline may each round a final result once the other way


# ---- float64 reference and eager baseline (independent of the op)


def reference(x):
    """The definition (float64 here): max(x, 0)^2."""
    return torch.where(x > 0, x * x, torch.zeros_like(x))


def eager(x):
    """What a user writes today (Primer / Nemotron): torch.relu(x) ** 2 at x's precision."""
    return torch.square(torch.relu(x))


Error = functools.partial(MaxError, floor_ulps=FLOOR_ULPS)  # per-output error of the 2x rule


def check_output(t, like):
    assert t.shape == like.shape and t.dtype == like.dtype and t.is_contiguous()
    assert torch.isfinite(t).all(), "non-finite values in the op's output"


def check_against_reference(x, dy, y, dx, *, chunk_elems=1 << 26, what=""):
    """y and dx against float64 over flat chunks (elementwise: > 2^31 elements fit in memory)."""
    check_output(y, x)
    check_output(dx, x)
    err_y, err_dx = Error("y", x.dtype), Error("dx", x.dtype)
    flat = [t.reshape(-1) for t in (x, dy, y, dx)]
    for start in range(0, flat[0].numel(), chunk_elems):
        xc, dyc, yc, dxc = (t[start:start + chunk_elems] for t in flat)
        x64 = xc.detach().double().requires_grad_()
        y64 = reference(x64)
        xe = xc.detach().clone().requires_grad_()
        ye = eager(xe)
        err_y.add(yc, ye, y64)
        err_dx.add(dxc, torch.autograd.grad(ye, xe, dyc)[0], torch.autograd.grad(y64, x64, dyc.double())[0])
    err_y.check(what)
    err_dx.check(what)


def fwd_bwd(x, dy):
    xg = x.detach().requires_grad_()
    y = liger.relu_squared(xg)
    return y.detach(), torch.autograd.grad(y, xg, dy)[0]


# ---- CPU numerics


def make_x(layout, dtype, device="cpu"):
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device=device) * 4

    return {
        "0d": lambda: randn(()),
        "1d": lambda: randn(37),
        "odd": lambda: randn(3, 7, 131),
        "transposed": lambda: randn(6, 4, 96).transpose(0, 1),
        "strided": lambda: randn(4, 128)[:, ::2],
        "storage_offset": lambda: randn(1 + 4 * 40)[1:].view(4, 40),
        "expanded": lambda: randn(1, 64).expand(5, 64),
    }[layout]()


@pytest.mark.parametrize("layout", ("0d", "1d", "odd", "transposed", "strided", "storage_offset", "expanded"))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, layout):
    x = make_x(layout, dtype)
    dy = torch.randn(x.shape, dtype=dtype)
    y, dx = fwd_bwd(x, dy)
    check_against_reference(x, dy, y, dx)
    assert torch.equal(liger.relu_squared(x), y)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_exact_where_representable(dtype):
    # relu(x)^2 of a 16-bit value is exact in fp32, then rounded once: eager computes the same.
    x = torch.tensor([-3.0, -0.0, 0.0, 1e-3, 0.5, 2.0, 3.0, 100.0], dtype=dtype)
    assert torch.equal(liger.relu_squared(x), eager(x))


def test_python_wrapper_and_module_call_the_op():
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    assert torch.equal(liger_aot.ops.relu_squared(x), liger.relu_squared(x))
    m = LigerReLUSquared()
    assert not list(m.parameters()) and torch.equal(m(x), liger.relu_squared(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0,), (0, 64), (2, 0, 64)))
def test_zero_size(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = liger.relu_squared(x)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    assert liger.relu_squared_bwd(y.detach(), x.detach()).shape == shape


def test_internal_op_matches_autograd():
    x = torch.randn(3, 5, 40, dtype=torch.float16)
    dy = torch.randn_like(x)
    assert torch.equal(fwd_bwd(x, dy)[1], liger.relu_squared_bwd(dy, x))


def test_gradcheck():
    x = torch.randn(3, 7, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, 0.5, x).requires_grad_()  # away from the kink at 0
    assert torch.autograd.gradcheck(liger.relu_squared, (x,))
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.gradgradcheck(liger.relu_squared, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    x = torch.randn(4, 16, device=device, requires_grad=True)
    (dx,) = torch.autograd.grad(liger.relu_squared(x).sum(), (x,), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(dx.sum(), (x,))


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype in CUDA_DTYPES:
        for grad in (False, True):
            samples.append(("relu_squared", (t(3, 5, 64, dtype=dtype, grad=grad),), grad))
            samples.append(("relu_squared", (t(7, 33, dtype=dtype, grad=grad),), grad))
            samples.append(("relu_squared_bwd", (t(3, 64, dtype=dtype, grad=grad), t(3, 64, dtype=dtype)), grad))
    samples.append(("relu_squared", (t(2, 3, 40, grad=True).transpose(0, 1),), True))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if name == "relu_squared_bwd" and grad:
        tests = tests[:-1]  # differentiating relu_squared_bwd must raise (test_double_backward_raises)
    opcheck(getattr(liger, name).default, args, test_utils=tests)


class Block(torch.nn.Module):
    def forward(self, x):
        return torch.ops.liger.relu_squared(x * 2.0) * 0.25


def test_export_dynamic_batch_and_seq(tmp_path):
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
    ep = torch.export.export(Block(), (torch.randn(2, 3, 64),), dynamic_shapes=dims)
    path = tmp_path / "relu_squared.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    for graph in (ep.graph, loaded.graph):
        assert [n for n in graph.nodes if n.target is torch.ops.liger.relu_squared.default]
    with torch.no_grad():
        for b, s in ((1, 1), (4, 17), (3, 1)):
            x = torch.randn(b, s, 64)
            assert torch.equal(ep.module()(x), Block()(x))
            assert torch.equal(loaded.module()(x), Block()(x))


def test_torchscript_save_load_and_backward(tmp_path):
    scripted = torch.jit.script(torch.nn.Sequential(LigerReLUSquared()))
    assert "liger::relu_squared" in str(scripted.inlined_graph)
    scripted.save(str(tmp_path / "relu_squared.pt"))
    loaded = torch.jit.load(str(tmp_path / "relu_squared.pt"))
    x, dy = torch.randn(3, 48), torch.randn(3, 48)
    xg = x.clone().requires_grad_()
    y = loaded(xg)
    y.backward(dy)
    assert torch.equal(y.detach(), liger.relu_squared(x)) and torch.equal(xg.grad, liger.relu_squared_bwd(dy, x))


@pytest.mark.parametrize("device,backend,dynamic", [
    pytest.param("cpu", "aot_eager", False), pytest.param("cpu", "aot_eager", True),
    pytest.param("cpu", "inductor", None, marks=pytest.mark.slow), pytest.param("cuda", "inductor", None, marks=gpu)])
def test_compile_fullgraph(device, backend, dynamic):
    def f(x):  # scaling by powers of 2 is exact: compiled and eager results must be bitwise equal
        return torch.ops.liger.relu_squared(x * 2.0) * 0.25

    check_compile_fullgraph(f, [((torch.randn(shape, device=device),), (0,), torch.randn(shape, device=device))
                                for shape in ((2, 5, 64), (3, 9, 64))], backend, dynamic)


def test_bad_inputs():
    with pytest.raises(RuntimeError, match="relu_squared: x must be float32, bfloat16 or float16"):
        liger.relu_squared(torch.ones(4, dtype=torch.int64))
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="dy must have x's dtype"):
        liger.relu_squared_bwd(x.double(), x)
    with pytest.raises(RuntimeError, match=r"dy must have x's shape \[4, 8\], got \[4, 7\]"):
        liger.relu_squared_bwd(x[:, :7], x)
    with pytest.raises(RuntimeError, match="dy is on meta but x is on cpu"):
        liger.relu_squared_bwd(x.to("meta"), x)


# =====================================================================================================
# GPU tests: `pytest -m gpu`.

# Around the block sizes (2048 fp32, 4096 16-bit elements per program): one, partial, exact, one over.
NUMELS = (1, 7, 2047, 2048, 2049, 4095, 4096, 4097, 8192 * 3 + 5, 1 << 20, 8192 * 16384)


@gpu
@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, numel):
    x, dy = torch.randn(numel, dtype=dtype, device="cuda") * 4, torch.randn(numel, dtype=dtype, device="cuda")
    first = [t.clone() for t in fwd_bwd(x, dy)]
    blocks = [torch.full((numel,), float("nan"), dtype=dtype, device="cuda") for _ in range(3)]
    del blocks  # outputs allocated next start as NaN wherever a kernel fails to write
    y, dx = fwd_bwd(x, dy)
    assert torch.equal(first[0], y) and torch.equal(first[1], dx)
    with torch.no_grad():
        assert torch.equal(liger.relu_squared(x), y)
    check_against_reference(x, dy, y, dx)


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", ("transposed", "storage_offset", "expanded", "strided"))
def test_cuda_strided_unaligned_and_expanded_inputs(layout, dtype):
    def randn(*s):
        return torch.randn(*s, dtype=dtype, device="cuda") * 4

    x = {"transposed": lambda: randn(64, 33, 100).transpose(0, 1),
         "storage_offset": lambda: randn(33 * 8192 + 1)[1:].view(33, 8192),
         "expanded": lambda: randn(1, 8192).expand(33, 8192),
         "strided": lambda: randn(33, 2 * 8192)[:, ::2]}[layout]()
    dy = torch.randn(x.shape, dtype=dtype, device="cuda")
    check_against_reference(x, dy, *fwd_bwd(x, dy), what=f"{layout}: ")
    g = torch.randn(x.shape[1], x.shape[0], x.shape[2] if x.dim() == 3 else 1, dtype=dtype, device="cuda")
    dy_t = g.transpose(0, 1).reshape(x.shape) if x.dim() == 3 else torch.ones((), dtype=dtype,
                                                                                 device="cuda").expand(x.shape)
    check_against_reference(x, dy_t, *fwd_bwd(x, dy_t), what=f"{layout}, strided dy: ")


@gpu
def test_cuda_more_than_2_31_elements():
    numel = 2**31 + 4096 * 3 + 5
    x, dy = (torch.randn(numel, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    check_against_reference(x, dy, *fwd_bwd(x, dy))


@gpu
def test_cuda_graph_capture_and_replay():
    x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)

    def step():
        y = liger.relu_squared(x)
        return (y,) + torch.autograd.grad(y, (x,), dy)

    check_cuda_graph(step, (x, dy), fwd_bwd)


@gpu
def test_cuda_bad_inputs():
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        liger.relu_squared(torch.randn(4, device="cuda", dtype=torch.float64))
    with pytest.raises(RuntimeError, match="dy is on cpu but x is on cuda"):
        liger.relu_squared_bwd(torch.randn(4), torch.randn(4, device="cuda"))
