"""Tests of torch.ops.liger.jsd (and its internal jsd_fwd / jsd_bwd).

Numerics: the op's error against a float64 formula written here may be at most twice the error of the same
formula evaluated in eager PyTorch at the inputs' precision (what Liger-Kernel's users would otherwise run)
plus FLOOR_ULPS fp32 ulps of the loss's magnitude (sum of |terms| / count). On CUDA, 16-bit inputs run with
approximate exp and log (ex2/lg2.approx: relative error 2^-22, two fp32 ulps) whose errors scale with the terms
before they cancel (p·y, q·x, m·log m): APPROX_ULPS fp32 ulps of that magnitude are added there. CPU tests run
in CI; tests marked `gpu` need CUDA and skip without it.
"""
import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot import functional
from liger_aot.nn import LigerJSD
from _shared import (check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks)

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
BETAS = (0.0, 1.0, 0.5, 0.1)
FLOOR_ULPS = 8
APPROX_ULPS = 2


# ---- float64 reference (independent of the op): Liger-Kernel's definition


def reference_terms(x, y, beta):
    """Per-element generalized JSD of student log-probs x and teacher log-probs y."""
    q, p = x.exp(), y.exp()
    if beta == 0.0:
        return p * (y - x)  # KL(P || Q)
    if beta == 1.0:
        return q * (x - y)  # KL(Q || P)
    m = beta * p + (1 - beta) * q
    return beta * p * (y - m.log()) + (1 - beta) * q * (x - m.log())


def uncancelled(x, y, beta, labels):
    """Mean over live rows of the row sums of beta·p·|y| + (1 - beta)·q·|x| + m·|log m| (terms kept finite)."""
    q, p = x.exp(), y.exp()
    m = beta * p + (1 - beta) * q
    terms = (beta * p * y).nan_to_num().abs() + ((1 - beta) * q * x).nan_to_num().abs()
    terms = terms + (m * m.log()).nan_to_num().abs()
    live = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if labels is None else (labels != -100).to(x.dtype)
    return (terms.sum(-1) * live).sum() / live.sum().clamp(min=1)


def reference(x, y, labels, beta, ignore_index=-100):
    if labels is None:
        live = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        live = (labels != ignore_index).to(x.dtype)
    rows = reference_terms(x, y, beta).sum(-1) * live
    return rows.sum() / live.sum().clamp(min=1)


def make_inputs(rows, vocab, dtype, device="cpu", labels=False, ignored=0.3):
    x = (2 * torch.randn(rows, vocab, device=device)).log_softmax(-1).to(dtype)
    y = (2 * torch.randn(rows, vocab, device=device)).log_softmax(-1).to(dtype)
    lab = None
    if labels:
        lab = torch.randint(0, vocab, (rows,), device=device)
        lab[torch.rand(rows, device=device) < ignored] = -100
    return x, y, lab


