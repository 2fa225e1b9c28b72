"""Tests of torch.ops.liger.kl_div (and its internal kl_div_bwd).

Numerics: the op's error against a float64 formula written here may be at most twice the error of eager
PyTorch (F.kl_div at the inputs' precision) plus FLOOR_ULPS ulps of the result's magnitude (the sum of
|terms| that the reduction adds up). CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot
from liger_aot import functional
from liger_aot.nn import LigerKLDIVLoss
from _shared import (check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks)

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
REDUCTIONS = ("none", "sum", "mean", "batchmean")
FLOOR_ULPS = 4  # fp32 accumulation of a sum of rows: a few roundings of the total


# ---- float64 reference (independent of the op)


def reference_terms(x, y, log_target, eps=1e-10):
    x, y = x.double(), y.double()
    if log_target:
        return y.exp() * (y - x)
    return y * (torch.log(torch.clamp(y, min=eps)) - x)


def reduce(terms, reduction, batch):
    if reduction == "none":
        return terms
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.sum() / terms.numel()
    return terms.sum() / batch


def make_inputs(shape, dtype, log_target, device="cpu"):
    x = torch.randn(shape, device=device, dtype=torch.float32).mul(2).log_softmax(-1).to(dtype)
    y = torch.randn(shape, device=device, dtype=torch.float32).mul(2).softmax(-1)
    y = y.clamp(min=4 * torch.finfo(dtype).tiny)  # no zeros after rounding: d/dtarget of 0 * log(0) is infinite
    y = (y.log() if log_target else y).to(dtype)
    return x, y


def bound(op_err, eager_err, dtype, magnitude):
    return 2 * eager_err + FLOOR_ULPS * torch.finfo(dtype).eps * magnitude


def check_value(got, x, y, reduction, log_target, what=""):
    ref = reduce(reference_terms(x, y, log_target), reduction, x.shape[0])
    mag = reduce(reference_terms(x, y, log_target).abs(), reduction, x.shape[0])
    eager = F.kl_div(x, y, reduction=reduction, log_target=log_target)
    assert got.dtype == x.dtype and got.shape == ref.shape
    if ref.numel() == 0:
        return
    op_err = (got.double() - ref).abs().max().item()
    eager_err = (eager.double() - ref).abs().max().item()
    limit = bound(op_err, eager_err, x.dtype, mag.abs().max().item())
    assert op_err <= limit, f"{what}loss: |op - float64| = {op_err:.3g} > {limit:.3g} (eager {eager_err:.3g})"


def check_grads(x, y, reduction, log_target, dloss, what=""):
    """dloss: the incoming gradient. Checks d input (and d target) against float64 autograd."""
    xg, yg = x.detach().requires_grad_(), y.detach().requires_grad_()
    got = torch.autograd.grad(liger.kl_div(xg, yg, reduction, log_target), (xg, yg), dloss)
    x64, y64 = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
    want = torch.autograd.grad(reduce(reference_terms(x64, y64, log_target), reduction, x.shape[0]), (x64, y64),
                               dloss.double())
    xe, ye = x.detach().requires_grad_(), y.detach().requires_grad_()
    eager = torch.autograd.grad(F.kl_div(xe, ye, reduction=reduction, log_target=log_target), (xe, ye), dloss)
    for name, g, w, e in zip(("dinput", "dtarget"), got, want, eager):
        assert g.dtype == x.dtype and g.shape == x.shape
        op_err = (g.double() - w).abs().max().item()
        eager_err = (e.double() - w).abs().max().item()
        limit = bound(op_err, eager_err, x.dtype, w.abs().max().item())
        assert op_err <= limit, f"{what}{name}: |op - float64| = {op_err:.3g} > {limit:.3g} (eager {eager_err:.3g})"


# ---- CPU numerics


SHAPES = ((1, 7), (4, 100), (3, 5, 33), (2, 4097), (17,))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("log_target", (False, True))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_f_kl_div_and_float64(dtype, reduction, log_target, shape):
    x, y = make_inputs(shape, dtype, log_target)
    check_value(liger.kl_div(x, y, reduction, log_target), x, y, reduction, log_target)
    dloss = torch.randn(shape, dtype=dtype) if reduction == "none" else torch.tensor(1.5, dtype=dtype)
    check_grads(x, y, reduction, log_target, dloss)


def test_zero_target_and_default_arguments():
    x = torch.randn(3, 10).log_softmax(-1)
    y = torch.randn(3, 10).softmax(-1)
    y[0, :4] = 0  # xlogy(0, 0) = 0: no NaN
    assert torch.equal(liger.kl_div(x, y), liger.kl_div(x, y, "batchmean", False, 1e-10))
    torch.testing.assert_close(liger.kl_div(x, y), F.kl_div(x, y, reduction="batchmean"))


def test_python_wrappers_and_module():
    x, y = make_inputs((4, 64), torch.float32, False)
    want = liger.kl_div(x, y, "mean", False)
    assert torch.equal(liger_aot.ops.kl_div(x, y, "mean"), want)
    assert torch.equal(functional.liger_kl_div(x, y, "mean"), want)
    assert torch.equal(LigerKLDIVLoss(reduction="mean")(x, y), want)
    xl, yl = make_inputs((4, 64), torch.float32, True)
    module = LigerKLDIVLoss(reduction="batchmean", log_target=True)
    assert torch.equal(module(xl, yl), liger.kl_div(xl, yl, "batchmean", True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", ((0, 8), (3, 0)), ids=str)
def test_zero_size(reduction, shape):
    x = torch.randn(shape, requires_grad=True)
    y = torch.rand(shape)
    got = liger.kl_div(x, y, reduction)
    want = F.kl_div(x.detach(), y, reduction=reduction)
    assert got.shape == want.shape
    torch.testing.assert_close(got.detach(), want, equal_nan=True)
    got.sum().backward()
    assert x.grad.shape == shape


def test_internal_op_matches_autograd():
    x, y = make_inputs((3, 40), torch.float16, False)
    xg = x.clone().requires_grad_()
    g = torch.tensor(0.75, dtype=torch.float16)
    (dx,) = torch.autograd.grad(liger.kl_div(xg, y, "mean"), xg, g)
    assert torch.equal(liger.kl_div_bwd(g, y, "mean", False), dx)


# ---- autograd


@pytest.mark.parametrize("log_target", (False, True))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction, log_target):
    x = torch.randn(3, 7, dtype=torch.float64).log_softmax(-1).requires_grad_()
    y = torch.randn(3, 7, dtype=torch.float64).softmax(-1)
    y = (y.log() if log_target else y).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: liger.kl_div(a, b, reduction, log_target), (x, y))


def test_double_backward_raises():
    x = torch.randn(4, 16).log_softmax(-1).requires_grad_()
    y = torch.rand(4, 16, requires_grad=True)  # d input = -target: its derivative is w.r.t. target
    (dx,) = torch.autograd.grad(liger.kl_div(x, y, "sum"), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(dx.sum(), y)


# ---- opcheck


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for reduction in REDUCTIONS:
            for log_target in (False, True):
                x, y = make_inputs((3, 5, 40), dtype, log_target, device)
                samples.append(("kl_div", (x.requires_grad_(), y, reduction, log_target), True))
        x, y = make_inputs((4, 33), dtype, False, device)
        samples.append(("kl_div", (x, y, "batchmean", False, 1e-8), False))
        samples.append(("kl_div_bwd", (torch.tensor(2.0, dtype=dtype, device=device), y, "sum", False), False))
        samples.append(("kl_div_bwd", (torch.randn(4, 33, dtype=dtype, device=device), y, "none", True), False))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, _ = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args)


# ---- torch.export, TorchScript, torch.compile


class Block(torch.nn.Module):
    def forward(self, x, y):
        return torch.ops.liger.kl_div(torch.log_softmax(x, -1), y, "batchmean", False) * 2.0


def test_export_dynamic_shapes(tmp_path):
    model = Block()
    dims = {"x": {0: torch.export.Dim("batch", min=2, max=1024), 1: torch.export.Dim("vocab", min=2, max=300000)},
            "y": {0: torch.export.Dim("batch", min=2, max=1024), 1: torch.export.Dim("vocab", min=2, max=300000)}}
    ep = torch.export.export(model, (torch.randn(3, 64), torch.rand(3, 64)), dynamic_shapes=dims)
    assert any(n.target is torch.ops.liger.kl_div.default for n in ep.graph.nodes)
    torch.export.save(ep, tmp_path / "kl_div.pt2")
    loaded = torch.export.load(tmp_path / "kl_div.pt2")
    for rows, vocab in ((2, 2), (5, 1000), (7, 33)):
        x, y = torch.randn(rows, vocab), torch.rand(rows, vocab)
        assert torch.equal(ep.module()(x, y), model(x, y))
        assert torch.equal(loaded.module()(x, y), model(x, y))


def test_torchscript():
    scripted = torch.jit.script(Block())
    assert "liger::kl_div" in str(scripted.graph)
    x, y = torch.randn(3, 48, requires_grad=True), torch.rand(3, 48)
    scripted(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, y):
        return torch.ops.liger.kl_div(x * 1.0, y, "batchmean", False) * 2.0

    check_compile_fullgraph(f, [(make_inputs(shape, torch.float32, False, device), (0,), None)
                                for shape in ((2, 64), (5, 130))], backend, dynamic)


# ---- bad inputs


def test_bad_inputs():
    x, y = make_inputs((4, 8), torch.float32, False)
    with pytest.raises(RuntimeError, match=r"kl_div: reduction must be"):
        liger.kl_div(x, y, "avg")
    with pytest.raises(RuntimeError, match=r"kl_div: target must have input's shape"):
        liger.kl_div(x, y[:3])
    with pytest.raises(RuntimeError, match=r"kl_div: target must have input's dtype"):
        liger.kl_div(x, y.double())
    with pytest.raises(RuntimeError, match=r"kl_div: input must be float32, bfloat16 or float16"):
        liger.kl_div(x.int(), y.int())
    with pytest.raises(RuntimeError, match=r"kl_div: input must have at least one dimension"):
        liger.kl_div(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(RuntimeError, match=r"kl_div_bwd: grad must be 0-d"):
        liger.kl_div_bwd(torch.ones(4, 8), y, "sum", False)


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.


@gpu
@pytest.mark.parametrize("log_target", (False, True))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("rows,vocab", ((1, 1), (3, 7), (5, 2049), (64, 32000), (16, 128256), (2, 256000),
                                        (7, 32003)))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64(dtype, rows, vocab, reduction, log_target):
    x, y = make_inputs((rows, vocab), dtype, log_target, "cuda")
    dloss = (torch.randn(rows, vocab, dtype=dtype, device="cuda") if reduction == "none"
             else torch.tensor(1.5, dtype=dtype, device="cuda"))
    poison_freed_blocks((rows * vocab, dtype))
    got = liger.kl_div(x, y, reduction, log_target)
    check_value(got, x, y, reduction, log_target)
    again = liger.kl_div(x, y, reduction, log_target)
    assert torch.equal(got, again), "not deterministic"
    poison_freed_blocks((rows * vocab, dtype))
    check_grads(x, y, reduction, log_target, dloss)


@gpu
@pytest.mark.parametrize("layout", ("row_sliced", "transposed", "storage_offset", "expanded_grad"))
def test_cuda_strided_inputs(layout):
    rows, vocab = 33, 32000
    base_x, base_y = make_inputs((rows, vocab + 8), torch.bfloat16, False, "cuda")
    if layout == "row_sliced":
        x, y = base_x[:, :vocab], base_y[:, :vocab]
    elif layout == "transposed":
        x, y = (t[:, :vocab].reshape(3, 11, vocab).transpose(0, 1) for t in (base_x, base_y))
    elif layout == "storage_offset":
        x, y = (t.reshape(-1)[1:1 + rows * vocab].view(rows, vocab) for t in (base_x, base_y))
    else:
        x, y = base_x.contiguous(), base_y.contiguous()
    check_value(liger.kl_div(x, y, "none"), x, y, "none", False)
    dloss = torch.randn(1, x.shape[-1], dtype=x.dtype, device="cuda").expand(x.shape)
    check_grads(x, y, "none", False, dloss, what=f"{layout}: ")
    check_grads(x, y, "batchmean", False, torch.tensor(1.0, dtype=x.dtype, device="cuda"), what=f"{layout}: ")


@gpu
def test_cuda_more_than_2_31_elements():
    rows, vocab = 2**31 // 128256 + 4, 128256
    x = torch.randn(rows, vocab, dtype=torch.bfloat16, device="cuda")
    y = torch.rand(rows, vocab, dtype=torch.bfloat16, device="cuda")
    got = liger.kl_div(x, y, "sum")
    chunks = [reference_terms(x[i:i + 256], y[i:i + 256], False).sum() for i in range(0, rows, 256)]
    ref = torch.stack(chunks).sum()
    mag = sum(reference_terms(x[i:i + 256], y[i:i + 256], False).abs().sum() for i in range(0, rows, 256))
    assert abs(got.double().item() - ref.item()) <= 8 * torch.finfo(torch.bfloat16).eps * mag.item()
    xg = x.requires_grad_()
    (dx,) = torch.autograd.grad(liger.kl_div(xg, y, "sum"), xg)
    assert torch.equal(dx[-1], (-y[-1]))


@gpu
@pytest.mark.parametrize("reduction", ("batchmean", "none"))
def test_cuda_graph_capture_and_replay(reduction):
    x, y = make_inputs((64, 32000), torch.bfloat16, False, "cuda")
    x.requires_grad_()
    dloss = torch.randn(64, 32000, dtype=torch.bfloat16, device="cuda") if reduction == "none" else None

    def step():
        loss = liger.kl_div(x, y, reduction)
        return (loss,) + torch.autograd.grad(loss, (x,), dloss)

    def eager(new_x, new_y):
        xg = new_x.clone().requires_grad_()
        loss = liger.kl_div(xg, new_y, reduction)
        return (loss.detach(),) + torch.autograd.grad(loss, (xg,), dloss)

    check_cuda_graph(step, (x, y), eager, fresh=lambda: make_inputs((64, 32000), torch.bfloat16, False, "cuda"))


@gpu
def test_cuda_bad_inputs():
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        x = torch.randn(4, 8, device="cuda", dtype=torch.float64)
        liger.kl_div(x, x)
