"""Tests of torch.ops.liger.fused_linear_jsd (and its internal fused_linear_jsd_fwd).

Numerics: the op against a float64 formula written here (full logits, log_softmax at the temperature,
generalized JSD, mean over non-ignored tokens), with a tolerance of twice the error of the eager
composition at the inputs' precision (logits through a matmul in that dtype, the rest in fp32, as
Liger-Kernel does) plus a floor of FLOOR_ULPS ulps of the dtype times the result's magnitude.
CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""
import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot import functional
from liger_aot.nn import LigerFusedLinearJSD
from _shared import check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, opcheck_params

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
BETAS = (0.0, 1.0, 0.5, 0.2)
FLOOR_ULPS = 8


# ---- float64 reference (independent of the op)


def jsd_terms(x, y, beta):
    q, p = x.exp(), y.exp()
    if beta == 0.0:
        return p * (y - x)
    if beta == 1.0:
        return q * (x - y)
    m = beta * p + (1 - beta) * q
    return beta * p * (y - m.log()) + (1 - beta) * q * (x - m.log())


def reference(si, sw, ti, tw, labels, beta, temperature, ignore_index=-100, compute=torch.float64):
    """compute=float64: the definition; compute=None: eager at the inputs' precision (logits in their dtype)."""
    if compute is None:
        s, t = (si @ sw.t()).float(), (ti @ tw.t()).float()
    else:
        s, t = si.to(compute) @ sw.to(compute).t(), ti.to(compute) @ tw.to(compute).t()
    x, y = (s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1)
    if labels is None:
        live = torch.ones(si.shape[0], dtype=x.dtype, device=x.device)
    else:
        live = (labels != ignore_index).to(x.dtype)
    return (jsd_terms(x, y, beta).sum(-1) * live).sum() / live.sum().clamp(min=1)


def make_inputs(bt, h, v, dtype, device="cpu", labels=False, ht=None):
    ht = ht or h
    si = torch.randn(bt, h, device=device).to(dtype)
    sw = (torch.randn(v, h, device=device) / h**0.5).to(dtype)
    ti = torch.randn(bt, ht, device=device).to(dtype)
    tw = (torch.randn(v, ht, device=device) / ht**0.5).to(dtype)
    lab = None
    if labels:
        lab = torch.randint(0, v, (bt,), device=device)
        lab[torch.rand(bt, device=device) < 0.3] = -100
    return si, sw, ti, tw, lab