def check(x, y, labels, beta, dloss=1.0, what=""):
    xg = x.detach().requires_grad_()
    got = liger.jsd(xg, y, labels, beta)
    (dx,) = torch.autograd.grad(got, xg, torch.tensor(dloss, device=x.device))
    assert got.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32) and got.shape == ()
    assert dx.dtype == x.dtype and dx.shape == x.shape and dx.is_contiguous()
    x64 = x.detach().double().requires_grad_()
    ref = reference(x64, y.double(), labels, beta)
    (dref,) = torch.autograd.grad(ref, x64, torch.tensor(dloss, dtype=torch.float64, device=x.device))
    # The same formula in PyTorch at the inputs' precision; where it overflows (fp16 sums over a large
    # vocabulary), at float32 from the same rounded inputs.
    for dt in (x.dtype, torch.float32):
        xe = x.detach().to(dt).requires_grad_()
        eager = reference(xe, y.to(dt), labels, beta)
        (deager,) = torch.autograd.grad(eager, xe, torch.tensor(dloss, dtype=dt, device=x.device))
        if eager.isfinite() and deager.isfinite().all():
            break
    live = 1 if labels is None else (labels != -100).sum().clamp(min=1).item()
    mag = reference_terms(x.double(), y.double(), beta).abs().sum().item() / live
    eps32 = torch.finfo(torch.float32 if x.dtype != torch.float64 else torch.float64).eps
    err = abs(got.item() - ref.item())
    limit = 2 * abs(eager.double().item() - ref.item()) + FLOOR_ULPS * eps32 * mag
    if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16):
        limit += APPROX_ULPS * eps32 * uncancelled(x.double(), y.double(), beta, labels).item()
    assert err <= limit, f"{what}loss: |op - float64| = {err:.3g} > {limit:.3g}"
    derr = (dx.double() - dref).abs().max().item()
    # the gradient's terms cancel ((1 - beta) Q (x - log M), P and Q terms): its magnitude is Q (|x| + |y| + 1)
    x64, y64 = x.double(), y.double()
    gmag = ((x64.exp() + y64.exp()) * (x64.abs() + y64.abs() + 1)).max().item() if x.numel() else 0.0
    gmag = max(gmag, dref.abs().max().item()) * abs(dloss) / live
    dlimit = 2 * (deager.double() - dref).abs().max().item() + FLOOR_ULPS * torch.finfo(x.dtype).eps * gmag
    assert derr <= dlimit, f"{what}dinput: |op - float64| = {derr:.3g} > {dlimit:.3g}"
    if labels is not None:
        ignored = labels == -100
        assert (dx[ignored] == 0).all(), "ignored rows must get a zero gradient"


# ---- CPU numerics


@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("rows,vocab", ((1, 1), (1, 50), (6, 333), (4, 2049)))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64(dtype, rows, vocab, beta, labels):
    x, y, lab = make_inputs(rows, vocab, dtype, labels=labels)
    check(x, y, lab, beta, dloss=0.75)


@pytest.mark.parametrize("beta", BETAS)
def test_all_tokens_ignored(beta):
    x, y, _ = make_inputs(5, 64, torch.float32)
    labels = torch.full((5,), -100)
    xg = x.requires_grad_()
    loss = liger.jsd(xg, y, labels, beta)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(xg.grad, torch.zeros_like(x))


def test_custom_ignore_index_and_single_kept_token():
    x, y, _ = make_inputs(4, 100, torch.float32)
    labels = torch.tensor([7, 7, 3, 7])
    got = liger.jsd(x, y, labels, 0.5, 7)
    want = reference_terms(x.double()[2], y.double()[2], 0.5).sum()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_beta_endpoints_are_kl():
    x, y, _ = make_inputs(3, 80, torch.float64)
    kl_pq = torch.nn.functional.kl_div(x, y, reduction="batchmean", log_target=True)  # KL(P || Q)
    kl_qp = torch.nn.functional.kl_div(y, x, reduction="batchmean", log_target=True)
    torch.testing.assert_close(liger.jsd(x, y, None, 0.0), kl_pq)
    torch.testing.assert_close(liger.jsd(x, y, None, 1.0), kl_qp)


def test_python_wrappers_and_module():
    x, y, lab = make_inputs(4, 64, torch.bfloat16, labels=True)
    want = liger.jsd(x, y, lab, 0.3, -100)
    assert torch.equal(liger_aot.ops.jsd(x, y, lab, 0.3), want)
    assert torch.equal(functional.liger_jsd(x, y, lab, 0.3), want)
    assert torch.equal(LigerJSD(beta=0.3)(x, y, lab), want)


def test_zero_size():
    x = torch.randn(0, 16, requires_grad=True)
    loss = liger.jsd(x, torch.randn(0, 16))
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 16)


