"""The contract tests that softmax and sparsemax share.

Both ops are ``liger::<name>(Tensor x) -> Tensor`` over the last dim with ``liger::<name>_bwd(Tensor dy, Tensor y)``
as their backward, which is not differentiable again. A test file takes the tests with
``globals().update(contract_tests("<name>", Block))``, where ``Block`` is its TorchScript-able module computing
``liger::<name>(x * 2.0) * 0.5`` (TorchScript needs the op written out in the source), and the GPU tests with
``globals().update(gpu_tests("<name>", fwd_bwd, check_against_reference))``: its (y, dx) of x and dy, and its check
of those against its float64 reference. pytest collects them under their names here.
"""
import pytest
import torch
from torch.library import opcheck

from _shared import (check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks, run_memcheck)

DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.gpu))
gpu = pytest.mark.gpu


def contract_tests(name, block):
    op = getattr(torch.ops.liger, name)
    bwd = getattr(torch.ops.liger, name + "_bwd")

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("shape", ((0, 64), (2, 0, 64), (3, 0)))
    def test_zero_size(device, shape):
        x = torch.randn(shape, device=device, requires_grad=True)
        y = op(x)
        y.sum().backward()
        assert y.shape == shape and x.grad.shape == shape
        assert bwd(y.detach(), y.detach()).shape == shape

    def test_internal_op_matches_autograd():
        x = torch.randn(3, 5, 40, dtype=torch.float16, requires_grad=True)
        dy = torch.randn_like(x)
        y = op(x)
        (dx,) = torch.autograd.grad(y, x, dy)
        assert torch.equal(bwd(dy, y.detach()), dx)

    # ---- autograd

    def test_gradcheck():
        x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op, (x,))
        with pytest.raises(RuntimeError, match="second derivatives"):
            torch.autograd.gradgradcheck(op, (x,))

    @pytest.mark.parametrize("device", DEVICES)
    def test_double_backward_raises(device):
        x = torch.randn(4, 16, device=device, requires_grad=True)
        (dx,) = torch.autograd.grad(op(x).square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="second derivatives"):
            torch.autograd.grad(dx.sum(), x)

    # ---- opcheck

    def opcheck_samples(device):
        def t(*shape, dtype=torch.float32, grad=False):
            return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

        samples = []
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for grad in (False, True):
                samples.append((name, (t(3, 5, 64, dtype=dtype, grad=grad),), grad))
                samples.append((name, (t(7, 33, dtype=dtype, grad=grad),), grad))
                y = op(t(4, 40, dtype=dtype))
                samples.append((name + "_bwd", (t(4, 40, dtype=dtype, grad=grad), y), grad))
        samples.append((name, (t(2, 3, 40, grad=True).transpose(0, 1),), True))
        return samples

    @pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
    def test_opcheck(device, index):
        sample, args, grad = opcheck_samples(device)[index]
        tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
        if sample == name + "_bwd" and grad:
            tests = tests[:-1]  # differentiating the backward op raises (test_double_backward_raises)
        opcheck(getattr(torch.ops.liger, sample).default, args, test_utils=tests)

    # ---- torch.export, TorchScript, torch.compile

    def liger_nodes(graph):
        return [n for n in graph.nodes if n.target is op.default]

    def test_export_dynamic_shapes(tmp_path):
        model = block()
        dims = {"x": {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=1, max=8192)}}
        ep = torch.export.export(model, (torch.randn(2, 3, 64),), dynamic_shapes=dims)
        assert len(liger_nodes(ep.graph)) == 1
        path = tmp_path / f"{name}.pt2"
        torch.export.save(ep, path)
        loaded = torch.export.load(path)
        with torch.no_grad():
            for batch, seq in ((1, 1), (4, 17), (2, 3)):
                x = torch.randn(batch, seq, 64)
                assert torch.equal(ep.module()(x), model(x))
                assert torch.equal(loaded.module()(x), model(x))

    def test_torchscript_save_load_and_backward(tmp_path):
        scripted = torch.jit.script(block())
        assert f"liger::{name}" in str(scripted.graph)
        scripted.save(str(tmp_path / f"{name}.pt"))
        loaded = torch.jit.load(str(tmp_path / f"{name}.pt"))
        x, dy = torch.randn(3, 5, 48), torch.randn(3, 5, 48)
        outputs = []
        for m in (block(), loaded):
            xg = x.clone().requires_grad_()
            y = m(xg)
            y.backward(dy)
            outputs.append((y.detach(), xg.grad))
        for a, b in zip(*outputs):
            assert torch.equal(a, b)

    @pytest.mark.parametrize("device,backend,dynamic", compile_params())
    def test_compile_fullgraph(device, backend, dynamic):
        def f(x):  # multiplying by powers of 2 is exact: compiled and eager results must be bitwise equal
            return op(x * 2.0) * 0.5

        check_compile_fullgraph(f, [((torch.randn(shape, device=device),), (0,), torch.randn(shape, device=device))
                                    for shape in ((2, 5, 64), (3, 9, 64))], backend, dynamic)

    # ---- bad inputs

    @pytest.mark.parametrize("x,match", [
        (torch.randint(0, 5, (4, 8)), rf"{name}: x must be float32, bfloat16 or float16"),
        (torch.tensor(1.0), rf"{name}: x must have at least one dimension"),
    ], ids=["int_x", "0d_x"])
    def test_bad_inputs(x, match):
        with pytest.raises(RuntimeError, match=match):
            op(x)

    def test_bad_backward_inputs():
        y = op(torch.randn(4, 8))
        with pytest.raises(RuntimeError, match=rf"{name}_bwd: dy must have y's dtype"):
            bwd(y.double(), y)
        with pytest.raises(RuntimeError, match=rf"{name}_bwd: dy must have y's shape"):
            bwd(y[:3], y)

    return {k: v for k, v in locals().items() if k.startswith("test_")}


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

