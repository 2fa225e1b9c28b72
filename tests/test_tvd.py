"""Tests of torch.ops.liger.tvd (and its internal tvd_fwd / tvd_bwd).

Numerics: the op's error against a float64 formula written here may be at most twice the error of the same
formula in eager PyTorch at the inputs' precision plus FLOOR_ULPS fp32 ulps of the result's magnitude.
CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot import functional
from liger_aot.nn import LigerTVDLoss
from _shared import (check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params,
                     poison_freed_blocks)

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
REDUCTIONS = ("none", "sum", "mean", "batchmean")
FLOOR_ULPS = 8


# ---- float64 reference (independent of the op): Liger-Kernel's LigerTVDLoss


def reference(p, q, labels, reduction, ignore_index=-100):
    rows, vocab = p.shape
    live = torch.ones(rows, dtype=p.dtype, device=p.device) if labels is None else (labels != ignore_index).to(p.dtype)
    loss = 0.5 * (p - q).abs() * live[:, None]
    count = live.sum().clamp(min=1)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (count * vocab)
    return loss.sum() / count


def make_inputs(rows, vocab, dtype, device="cpu", labels=False):
    p = torch.randn(rows, vocab, device=device).softmax(-1).to(dtype)
    q = torch.randn(rows, vocab, device=device).softmax(-1).to(dtype)
    lab = None
    if labels:
        lab = torch.randint(0, max(vocab, 1), (rows,), device=device)
        lab[torch.rand(rows, device=device) < 0.3] = -100
    return p, q, lab


def out_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def check(p, q, labels, reduction, what=""):
    pg, qg = p.detach().requires_grad_(), q.detach().requires_grad_()
    got = liger.tvd(pg, qg, labels, reduction)
    assert got.dtype == out_dtype(p.dtype)
    dloss = torch.randn(got.shape, dtype=got.dtype, device=p.device)
    dp, dq = torch.autograd.grad(got, (pg, qg), dloss)
    p64, q64 = p.detach().double(), q.detach().double()
    ref = reference(p64, q64, labels, reduction)
    assert got.shape == ref.shape
    # Liger-Kernel's subgradient, written out: d/dp = 0.5 if p > q else -0.5 (ties included), d/dq = -d/dp
    rows, vocab = p.shape
    live = torch.ones(rows, dtype=torch.float64) if labels is None else (labels.cpu() != -100).double()
    live = live.to(p.device)
    count = live.sum().clamp(min=1)
    scale = {"none": 1.0, "sum": 1.0, "mean": 1 / (count * vocab), "batchmean": 1 / count}[reduction]
    dp64 = torch.where(p64 > q64, 0.5, -0.5).double() * dloss.double() * scale * live[:, None]
    dq64 = -dp64
    eager = reference(p.float() if p.dtype != torch.float64 else p, q.float() if q.dtype != torch.float64 else q,
                      labels, reduction)
    mag = reference(p.double().abs() + q.double().abs(), torch.zeros_like(p, dtype=torch.float64), labels,
                    reduction).abs().max().item() if p.numel() else 0.0
    eps = torch.finfo(out_dtype(p.dtype)).eps
    if ref.numel():
        err = (got.double() - ref).abs().max().item()
        limit = 2 * (eager.double() - ref).abs().max().item() + FLOOR_ULPS * eps * mag
        assert err <= limit, f"{what}loss: |op - float64| = {err:.3g} > {limit:.3g}"
    # the subgradient: +-0.5 * g where p != q (ties have probability ~0 with random inputs)
    for name, g, w in (("dp", dp, dp64), ("dq", dq, dq64)):
        assert g.dtype == p.dtype and g.shape == p.shape
        if g.numel():
            err = (g.double() - w).abs().max().item()
            # + the subnormal spacing: fp16 gradients of "mean" over large inputs (0.5 / (rows x vocab)) are subnormal
            fi = torch.finfo(p.dtype)
            limit = 2 * fi.eps * w.abs().max().item() + fi.tiny * fi.eps
            assert err <= limit, f"{what}{name}: |op - float64| = {err:.3g} > {limit:.3g}"


# ---- CPU numerics


@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("rows,vocab", ((1, 1), (1, 50), (6, 333), (4, 2049)))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64(dtype, rows, vocab, reduction, labels):
    p, q, lab = make_inputs(rows, vocab, dtype, labels=labels)
    check(p, q, lab, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_tokens_ignored(reduction):
    p, q, _ = make_inputs(5, 64, torch.float32)
    labels = torch.full((5,), -100)
    pg = p.requires_grad_()
    loss = liger.tvd(pg, q, labels, reduction)
    loss.sum().backward()
    assert not loss.any() and not pg.grad.any()


def test_python_wrappers_and_module():
    p, q, lab = make_inputs(4, 64, torch.bfloat16, labels=True)
    want = liger.tvd(p, q, lab, "mean", -100)
    assert torch.equal(liger_aot.ops.tvd(p, q, lab, "mean"), want)
    assert torch.equal(functional.liger_tvd(p, q, lab, "mean"), want)
    assert torch.equal(LigerTVDLoss(reduction="mean")(p, q, lab), want)
    assert torch.equal(LigerTVDLoss()(p, q), liger.tvd(p, q))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_size(reduction):
    p = torch.rand(0, 16, requires_grad=True)
    loss = liger.tvd(p, torch.rand(0, 16), None, reduction)
    loss.sum().backward()
    assert p.grad.shape == (0, 16)


def test_internal_ops_match_autograd():
    p, q, lab = make_inputs(3, 40, torch.float16, labels=True)
    pg = p.clone().requires_grad_()
    g = torch.tensor(0.5)
    (dp,) = torch.autograd.grad(liger.tvd(pg, q, lab, "batchmean"), pg, g)
    loss, mult = liger.tvd_fwd(p, q, lab, "batchmean", -100)
    assert torch.equal(loss, liger.tvd(p, q, lab, "batchmean"))
    assert torch.equal(liger.tvd_bwd(g, mult, p, q, lab, "batchmean", -100), dp)
    # the training pieces: the forward's gradient for grad_output 1, scaled in place
    loss2, mult2, dp1 = liger.tvd_fwd_grad(p, q, lab, "batchmean", -100)
    assert torch.equal(loss2, loss) and torch.equal(mult2, mult)
    assert torch.equal(dp1, liger.tvd_bwd(torch.tensor(1.0), mult, p, q, lab, "batchmean", -100))
    liger.tvd_scale_(dp1, g)
    torch.testing.assert_close(dp1, dp, rtol=2 * torch.finfo(p.dtype).eps, atol=0)
    with pytest.raises(RuntimeError, match="reduced loss"):
        liger.tvd_fwd_grad(p, q, lab, "none", -100)


def grads(p, q, lab, reduction, dloss, device="cpu", retain=False):
    pg, qg = p.detach().clone().requires_grad_(), q.detach().clone().requires_grad_()
    loss = liger.tvd(pg, qg, lab, reduction)
    loss.backward(dloss, retain_graph=retain)
    if retain:  # a retained graph keeps the forward's gradient intact: a second backward adds the same again
        first = (pg.grad.clone(), qg.grad.clone())
        loss.backward(dloss)  # (the graph is freed now: the in-place path, rounded differently by an ulp at most)
        eps = torch.finfo(p.dtype).eps
        torch.testing.assert_close(pg.grad, 2 * first[0], rtol=2 * eps, atol=0)
        torch.testing.assert_close(qg.grad, 2 * first[1], rtol=2 * eps, atol=0)
        return first
    return pg.grad, qg.grad


@pytest.mark.parametrize("reduction", ("sum", "mean", "batchmean"))
@pytest.mark.parametrize("unit", (True, False))
def test_fused_gradient_paths_agree(reduction, unit):
    # loss.backward() with grad_output 1 hands out the forward's gradient as is; other grad_outputs scale it in
    # place; a retained graph recomputes it (tvd_bwd). All three agree with the separate backward.
    p, q, lab = make_inputs(5, 300, torch.bfloat16, labels=True)
    dloss = torch.tensor(1.0 if unit else -0.37)
    fused = grads(p, q, lab, reduction, dloss)
    retained = grads(p, q, lab, reduction, dloss, retain=True)
    loss, mult = liger.tvd_fwd(p, q, lab, reduction, -100)
    sep = liger.tvd_bwd(dloss, mult, p, q, lab, reduction, -100)
    eps = torch.finfo(p.dtype).eps
    for got in (fused, retained):
        torch.testing.assert_close(got[0], sep, rtol=2 * eps, atol=0)
        assert torch.equal(got[1], -got[0])


# ---- autograd


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction):
    p = torch.rand(3, 7, dtype=torch.float64, requires_grad=True)
    q = torch.rand(3, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, -100, 2])
    assert torch.autograd.gradcheck(lambda a, b: liger.tvd(a, b, labels, reduction), (p, q))
    assert torch.autograd.gradcheck(lambda a, b: liger.tvd(a, b, None, reduction), (p, q))


def test_double_backward_raises():
    p = torch.rand(4, 16, requires_grad=True)
    (dp,) = torch.autograd.grad(liger.tvd(p, torch.rand(4, 16)), p, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad((dp * p).sum(), p)


# ---- opcheck


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for reduction in REDUCTIONS:
            p, q, lab = make_inputs(6, 70, dtype, device, labels=True)
            samples.append(("tvd", (p.requires_grad_(), q, lab, reduction), True))
            samples.append(("tvd", (p.detach(), q, None, reduction, -1), False))
            samples.append(("tvd_fwd", (p.detach(), q, lab, reduction, -100), False))
            loss, mult = liger.tvd_fwd(p.detach(), q, lab, reduction, -100)
            samples.append(("tvd_bwd", (torch.randn_like(loss), mult, p.detach(), q, lab, reduction, -100), False))
            if reduction != "none":
                samples.append(("tvd_fwd_grad", (p.detach(), q, lab, reduction, -100), False))
                samples.append(("tvd_scale_", (torch.rand_like(p.detach()), torch.tensor(0.37, device=device)),
                                False))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, _ = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args)


# ---- torch.export, torch.compile


class Block(torch.nn.Module):
    def forward(self, p, q, labels):
        return torch.ops.liger.tvd(torch.softmax(p, -1), torch.softmax(q, -1), labels, "batchmean", -100) * 2.0


def test_export_dynamic_shapes(tmp_path):
    model = Block()
    bt, vocab = torch.export.Dim("bt", min=2, max=65536), torch.export.Dim("vocab", min=2, max=300000)
    dims = {"p": {0: bt, 1: vocab}, "q": {0: bt, 1: vocab}, "labels": {0: bt}}
    ep = torch.export.export(model, (torch.randn(3, 64), torch.randn(3, 64), torch.tensor([1, -100, 2])),
                             dynamic_shapes=dims)
    assert any(n.target is torch.ops.liger.tvd.default for n in ep.graph.nodes)
    torch.export.save(ep, tmp_path / "tvd.pt2")
    loaded = torch.export.load(tmp_path / "tvd.pt2")
    for rows, v in ((2, 2), (5, 1000), (9, 33)):
        a = (torch.randn(rows, v), torch.randn(rows, v), torch.randint(-1, 2, (rows,)) * 100)
        assert torch.equal(ep.module()(*a), model(*a))
        assert torch.equal(loaded.module()(*a), model(*a))


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(p, q, labels):
        return torch.ops.liger.tvd(p * 1.0, q, labels, "mean", -100) * 2.0

    check_compile_fullgraph(f, [(make_inputs(rows, vocab, torch.float32, device, labels=True), (0,), None)
                                for rows, vocab in ((2, 64), (5, 130))], backend, dynamic)


# ---- bad inputs


def test_bad_inputs():
    p, q, lab = make_inputs(4, 8, torch.float32, labels=True)
    with pytest.raises(RuntimeError, match=r"tvd: reduction must be"):
        liger.tvd(p, q, None, "avg")
    with pytest.raises(RuntimeError, match=r"tvd: p must have shape \[BT, V\]"):
        liger.tvd(p[0], q[0])
    with pytest.raises(RuntimeError, match=r"tvd: q must have p's shape"):
        liger.tvd(p, q[:3])
    with pytest.raises(RuntimeError, match=r"tvd: q must have p's dtype"):
        liger.tvd(p, q.half())
    with pytest.raises(RuntimeError, match=r"tvd: shift_labels must have shape \[BT\]"):
        liger.tvd(p, q, lab[:3])


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.


@gpu
@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("rows,vocab", ((1, 1), (3, 7), (5, 2049), (64, 32000), (16, 128256), (2, 256000),
                                        (7, 32003)))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64(dtype, rows, vocab, reduction, labels):
    p, q, lab = make_inputs(rows, vocab, dtype, "cuda", labels=labels)
    poison_freed_blocks((rows * vocab, torch.float32))
    check(p, q, lab, reduction)
    assert torch.equal(liger.tvd(p, q, lab, reduction), liger.tvd(p, q, lab, reduction)), "not deterministic"


@gpu
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_strided(reduction):
    p, q, lab = make_inputs(8, 32008, torch.bfloat16, "cuda", labels=True)
    check(p[:, :32000], q[:, :32000], lab, reduction, what="row_sliced: ")
    check(p[:, :32001], q[:, :32001], lab, reduction, what="odd: ")
    check(p.t().contiguous().t()[:, :999], q[:, :999], lab, reduction, what="column_major: ")


@gpu
@pytest.mark.parametrize("reduction", ("sum", "mean", "batchmean"))
@pytest.mark.parametrize("unit", (True, False))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_fused_gradient_paths_agree(dtype, reduction, unit):
    p, q, lab = make_inputs(9, 32003, dtype, "cuda", labels=True)
    dloss = torch.tensor(1.0 if unit else -0.37, device="cuda")
    poison_freed_blocks((9 * 32003, dtype))
    fused = grads(p, q, lab, reduction, dloss, "cuda")
    retained = grads(p, q, lab, reduction, dloss, "cuda", retain=True)
    loss, mult = liger.tvd_fwd(p, q, lab, reduction, -100)
    sep = liger.tvd_bwd(dloss, mult, p, q, lab, reduction, -100)
    eps = torch.finfo(dtype).eps
    for got in (fused, retained):
        torch.testing.assert_close(got[0], sep, rtol=2 * eps, atol=0)
        assert torch.equal(got[1], -got[0])
    cpu = grads(p.cpu(), q.cpu(), lab.cpu(), reduction, dloss.cpu())
    torch.testing.assert_close(fused[0].cpu(), cpu[0], rtol=2 * eps, atol=0)


@gpu
def test_cuda_more_than_2_31_elements():
    rows, vocab = 2**31 // 128256 + 4, 128256
    p = torch.rand(rows, vocab, dtype=torch.bfloat16, device="cuda")
    q = torch.rand(rows, vocab, dtype=torch.bfloat16, device="cuda")
    pg = p.requires_grad_()
    loss = liger.tvd(pg, q, None, "sum")
    (dp,) = torch.autograd.grad(loss, pg)
    ref = sum((0.5 * (p[i:i + 256].detach().double() - q[i:i + 256].double()).abs()).sum() for i in range(0, rows, 256))
    assert abs(loss.item() - ref.item()) <= 1e-5 * ref.item()
    assert torch.equal(dp[-1], torch.where(p[-1] > q[-1], 0.5, -0.5).to(torch.bfloat16))


@gpu
@pytest.mark.parametrize("reduction", ("batchmean", "none"))
def test_cuda_graph_capture_and_replay(reduction):
    p, q, lab = make_inputs(64, 32000, torch.bfloat16, "cuda", labels=True)
    p.requires_grad_()
    dloss = torch.randn(64, 32000, device="cuda") if reduction == "none" else None

    def step():
        loss = liger.tvd(p, q, lab, reduction)
        return (loss,) + torch.autograd.grad(loss, (p,), dloss)

    def eager(new_p, new_q, new_lab):
        pg = new_p.clone().requires_grad_()
        loss = liger.tvd(pg, new_q, new_lab, reduction)
        return (loss.detach(),) + torch.autograd.grad(loss, (pg,), dloss)

    check_cuda_graph(step, (p, q, lab), eager,
                     fresh=lambda: make_inputs(64, 32000, torch.bfloat16, "cuda", labels=True))