def test_internal_ops_match_autograd():
    x, y, lab = make_inputs(3, 40, torch.float16, labels=True)
    xg = x.clone().requires_grad_()
    g = torch.tensor(0.5)
    (dx,) = torch.autograd.grad(liger.jsd(xg, y, lab, 0.5), xg, g)
    loss, mult = liger.jsd_fwd(x, y, lab, 0.5, -100)
    assert torch.equal(loss, liger.jsd(x, y, lab, 0.5))
    assert torch.equal(liger.jsd_bwd(g, mult, x, y, lab, 0.5, -100), dx)


# ---- autograd


@pytest.mark.parametrize("beta", BETAS)
def test_gradcheck(beta):
    x = torch.randn(3, 7, dtype=torch.float64).log_softmax(-1).requires_grad_()
    y = torch.randn(3, 7, dtype=torch.float64).log_softmax(-1)
    labels = torch.tensor([1, -100, 2])
    assert torch.autograd.gradcheck(lambda a: liger.jsd(a, y, labels, beta), (x,))
    assert torch.autograd.gradcheck(lambda a: liger.jsd(a, y, None, beta), (x,))


def test_target_gradient_raises_and_double_backward_raises():
    x, y, _ = make_inputs(3, 16, torch.float32)
    with pytest.raises(RuntimeError, match="jsd: gradients with respect to target"):
        liger.jsd(x.requires_grad_(), y.requires_grad_())
    xg = x.detach().requires_grad_()
    (dx,) = torch.autograd.grad(liger.jsd(xg, y.detach()), xg, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((dx * xg).sum(), xg)


# ---- opcheck


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for beta in (0.0, 1.0, 0.4):
            x, y, lab = make_inputs(6, 70, dtype, device, labels=True)
            samples.append(("jsd", (x.requires_grad_(), y, lab, beta), True))
            samples.append(("jsd", (x.detach(), y, None, beta, -1), False))
            samples.append(("jsd_fwd", (x.detach(), y, lab, beta, -100), False))
            loss, mult = liger.jsd_fwd(x.detach(), y, lab, beta, -100)
            samples.append(("jsd_bwd", (torch.tensor(1.5, device=device), mult, x.detach(), y, lab, beta, -100), False))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, _ = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args)


# ---- torch.export, torch.compile


class Block(torch.nn.Module):
    def forward(self, x, y, labels):
        return torch.ops.liger.jsd(torch.log_softmax(x, -1), torch.log_softmax(y, -1), labels, 0.5, -100) * 2.0


def test_export_dynamic_shapes(tmp_path):
    model = Block()
    bt, vocab = torch.export.Dim("bt", min=2, max=65536), torch.export.Dim("vocab", min=2, max=300000)
    dims = {"x": {0: bt, 1: vocab}, "y": {0: bt, 1: vocab}, "labels": {0: bt}}
    args = (torch.randn(3, 64), torch.randn(3, 64), torch.tensor([1, -100, 2]))
    ep = torch.export.export(model, args, dynamic_shapes=dims)
    assert any(n.target is torch.ops.liger.jsd.default for n in ep.graph.nodes)
    torch.export.save(ep, tmp_path / "jsd.pt2")
    loaded = torch.export.load(tmp_path / "jsd.pt2")
    for rows, v in ((2, 2), (5, 1000), (9, 33)):
        a = (torch.randn(rows, v), torch.randn(rows, v), torch.randint(-1, 2, (rows,)) * 100)
        assert torch.equal(ep.module()(*a), model(*a))
        assert torch.equal(loaded.module()(*a), model(*a))


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, y, labels):
        return torch.ops.liger.jsd(x * 1.0, y, labels, 0.5, -100) * 2.0

    check_compile_fullgraph(f, [(make_inputs(rows, vocab, torch.float32, device, labels=True), (0,), None)
                                for rows, vocab in ((2, 64), (5, 130))], backend, dynamic)


# ---- bad inputs