def n_chunks(bt, h, v):
    """The launcher's chunking (Liger-Kernel's rule): tokens per chunk ~ bt / ceil(v / h), a power of 2."""
    if bt == 0:
        return 0
    factor = max(1, -(-v // max(h, 1)))
    chunk = min(bt, 1 << (-(-bt // factor) - 1).bit_length())
    return -(-bt // chunk)


def check(si, sw, ti, tw, lab, beta, temperature, dloss=1.0, what=""):
    sig, swg = si.detach().requires_grad_(), sw.detach().requires_grad_()
    got = liger.fused_linear_jsd(sig, swg, ti, tw, lab, beta, -100, temperature)
    g = torch.tensor(dloss, dtype=got.dtype, device=si.device)
    dsi, dsw = torch.autograd.grad(got, (sig, swg), g)
    si64, sw64 = si.detach().double().requires_grad_(), sw.detach().double().requires_grad_()
    ref = reference(si64, sw64, ti, tw, lab, beta, temperature)
    dsi64, dsw64 = torch.autograd.grad(ref, (si64, sw64), g.double())
    sie, swe = si.detach().requires_grad_(), sw.detach().requires_grad_()
    eager_compute = None if si.dtype != torch.float64 else torch.float64
    eager = reference(sie, swe, ti, tw, lab, beta, temperature, compute=eager_compute)
    dsie, dswe = torch.autograd.grad(eager, (sie, swe), g.to(eager.dtype))
    eps = torch.finfo(si.dtype).eps
    # On CUDA d student_weight is accumulated chunk by chunk in the weight's dtype (addmm_, as Liger-Kernel):
    # one more rounding of the running sum per chunk.
    roundings = n_chunks(si.shape[0], si.shape[1], sw.shape[0]) if si.is_cuda else 0
    for name, a, w, e in (("loss", got, ref, eager), ("dstudent_input", dsi, dsi64, dsie),
                          ("dstudent_weight", dsw, dsw64, dswe)):
        if w.numel() == 0:
            continue
        err = (a.double() - w).abs().max().item()
        floor = FLOOR_ULPS + (roundings if name == "dstudent_weight" else 0)
        limit = 2 * (e.double() - w).abs().max().item() + floor * eps * w.abs().max().item() + 1e-12
        assert err <= limit, f"{what}{name}: |op - float64| = {err:.3g} > {limit:.3g}"
    assert dsi.dtype == si.dtype and dsw.dtype == sw.dtype


# ---- CPU numerics


@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("bt,h,v", ((1, 8, 1), (1, 16, 50), (12, 32, 333), (5, 8, 2049)))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64(dtype, bt, h, v, beta, labels):
    check(*make_inputs(bt, h, v, dtype, labels=labels), beta, 1.0, dloss=0.75)


@pytest.mark.parametrize("temperature", (0.5, 2.0))
def test_temperature_and_teacher_hidden_size(temperature):
    si, sw, ti, tw, lab = make_inputs(9, 16, 120, torch.float64, labels=True, ht=24)
    check(si, sw, ti, tw, lab, 0.5, temperature)


def test_matches_jsd_on_logits():
    si, sw, ti, tw, lab = make_inputs(7, 16, 90, torch.float64, labels=True)
    x, y = (si @ sw.t() / 1.5).log_softmax(-1), (ti @ tw.t() / 1.5).log_softmax(-1)
    torch.testing.assert_close(liger.fused_linear_jsd(si, sw, ti, tw, lab, 0.3, -100, 1.5), liger.jsd(x, y, lab, 0.3))


def test_all_tokens_ignored():
    si, sw, ti, tw, _ = make_inputs(6, 8, 40, torch.float32)
    sig, swg = si.requires_grad_(), sw.requires_grad_()
    loss = liger.fused_linear_jsd(sig, swg, ti, tw, torch.full((6,), -100))
    loss.backward()
    assert loss.item() == 0.0 and not sig.grad.any() and not swg.grad.any()


def test_only_weight_or_only_input_requires_grad():
    si, sw, ti, tw, lab = make_inputs(6, 8, 40, torch.float64, labels=True)
    full = torch.autograd.grad(liger.fused_linear_jsd(si.requires_grad_(), sw.requires_grad_(), ti, tw, lab),
                               (si, sw))
    (dsw,) = torch.autograd.grad(liger.fused_linear_jsd(si.detach(), sw, ti, tw, lab), (sw,))
    (dsi,) = torch.autograd.grad(liger.fused_linear_jsd(si, sw.detach(), ti, tw, lab), (si,))
    assert torch.equal(dsw, full[1]) and torch.equal(dsi, full[0])


def test_python_wrappers_and_module():
    si, sw, ti, tw, lab = make_inputs(4, 8, 64, torch.float32, labels=True)
    want = liger.fused_linear_jsd(si, sw, ti, tw, lab, 0.3, -100, 2.0)
    assert torch.equal(liger_aot.ops.fused_linear_jsd(si, sw, ti, tw, lab, 0.3, -100, 2.0), want)
    assert torch.equal(functional.liger_fused_linear_jsd(si, sw, ti, tw, lab, 0.3, -100, 2.0), want)
    assert torch.equal(LigerFusedLinearJSD(jsd_beta=0.3, temperature=2.0)(si, sw, ti, tw, lab), want)


def test_zero_size():
    si, sw, ti, tw, _ = make_inputs(0, 8, 16, torch.float32)
    sig = si.requires_grad_()
    loss = liger.fused_linear_jsd(sig, sw, ti, tw)
    loss.backward()
    assert loss.item() == 0.0 and sig.grad.shape == (0, 8)


def test_internal_op():
    si, sw, ti, tw, lab = make_inputs(5, 8, 30, torch.float32, labels=True)
    loss, gi, gw = liger.fused_linear_jsd_fwd(si, sw, ti, tw, lab, 0.5, -100, 1.0, True, False)
    assert gi.shape == si.shape and gw.shape == (0,)
    assert torch.equal(loss, liger.fused_linear_jsd(si, sw, ti, tw, lab))


# ---- autograd


@pytest.mark.parametrize("beta", BETAS)
def test_gradcheck(beta):
    si, sw, ti, tw, lab = make_inputs(4, 5, 7, torch.float64, labels=True)
    f = lambda a, b: liger.fused_linear_jsd(a, b, ti, tw, lab, beta, -100, 1.3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (si.requires_grad_(), sw.requires_grad_()))


def test_teacher_gradient_raises():
    si, sw, ti, tw, _ = make_inputs(3, 8, 16, torch.float32)
    with pytest.raises(RuntimeError, match="fused_linear_jsd: gradients with respect to the teacher"):
        liger.fused_linear_jsd(si, sw, ti, tw.requires_grad_())


# ---- opcheck


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for beta in (0.0, 1.0, 0.4):
            si, sw, ti, tw, lab = make_inputs(6, 16, 72, dtype, device, labels=True)
            samples.append(("fused_linear_jsd", (si.requires_grad_(), sw.requires_grad_(), ti, tw, lab, beta), True))
            samples.append(("fused_linear_jsd", (si.detach(), sw.detach(), ti, tw, None, beta, -1, 2.0), False))
            samples.append(("fused_linear_jsd_fwd", (si.detach(), sw.detach(), ti, tw, lab, beta, -100, 1.0, True,
                                                     True), False))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, _ = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args)


# ---- torch.export, torch.compile


class Block(torch.nn.Module):
    def forward(self, si, sw, ti, tw, labels):
        return torch.ops.liger.fused_linear_jsd(si * 1.0, sw, ti, tw, labels, 0.5, -100, 1.0) * 2.0


def test_export_dynamic_shapes(tmp_path):
    model = Block()
    bt = torch.export.Dim("bt", min=2, max=65536)
    dims = {"si": {0: bt}, "sw": None, "ti": {0: bt}, "tw": None, "labels": {0: bt}}
    si, sw, ti, tw, lab = make_inputs(3, 8, 64, torch.float32, labels=True)
    ep = torch.export.export(model, (si, sw, ti, tw, lab), dynamic_shapes=dims)
    assert any(n.target is torch.ops.liger.fused_linear_jsd.default for n in ep.graph.nodes)
    torch.export.save(ep, tmp_path / "fused_linear_jsd.pt2")
    loaded = torch.export.load(tmp_path / "fused_linear_jsd.pt2")
    for rows in (2, 5, 17):
        a = make_inputs(rows, 8, 64, torch.float32, labels=True)
        a = (a[0], sw, a[2], tw, a[4])
        assert torch.equal(ep.module()(*a), model(*a))
        assert torch.equal(loaded.module()(*a), model(*a))


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(si, sw, ti, tw, labels):
        return torch.ops.liger.fused_linear_jsd(si * 1.0, sw, ti, tw, labels, 0.5, -100, 1.0) * 2.0

    check_compile_fullgraph(f, [(make_inputs(bt, 16, 130, torch.float32, device, labels=True), (0, 1), None)
                                for bt in (4, 9)], backend, dynamic)


# ---- bad inputs


def test_bad_inputs():
    si, sw, ti, tw, lab = make_inputs(4, 8, 16, torch.float32, labels=True)
    with pytest.raises(RuntimeError, match=r"student_weight must have shape \[V, 8\]"):
        liger.fused_linear_jsd(si, sw[:, :7], ti, tw)
    with pytest.raises(RuntimeError, match=r"teacher_input must have 4 rows"):
        liger.fused_linear_jsd(si, sw, ti[:3], tw)
    with pytest.raises(RuntimeError, match=r"teacher_weight must have student_weight's 16 rows"):
        liger.fused_linear_jsd(si, sw, ti, tw[:15])
    with pytest.raises(RuntimeError, match=r"teacher_weight must have student_input's dtype"):
        liger.fused_linear_jsd(si, sw, ti, tw.double())
    with pytest.raises(RuntimeError, match=r"temperature must be > 0"):
        liger.fused_linear_jsd(si, sw, ti, tw, None, 0.5, -100, 0.0)
    with pytest.raises(RuntimeError, match=r"shift_labels must have shape \[BT\]"):
        liger.fused_linear_jsd(si, sw, ti, tw, lab[:2])


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.


@gpu
@pytest.mark.parametrize("labels", (False, True))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("bt,h,v", ((1, 64, 1), (3, 64, 7), (37, 256, 2049), (300, 512, 32000), (64, 256, 128256),
                                    (130, 128, 32003)))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64(dtype, bt, h, v, beta, labels):
    torch.backends.cuda.matmul.allow_tf32 = False
    inputs = make_inputs(bt, h, v, dtype, "cuda", labels=labels)
    check(*inputs, beta, 1.0, dloss=0.75)
    check(*inputs, beta, 2.0, what="temperature 2: ")
    a = liger.fused_linear_jsd(*inputs, beta)
    assert torch.equal(a, liger.fused_linear_jsd(*inputs, beta)), "not deterministic"


@gpu
def test_cuda_peak_memory_bounded_by_a_chunk():
    bt, h, v = 8192, 1024, 32000
    si, sw, ti, tw, lab = make_inputs(bt, h, v, torch.bfloat16, "cuda", labels=True)
    si.requires_grad_()
    sw.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    liger.fused_linear_jsd(si, sw, ti, tw, lab).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    # eager holds several fp32 [BT, V] tensors; the fused op one chunk of logits plus the gradients
    # (d input, d weight and their scaled copies in the backward)
    fp32_logits = bt * v * 4
    grads = 2 * (si.numel() + sw.numel()) * si.element_size()
    assert extra < grads + fp32_logits / 4, (f"peak extra {extra / 2**20:.0f} MiB vs gradients {grads / 2**20:.0f} "
                                             f"MiB + a quarter of the fp32 logits {fp32_logits / 2**22:.0f} MiB")


@gpu
def test_cuda_graph_capture_and_replay():
    si, sw, ti, tw, lab = make_inputs(256, 256, 32000, torch.bfloat16, "cuda", labels=True)
    si.requires_grad_()
    sw.requires_grad_()

    def step():
        loss = liger.fused_linear_jsd(si, sw, ti, tw, lab, 0.5)
        return (loss,) + torch.autograd.grad(loss, (si, sw))

    def expected(*n):
        a, b = n[0].clone().requires_grad_(), n[1].clone().requires_grad_()
        loss = liger.fused_linear_jsd(a, b, n[2], n[3], n[4], 0.5)
        return (loss.detach(),) + torch.autograd.grad(loss, (a, b))

    check_cuda_graph(step, (si, sw, ti, tw, lab), expected,
                     fresh=lambda: make_inputs(256, 256, 32000, torch.bfloat16, "cuda", labels=True))