HIDDEN_SIZES = (1, 7, 127, 128, 1000, 4096, 5000, 16384, 32768, 32769, 65536, 100000, 262144)
ROW_COUNTS = (0, 1, 3, 4099)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make_cuda_layout(layout, rows, hidden, dtype):
    randn = lambda *s: 3 * torch.randn(*s, dtype=dtype, device="cuda")  # noqa: E731
    return {
        "row_stride_aligned": lambda: randn(rows, hidden + 8)[:, :hidden],
        "row_stride_odd": lambda: randn(rows, hidden + 3)[:, :hidden],
        "transposed": lambda: randn(3, rows, hidden).transpose(0, 1),
        "storage_offset": lambda: randn(rows * hidden + 1)[1:].view(rows, hidden),
        "last_dim_strided": lambda: randn(rows, 2 * hidden)[:, ::2],
        "expanded_rows": lambda: randn(1, hidden).expand(rows, hidden),
        "expanded_batch": lambda: randn(rows, hidden).expand(2, rows, hidden),
    }[layout]()


SANITIZER_SCRIPT = """
import torch
import liger_aot

op = getattr(torch.ops.liger, {name!r})
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float32):
    for rows, hidden, layout in ((1, 1, "contiguous"), (3, 7, "contiguous"), (5, 127, "contiguous"),
                                 (0, 64, "contiguous"), (4, 4097, "offset"), (3, 32768, "padded"),
                                 (2, 70001, "contiguous"), (2, 16385, "contiguous"), (9, 4096, "padded")):
        pad = 8 if layout == "padded" else 0
        base = torch.randn(rows * (hidden + pad) + 1, dtype=dtype, device="cuda")
        start = 1 if layout == "offset" else 0
        x = base[start:start + rows * (hidden + pad)].view(rows, hidden + pad)[:, :hidden]
        xg = x.detach().requires_grad_()
        y = op(xg)
        y.backward(torch.randn_like(y))
        torch.cuda.synchronize()
print("sanitizer script ok")
"""


def gpu_tests(name, fwd_bwd, check_against_reference):
    op = getattr(torch.ops.liger, name)

    @gpu
    @pytest.mark.parametrize("rows", ROW_COUNTS)
    @pytest.mark.parametrize("hidden", HIDDEN_SIZES)
    @pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
    def test_cuda_matches_float64_reference(dtype, hidden, rows):
        if rows * hidden > 1 << 27:
            rows = (1 << 27) // hidden + 1
        x = 3 * torch.randn(rows, hidden, dtype=dtype, device="cuda")
        dy = torch.randn_like(x)
        first = fwd_bwd(x, dy)
        first = tuple(t.clone() for t in first)
        poison_freed_blocks((x.numel(), dtype))
        y, dx = fwd_bwd(x, dy)
        for a, b in zip(first, (y, dx)):
            assert torch.equal(a, b), "not deterministic or reads a poisoned block"
        with torch.no_grad():
            assert torch.equal(op(x), y)
        check_against_reference(x, y, dy, dx)

    @gpu
    @pytest.mark.parametrize("hidden", (127, 4096, 30000, 70000))
    @pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=dtype_id)
    @pytest.mark.parametrize("layout", ("row_stride_aligned", "row_stride_odd", "transposed", "storage_offset",
                                        "last_dim_strided", "expanded_rows", "expanded_batch"))
    def test_cuda_strided_and_expanded_inputs(layout, dtype, hidden):
        x = make_cuda_layout(layout, 33, hidden, dtype)
        dy = make_cuda_layout(layout, 33, hidden, dtype) if not layout.startswith("expanded") else torch.randn_like(x)
        y, dx = fwd_bwd(x, dy)
        check_against_reference(x, y, dy, dx, what=f"{layout}: ")

    @gpu
    @pytest.mark.parametrize("hidden", (4096, 32768, 100003))  # one row per program, persistent, looped
    def test_cuda_more_than_2_31_elements(hidden):
        rows = 2**31 // hidden + 8
        x = torch.randn(rows, hidden, dtype=torch.bfloat16, device="cuda")
        dy = torch.randn_like(x)
        y, dx = fwd_bwd(x, dy)
        check_against_reference(x, y, dy, dx)

    @gpu
    @pytest.mark.parametrize("hidden", (4096, 32768, 100000))
    def test_cuda_graph_capture_and_replay(hidden):
        x = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(64, hidden, device="cuda", dtype=torch.bfloat16)

        def step():
            y = op(x)
            return (y,) + torch.autograd.grad(y, (x,), dy)

        check_cuda_graph(step, (x, dy), fwd_bwd)

    @gpu
    def test_cuda_bad_inputs():
        with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
            op(torch.randn(4, 8, device="cuda", dtype=torch.float64))

    @gpu
    def test_cuda_compute_sanitizer_memcheck(tmp_path):
        run_memcheck(SANITIZER_SCRIPT.format(name=name), tmp_path)

    return {k: v for k, v in locals().items() if k.startswith("test_")}