def test_bad_inputs():
    x, y, lab = make_inputs(4, 8, torch.float32, labels=True)
    with pytest.raises(RuntimeError, match=r"jsd: input must have shape \[BT, V\]"):
        liger.jsd(x[0], y[0])
    with pytest.raises(RuntimeError, match=r"jsd: target must have input's shape"):
        liger.jsd(x, y[:3])
    with pytest.raises(RuntimeError, match=r"jsd: target must have input's dtype"):
        liger.jsd(x, y.half())
    with pytest.raises(RuntimeError, match=r"jsd: shift_labels must have shape \[BT\]"):
        liger.jsd(x, y, lab[:3])
    with pytest.raises(RuntimeError, match=r"jsd: shift_labels must be int64"):
        liger.jsd(x, y, lab.int())
    with pytest.raises(RuntimeError, match=r"jsd: beta must be in \[0, 1\]"):
        liger.jsd(x, y, None, 1.5)


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.


@gpu
@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("rows,vocab", ((1, 1), (3, 7), (5, 2049), (64, 32000), (16, 128256), (2, 256000),
                                        (7, 32003)))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64(dtype, rows, vocab, beta, labels):
    x, y, lab = make_inputs(rows, vocab, dtype, "cuda", labels=labels)
    poison_freed_blocks((rows * vocab, dtype))
    check(x, y, lab, beta, dloss=0.75)
    a, b = liger.jsd(x, y, lab, beta), liger.jsd(x, y, lab, beta)
    assert torch.equal(a, b), "not deterministic"


@gpu
@pytest.mark.parametrize("beta", (0.0, 1.0, 0.5))
def test_cuda_all_ignored_and_strided(beta):
    x, y, _ = make_inputs(8, 32008, torch.bfloat16, "cuda")
    xs, ys = x[:, :32000], y[:, :32000]  # row stride 32008: aligned; 32001 below: unaligned
    check(xs, ys, None, beta, what="row_sliced: ")
    check(x[:, :32001], y[:, :32001], None, beta, what="odd: ")
    labels = torch.full((8,), -100, device="cuda")
    xg = xs.detach().requires_grad_()
    loss = liger.jsd(xg, ys, labels, beta)
    loss.backward()
    assert loss.item() == 0.0 and not xg.grad.any()


@gpu
def test_cuda_more_than_2_31_elements():
    rows, vocab = 2**31 // 128256 + 4, 128256
    x = torch.randn(rows, vocab, dtype=torch.bfloat16, device="cuda").log_softmax(-1)
    y = torch.randn(rows, vocab, dtype=torch.bfloat16, device="cuda").log_softmax(-1)
    xg = x.requires_grad_()
    loss = liger.jsd(xg, y, None, 0.5)
    (dx,) = torch.autograd.grad(loss, xg)
    last = reference_terms(x[-1:].detach().double(), y[-1:].double(), 0.5)
    x64 = x[-1:].detach().double().requires_grad_()
    (d64,) = torch.autograd.grad(reference_terms(x64, y[-1:].double(), 0.5).sum() / rows, x64)
    assert torch.isfinite(loss) and last.isfinite().all()
    torch.testing.assert_close(dx[-1:].double(), d64, rtol=2e-2, atol=1e-12)


@gpu
def test_cuda_graph_capture_and_replay():
    x, y, lab = make_inputs(64, 32000, torch.bfloat16, "cuda", labels=True)
    x.requires_grad_()

    def step():
        loss = liger.jsd(x, y, lab, 0.5)
        return (loss,) + torch.autograd.grad(loss, (x,))

    def eager(new_x, new_y, new_lab):
        xg = new_x.clone().requires_grad_()
        loss = liger.jsd(xg, new_y, new_lab, 0.5)
        return (loss.detach(),) + torch.autograd.grad(loss, (xg,))

    check_cuda_graph(step, (x, y, lab), eager,
                     fresh=lambda: make_inputs(64, 32000, torch.bfloat16, "cuda", labels=True))
