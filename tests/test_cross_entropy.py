"""Tests of torch.ops.liger.cross_entropy (and its internal cross_entropy_fwd / cross_entropy_bwd, and the training
path's cross_entropy_fwd_grad / cross_entropy_bwd_into: "mean"/"sum" with a gradient compute it in the forward).

The float64 reference below is written from the definitions (F.cross_entropy's weighted, smoothed loss, the
soft-cap and Liger-Kernel's z-loss); it is itself checked against F.cross_entropy in float64. The op computes in
fp32 and rounds its results once to the logits' dtype, so its error may be one ulp of that dtype plus the fp32
accumulation error (TOL: 1e-5 relative covers logsumexp over 256000 classes in fp32), relative to the
magnitude of the loss terms (|lse|). CPU tests run in CI; tests marked `gpu` need CUDA and skip without it.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import liger_aot  # noqa: F401  (loads the operators)
from liger_aot import functional, ops
from liger_aot.nn import LigerCrossEntropyLoss
from _shared import check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, poison_freed_blocks

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
REDUCTIONS = ("mean", "sum", "none")
# one ulp of the output dtype (rounding once, 2 ulps of slack) + fp32 accumulation, relative to the magnitude
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2 * 2**-8 + 1e-5,
       torch.float16: 2 * 2**-11 + 1e-5}

# (weight, label_smoothing, lse_square_scale, softcap, ignore_index)
OPTIONS = {
    "plain": (False, 0.0, 0.0, None, -100),
    "weight": (True, 0.0, 0.0, None, -100),
    "smooth": (False, 0.1, 0.0, None, -100),
    "weight_smooth": (True, 0.2, 0.0, None, 3),
    "zloss": (False, 0.0, 1e-2, None, -100),
    "softcap": (False, 0.0, 0.0, 4.0, -1),
    "all": (True, 0.15, 1e-3, 10.0, 0),
}


# ---- float64 reference (independent of the op)


def reference(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, lse_square_scale=0.0,
              softcap=None, reduction="mean"):
    """(loss, z_loss) in float64 from the definitions; class dimension last."""
    V = logits.shape[-1]
    x = logits.double().reshape(-1, V)
    t = target.reshape(-1)
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    w = torch.ones(V, dtype=torch.float64, device=x.device) if weight is None else weight.double()
    valid = t != ignore_index
    ts = torch.where(valid, t, 0)
    logp = x - torch.logsumexp(x, -1, keepdim=True)
    nll = -w[ts] * logp.gather(1, ts[:, None])[:, 0]
    smooth = -(logp * w).sum(-1)
    ce = torch.where(valid, (1 - label_smoothing) * nll + label_smoothing / V * smooth, 0.0)
    lse = torch.logsumexp(x, -1)
    z = torch.where(valid, lse_square_scale * lse * lse, 0.0)
    if reduction == "none":
        return (ce + z).reshape(target.shape), z.reshape(target.shape)
    ce, z = ce.sum(), z.sum()
    if reduction == "mean":
        ce = ce / torch.where(valid, w[ts], 0.0).sum()
        z = z / valid.sum()
    return ce + z, z


def make_inputs(shape, V, dtype, device="cpu", opts="plain", ignore_some=True, scale=3.0):
    has_weight, ls, zs, cap, ii = OPTIONS[opts]
    logits = (torch.randn(*shape, V, device=device) * scale).to(dtype)
    target = torch.randint(0, V, shape, device=device)
    if ignore_some and target.numel() > 1:
        target.view(-1)[::4] = ii
    weight = torch.rand(V, device=device) + 0.5 if has_weight else None
    kwargs = dict(weight=weight, ignore_index=ii, label_smoothing=ls, lse_square_scale=zs, softcap=cap)
    return logits, target, kwargs


def call(logits, target, kwargs, reduction):
    return liger.cross_entropy(logits, target, kwargs["weight"], kwargs["ignore_index"], kwargs["label_smoothing"],
                               kwargs["lse_square_scale"], kwargs["softcap"], reduction)


def check_close(got, want, dtype, magnitude, what):
    assert got.dtype == dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    err = (got.double() - want).abs().max().item() if want.numel() else 0.0
    bound = TOL[dtype] * max(1.0, magnitude)
    assert err <= bound, f"{what}: max |op - float64| = {err:.3g} exceeds {bound:.3g}"


def grad_bound(g64, target, kw, reduction, gl, gz, lse_mag, dtype):
    """Error bound of the logits' gradient: TOL relative to the larger of its magnitude and its terms'.

    Each gradient element is p * coef_p - [j == y] * coef_y - (e / V) * w[j] with coefficients up to
    |grad_output| / D * (w_max * (1 + e) + 2 * lse_square_scale * |lse|): where they cancel (V = 1: p = 1, the
    gradient is 0) the rounding of those terms remains, so the bound is relative to them as well.
    """
    if not g64.numel():
        return 1e-12
    w = kw["weight"]
    valid = target != kw["ignore_index"]
    w_max = 1.0 if w is None else w.abs().max().item()
    scale = torch.as_tensor(gl).abs().max().item() + torch.as_tensor(gz).abs().max().item()
    if reduction == "mean" and valid.any():
        ts = torch.where(valid, target, 0)
        d_loss = valid.sum().item() if w is None else torch.where(valid, w[ts], 0.0).sum().item()
        scale /= min(d_loss, valid.sum().item())
    terms = scale * (w_max * (1 + kw["label_smoothing"]) + 2 * kw["lse_square_scale"] * lse_mag)
    return TOL[dtype] * max(g64.abs().max().item(), terms) + 1e-12


def check_op(logits, target, kwargs, reduction, *, grad_scale=None):
    """Forward and backward (random output gradients for both outputs) against the float64 reference."""
    dtype = logits.dtype
    x = logits.detach().clone().requires_grad_()
    loss, z = call(x, target, kwargs, reduction)
    x64 = logits.detach().double().requires_grad_()
    rl, rz = reference(x64, target, reduction=reduction, **kwargs)
    lse_mag = torch.logsumexp(logits.double(), -1).abs().max().item() if logits.numel() else 1.0
    n = max(1, target.numel()) if reduction == "sum" else 1
    check_close(loss.detach(), rl.detach(), dtype, lse_mag * n * (1 + kwargs["lse_square_scale"] * lse_mag), "loss")
    check_close(z.detach(), rz.detach(), dtype, kwargs["lse_square_scale"] * lse_mag**2 * n, "z_loss")
    gl = torch.randn(rl.shape, dtype=torch.float64, device=logits.device) if grad_scale is None else grad_scale
    gz = torch.randn(rz.shape, dtype=torch.float64, device=logits.device)
    torch.autograd.backward((loss, z), (gl.to(dtype), gz.to(dtype)))
    g64, = torch.autograd.grad((rl, rz), (x64,), (gl.to(dtype).double(), gz.to(dtype).double()))
    g_mag = g64.abs().max().item() if g64.numel() else 0.0
    err = (x.grad.double() - g64).abs().max().item() if g64.numel() else 0.0
    assert x.grad.dtype == dtype and x.grad.shape == logits.shape
    bound = grad_bound(g64, target, kwargs, reduction, gl, gz, lse_mag, dtype)
    assert err <= bound, f"grad: max |op - float64| = {err:.3g} exceeds {bound:.3g} (|grad| {g_mag:.3g})"
    return loss, z, x.grad


# ---- the reference itself


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "weight", "smooth", "weight_smooth"])
def test_reference_matches_f_cross_entropy(opts, reduction):
    logits, target, kw = make_inputs((13,), 37, torch.float64, opts=opts)
    want = F.cross_entropy(logits, target, weight=None if kw["weight"] is None else kw["weight"].double(),
                           ignore_index=kw["ignore_index"], label_smoothing=kw["label_smoothing"], reduction=reduction)
    got, z = reference(logits, target, reduction=reduction, **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not z.any()


# ---- CPU numerics


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", list(OPTIONS))
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_matches_float64_reference(dtype, opts, reduction):
    logits, target, kw = make_inputs((29,), 101, dtype, opts=opts)
    check_op(logits, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=dtype_id)
def test_matches_f_cross_entropy(dtype, reduction):
    logits, target, kw = make_inputs((3, 7), 50, dtype, opts="weight_smooth")
    loss, z = call(logits, target, kw, reduction)
    want = F.cross_entropy(logits.reshape(-1, 50), target.reshape(-1), weight=kw["weight"].to(dtype),
                           ignore_index=kw["ignore_index"], label_smoothing=kw["label_smoothing"], reduction=reduction)
    torch.testing.assert_close(loss, want.reshape(loss.shape))
    assert not z.any()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "weight", "all"])
def test_all_targets_ignored(opts, reduction):
    logits, target, kw = make_inputs((6,), 20, torch.float32, opts=opts, ignore_some=False)
    target.fill_(kw["ignore_index"])
    x = logits.clone().requires_grad_()
    loss, z = call(x, target, kw, reduction)
    want = F.cross_entropy(logits, target, weight=kw["weight"], ignore_index=kw["ignore_index"], reduction=reduction)
    torch.testing.assert_close(loss, want, equal_nan=True)  # mean of no rows: NaN, as PyTorch
    if reduction == "mean":
        assert loss.isnan() and z.isnan()
    else:
        assert not loss.any() and not z.any()
    (loss.nan_to_num() if reduction == "mean" else loss).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_single_token_and_unbatched(reduction):
    logits, target, kw = make_inputs((1,), 11, torch.float32, opts="all", ignore_some=False)
    check_op(logits, target, kw, reduction)
    check_op(logits[0], target[0], kw, reduction)  # [V] logits, 0-d target (F.cross_entropy's unbatched form)


@pytest.mark.parametrize("V", (1, 2, 3, 1023, 1025, 5000))
def test_vocab_sizes(V):
    logits, target, kw = make_inputs((9,), V, torch.float32, opts="all")
    kw["ignore_index"] = -100
    check_op(logits, target, kw, "mean")


def test_leading_dims_and_strided_logits():
    logits, target, kw = make_inputs((2, 5), 64, torch.float32, opts="all")
    wide = torch.randn(2, 5, 80)
    wide[..., :64] = logits
    check_op(wide[..., :64], target, kw, "none")
    check_op(logits.transpose(0, 1), target.t(), kw, "mean")


def test_out_of_range_target_gives_nan():
    logits, target, kw = make_inputs((5,), 10, torch.float32, ignore_some=False)
    target[2] = 10
    loss, _ = call(logits, target, kw, "none")
    assert loss[2].isnan() and not loss[[0, 1, 3, 4]].isnan().any()
    assert call(logits, target, kw, "mean")[0].isnan()
    target[2] = -5
    assert call(logits, target, kw, "sum")[0].isnan()


def test_python_wrappers_functional_and_module():
    logits, target, kw = make_inputs((4, 3), 30, torch.float32, opts="all")
    want, want_z = call(logits, target, kw, "mean")
    got, got_z = ops.cross_entropy(logits, target, kw["weight"], kw["ignore_index"], kw["label_smoothing"],
                                   kw["lse_square_scale"], kw["softcap"], "mean")
    assert torch.equal(got, want) and torch.equal(got_z, want_z)
    f = functional.liger_cross_entropy(logits, target, kw["weight"], ignore_index=kw["ignore_index"],
                                       label_smoothing=kw["label_smoothing"], lse_square_scale=kw["lse_square_scale"],
                                       softcap=kw["softcap"], return_z_loss=True)
    assert torch.equal(f[0], want) and torch.equal(f[1], want_z)
    module = LigerCrossEntropyLoss(weight=kw["weight"], ignore_index=kw["ignore_index"],
                                   lse_square_scale=kw["lse_square_scale"], label_smoothing=kw["label_smoothing"],
                                   softcap=kw["softcap"])
    assert torch.equal(module(logits, target), want)
    plain = LigerCrossEntropyLoss()(logits.reshape(-1, 30), target.reshape(-1).clamp(min=0))
    torch.testing.assert_close(plain, F.cross_entropy(logits.reshape(-1, 30), target.reshape(-1).clamp(min=0)))
    with pytest.raises(ValueError, match="reduction"):
        LigerCrossEntropyLoss(reduction="batchmean")


def test_gradcheck():
    for opts in ("plain", "all", "weight_smooth"):
        for reduction in REDUCTIONS:
            logits, target, kw = make_inputs((5,), 7, torch.float64, opts=opts)
            x = logits.requires_grad_()
            assert torch.autograd.gradcheck(lambda x: call(x, target, kw, reduction), (x,)), (opts, reduction)


def test_double_backward_raises():
    logits, target, kw = make_inputs((4,), 9, torch.float64)
    x = logits.requires_grad_()
    loss, _ = call(x, target, kw, "mean")
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives are not supported"):
        g.sum().backward()


def test_internal_ops_match():
    logits, target, kw = make_inputs((6,), 40, torch.float32, opts="all")
    args = (kw["weight"], kw["ignore_index"], kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"], "sum")
    loss, z, lse, stats = liger.cross_entropy_fwd(logits, target, *args)
    assert torch.equal(loss, call(logits, target, kw, "sum")[0])
    valid = target != kw["ignore_index"]
    capped = kw["softcap"] * torch.tanh(logits / kw["softcap"])
    torch.testing.assert_close(lse[valid], torch.logsumexp(capped, -1)[valid])
    torch.testing.assert_close(stats, torch.stack([kw["weight"][target[valid]].sum(), valid.sum().float(),
                                                   kw["weight"].sum()]))
    g = liger.cross_entropy_bwd(torch.tensor(1.0), torch.tensor(0.0), logits, target, kw["weight"], lse, stats,
                                *args[1:])
    x = logits.clone().requires_grad_()
    call(x, target, kw, "sum")[0].backward()
    torch.testing.assert_close(g, x.grad)


def test_fused_internal_ops_match():
    # cross_entropy_fwd_grad's gradient is cross_entropy_bwd's for output gradients (1, 0); cross_entropy_bwd_into
    # keeps it for (1, 0) and rewrites it with cross_entropy_bwd's for any other.
    for reduction in ("mean", "sum"):
        logits, target, kw = make_inputs((6,), 40, torch.float32, opts="all")
        args = (kw["weight"], kw["ignore_index"], kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"],
                reduction)
        loss, z, lse, stats, g = liger.cross_entropy_fwd_grad(logits, target, *args)
        want = liger.cross_entropy_fwd(logits, target, *args)
        for a, b in zip((loss, z, lse, stats), want):
            assert torch.equal(a, b)
        one, zero = torch.tensor(1.0), torch.tensor(0.0)
        torch.testing.assert_close(g, liger.cross_entropy_bwd(one, zero, logits, target, kw["weight"], lse, stats,
                                                              *args[1:]))
        kept = g.clone()
        liger.cross_entropy_bwd_into(g, one, zero, logits, target, kw["weight"], lse, stats, *args[1:])
        assert torch.equal(g, kept)
        for gl, gz in ((0.37, 0.0), (1.0, 0.5), (2.0, -1.0)):
            gl, gz = torch.tensor(gl), torch.tensor(gz)
            liger.cross_entropy_bwd_into(g, gl, gz, logits, target, kw["weight"], lse, stats, *args[1:])
            assert torch.equal(g, liger.cross_entropy_bwd(gl, gz, logits, target, kw["weight"], lse, stats,
                                                          *args[1:]))
        # no z_loss gradient (None) is a zero one
        for gl in (1.0, 0.37):
            gl = torch.tensor(gl)
            want = liger.cross_entropy_bwd(gl, zero, logits, target, kw["weight"], lse, stats, *args[1:])
            assert torch.equal(liger.cross_entropy_bwd(gl, None, logits, target, kw["weight"], lse, stats,
                                                       *args[1:]), want)
            g.copy_(kept)  # bwd_into's contract: g holds the gradient for (1, 0)
            liger.cross_entropy_bwd_into(g, gl, None, logits, target, kw["weight"], lse, stats, *args[1:])
            assert torch.equal(g, want)
    with pytest.raises(RuntimeError, match="cross_entropy_fwd_grad: reduction must be 'mean' or 'sum'"):
        liger.cross_entropy_fwd_grad(logits, target, *args[:-1], "none")
    with pytest.raises(RuntimeError, match="cross_entropy_fwd_grad is not differentiable"):
        liger.cross_entropy_fwd_grad(logits.requires_grad_(), target, *args)
    with pytest.raises(RuntimeError, match="grad_logits must have the logits' shape"):
        liger.cross_entropy_bwd_into(g[1:], one, zero, logits.detach(), target, kw["weight"], lse, stats, *args[1:])


@pytest.mark.parametrize("reduction", ("mean", "sum"))
def test_fused_retained_graph_and_logits_intact(reduction):
    # The forward keeps the gradient for (1, 0); a retained graph must give the right gradient at every backward
    # (and not rewrite the tensor an earlier torch.autograd.grad returned); the logits are never written.
    logits, target, kw = make_inputs((9,), 50, torch.float32, opts="all")
    x = logits.clone().requires_grad_()
    loss, z = call(x, target, kw, reduction)
    x64 = logits.double().requires_grad_()
    rl, rz = reference(x64, target, reduction=reduction, **kw)
    results = []
    for gl, gz in ((1.0, 0.0), (0.37, 0.0), (1.0, 0.0), (2.0, 0.5)):
        (g,) = torch.autograd.grad((loss, z), (x,), (torch.tensor(gl), torch.tensor(gz)), retain_graph=True)
        (g64,) = torch.autograd.grad((rl, rz), (x64,), (torch.tensor(gl).double(), torch.tensor(gz).double()),
                                     retain_graph=True)
        torch.testing.assert_close(g.double(), g64, rtol=1e-5, atol=1e-7)
        results.append((g, g.clone()))
    for g, copy in results:
        assert torch.equal(g, copy)
    (loss * 0.5 + z).backward()  # the last backward frees the graph: the kept buffer is completed in place
    (g64,) = torch.autograd.grad((rl, rz), (x64,), (torch.tensor(0.5).double(), torch.tensor(1.0).double()))
    torch.testing.assert_close(x.grad.double(), g64, rtol=1e-5, atol=1e-7)
    assert torch.equal(x.detach(), logits)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("used", ["loss", "z_loss", "neither_requires_grad"])
def test_one_output_gradient(used, reduction):
    # The autograd node does not materialize zero gradients (set_materialize_grads(false)): a backward through
    # only one of (loss, z_loss) must treat the other's gradient as zero, in the fused ("mean"/"sum") and the
    # general ("none") paths; graph freed (the kept gradient completed in place) and retained alike.
    logits, target, kw = make_inputs((2, 7), 50, torch.float32, opts="zloss")
    x64 = logits.double().requires_grad_()
    rl, rz = reference(x64, target, reduction=reduction, **kw)
    for retain in (False, True):
        x = logits.clone().requires_grad_()
        loss, z = call(x, target, kw, reduction)
        if used == "neither_requires_grad":
            # an output that does not lead to x (z detached) with the other one: x's gradient comes from loss
            out, ref_out = loss.sum() + z.detach().sum(), rl.sum()
        else:
            out, ref_out = (loss, rl) if used == "loss" else (z, rz)
            out, ref_out = (out * 0.7).sum(), (ref_out * 0.7).sum()
        (g,) = torch.autograd.grad(out, (x,), retain_graph=retain)
        (g64,) = torch.autograd.grad(ref_out, (x64,), retain_graph=True)
        torch.testing.assert_close(g.double(), g64, rtol=1e-5, atol=1e-7)
    assert torch.equal(x.detach(), logits)


# ---- opcheck


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for opts in ("plain", "all"):
            for reduction in REDUCTIONS:
                for grad in (False, True):
                    logits, target, kw = make_inputs((3, 4), 37, dtype, device, opts=opts)
                    logits.requires_grad_(grad)
                    args = (logits, target, kw["weight"], kw["ignore_index"], kw["label_smoothing"],
                            kw["lse_square_scale"], kw["softcap"], reduction)
                    samples.append(("cross_entropy", args, grad))
                    samples.append(("cross_entropy_fwd", args, grad))
    logits, target, kw = make_inputs((5,), 33, torch.float32, device, opts="all")
    args = (kw["weight"], kw["ignore_index"], kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"])
    for reduction in REDUCTIONS:
        _, _, lse, stats = liger.cross_entropy_fwd(logits, target, *args, reduction)
        g = torch.randn(5, device=device) if reduction == "none" else torch.randn((), device=device)
        for gz in (g.clone(), None):
            samples.append(("cross_entropy_bwd", (g, gz, logits, target, kw["weight"], lse, stats, *args[1:],
                                                  reduction), False))
    for dtype in CUDA_DTYPES:
        for opts in ("plain", "all"):
            for reduction in ("mean", "sum"):
                logits, target, kw = make_inputs((3, 4), 37, dtype, device, opts=opts)
                args = (kw["weight"], kw["ignore_index"], kw["label_smoothing"], kw["lse_square_scale"],
                        kw["softcap"], reduction)
                samples.append(("cross_entropy_fwd_grad", (logits, target, *args), False))
                _, _, lse, stats, g = liger.cross_entropy_fwd_grad(logits, target, *args)
                for gl, gz in ((1.0, 0.0), (0.37, 0.5), (1.0, None), (0.37, None)):
                    grads = (torch.tensor(gl, device=device, dtype=dtype),
                             None if gz is None else torch.tensor(gz, device=device, dtype=dtype))
                    samples.append(("cross_entropy_bwd_into", (g.clone(), *grads, logits, target, kw["weight"], lse,
                                                               stats, *args[1:]), False))
    return samples


def opcheck_params():
    params = []
    for device, marks in (("cpu", []), ("cuda", [gpu])):
        for i, (name, args, grad) in enumerate(opcheck_samples("cpu")):
            params.append(pytest.param(device, i, marks=marks, id=f"{device}-{i}-{name}" + ("-grad" if grad else "")))
    return params


@pytest.mark.parametrize("device,index", opcheck_params())
def test_opcheck(device, index):
    name, args, grad = opcheck_samples(device)[index]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    opcheck(getattr(liger, name).default, args, test_utils=tests)


# ---- torch.export, torch.compile


class Loss(torch.nn.Module):
    def forward(self, logits, target, weight):
        loss, z = torch.ops.liger.cross_entropy(logits * 2.0, target, weight, -100, 0.1, 1e-3, 30.0, "mean")
        return loss, z


def test_export_dynamic_shapes(tmp_path):
    model = Loss()
    n = torch.export.Dim("tokens", min=2, max=1 << 20)
    dims = {"logits": {0: n}, "target": {0: n}, "weight": None}
    logits, target, kw = make_inputs((6,), 40, torch.float32, opts="weight")
    ep = torch.export.export(model, (logits, target, kw["weight"]), dynamic_shapes=dims)
    assert any(node.target is liger.cross_entropy.default for node in ep.graph.nodes)
    path = tmp_path / "cross_entropy.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    for tokens in (2, 17, 6):
        logits, target, _ = make_inputs((tokens,), 40, torch.float32)
        want = model(logits, target, kw["weight"])
        for m in (ep.module(), loaded.module()):
            for a, b in zip(m(logits, target, kw["weight"]), want):
                assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(logits, target, weight):
        loss, z = liger.cross_entropy(logits * 2.0, target, weight, -100, 0.1, 1e-3, 30.0, "mean")
        return loss + z

    cases = []
    for tokens in (8, 13):
        logits, target, kw = make_inputs((tokens,), 96, torch.float32, device, opts="weight")
        cases.append(((logits, target, kw["weight"]), (0,), None))
    check_compile_fullgraph(f, cases, backend, dynamic,
                            compare=lambda a, b: torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7))


# ---- bad inputs


def test_bad_inputs():
    logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
    cases = [
        ((logits, target.float()), {}, r"cross_entropy: target must be int64"),
        ((logits, target[:3]), {}, r"cross_entropy: target must have shape \[4\]"),
        ((logits.long(), target), {}, r"cross_entropy: logits must be float32, bfloat16 or float16"),
        ((torch.tensor(1.0), target), {}, r"cross_entropy: logits must have at least one dimension"),
        ((torch.randn(4, 0), target), {}, r"cross_entropy: logits must have at least one class"),
        ((logits, target), {"weight": torch.rand(9)}, r"cross_entropy: weight must have shape \[10\]"),
        ((logits, target), {"weight": torch.rand(10, 1)}, r"cross_entropy: weight must have shape \[10\]"),
        ((logits, target), {"reduction": "batchmean"}, r"cross_entropy: reduction must be 'mean', 'sum' or 'none'"),
        ((logits, target), {"label_smoothing": 1.5}, r"cross_entropy: label_smoothing must be in \[0, 1\]"),
        ((logits, target), {"softcap": 0.0}, r"cross_entropy: softcap must be > 0"),
        ((logits, target), {"lse_square_scale": -1.0}, r"cross_entropy: lse_square_scale must be >= 0"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(RuntimeError, match=match):
            liger.cross_entropy(*args, **kwargs)


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.

VOCABS = (32000, 128256, 152064, 256000)


def cpu_reference_check(logits, target, kw, reduction, got_loss, got_z, got_grad, gl, gz):
    """Checks CUDA results against the float64 reference computed on the GPU in float64."""
    x64 = logits.detach().double().requires_grad_()
    rl, rz = reference(x64, target, reduction=reduction, **kw)
    lse_mag = torch.logsumexp(logits.double(), -1).abs().max().item()
    n = target.numel() if reduction == "sum" else 1
    check_close(got_loss, rl.detach(), logits.dtype, lse_mag * n * (1 + kw["lse_square_scale"] * lse_mag), "loss")
    check_close(got_z, rz.detach(), logits.dtype, kw["lse_square_scale"] * lse_mag**2 * n, "z_loss")
    g64, = torch.autograd.grad((rl, rz), (x64,), (gl.double(), gz.double()))
    g_mag = g64.abs().max().item()
    err = (got_grad.double() - g64).abs().max().item()
    bound = grad_bound(g64, target, kw, reduction, gl, gz, lse_mag, logits.dtype)
    assert err <= bound, f"grad error {err:.3g} > {bound:.3g} (|grad| {g_mag:.3g})"


@gpu
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "all", "weight_smooth"])
@pytest.mark.parametrize("V", VOCABS + (1, 7, 1000, 4097, 50257))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, V, opts, reduction):
    logits, target, kw = make_inputs((37,), V, dtype, "cuda", opts=opts)
    if V == 1 and kw["ignore_index"] == 0:
        kw["ignore_index"] = -100  # otherwise every target (all 0) is ignored: test_cuda_strided_..._all_ignored
    x = logits.clone().requires_grad_()
    poison_freed_blocks((logits.numel(), dtype))
    loss, z = call(x, target, kw, reduction)
    gl = torch.randn(loss.shape, device="cuda").to(dtype)
    gz = torch.randn(z.shape, device="cuda").to(dtype)
    poison_freed_blocks((logits.numel(), dtype))
    torch.autograd.backward((loss, z), (gl, gz))
    assert not x.grad.isnan().any() and not loss.isnan().any()
    cpu_reference_check(logits, target, kw, reduction, loss.detach(), z.detach(), x.grad, gl, gz)
    # deterministic, and the same as the CPU reference implementation at fp32 accuracy ("mean"/"sum" with a
    # gradient take the fused training forward, whose logsumexp may differ in the last bit from inference's)
    loss2, _ = call(logits.clone().requires_grad_(), target, kw, reduction)
    assert torch.equal(loss.detach(), loss2.detach())
    loss_inference, _ = call(logits, target, kw, reduction)
    check_close(loss_inference, loss.detach().double(), dtype, 2 * loss.detach().double().abs().max().item(),
                "inference vs training forward")
    cpu_kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
    cpu_loss, _ = call(logits.cpu(), target.cpu(), cpu_kw, reduction)
    check_close(loss.detach().cpu(), cpu_loss.double(), dtype, 2 * abs(cpu_loss.double()).max().item(), "cpu vs cuda")


@gpu
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("opts", ["plain", "all", "weight_smooth", "zloss", "softcap"])
@pytest.mark.parametrize("V", VOCABS + (1, 7, 4097))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_fused_unit_gradient(dtype, V, opts, reduction):
    # loss.backward() with z_loss unused: the gradient the forward wrote is returned as is; the logits stay intact.
    logits, target, kw = make_inputs((37,), V, dtype, "cuda", opts=opts)
    if V == 1 and kw["ignore_index"] == 0:
        kw["ignore_index"] = -100
    target[5] = kw["ignore_index"]
    x = logits.clone().requires_grad_()
    poison_freed_blocks((logits.numel(), dtype))
    loss, z = call(x, target, kw, reduction)
    poison_freed_blocks((logits.numel(), dtype))
    loss.backward()
    assert torch.equal(x.detach(), logits)
    assert not x.grad.isnan().any() and not x.grad[5].any()
    ones, zeros = torch.ones((), device="cuda", dtype=dtype), torch.zeros((), device="cuda", dtype=dtype)
    cpu_reference_check(logits, target, kw, reduction, loss.detach(), z.detach(), x.grad, ones, zeros)
    # close to the separate forward and backward kernels (inference forward + general backward)
    with torch.no_grad():
        loss_inference = call(logits, target, kw, reduction)[0]
    check_close(loss_inference, loss.detach().double(), dtype, 2 * loss.detach().double().abs().item(),
                "inference vs training forward")
    xr = logits.clone().requires_grad_()
    lr, zr = call(xr, target, kw, reduction)
    (g,) = torch.autograd.grad(lr, xr, retain_graph=True)  # a retained graph takes the general backward
    torch.testing.assert_close(x.grad, g, rtol=2 * TOL[dtype], atol=1e-7)


@gpu
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("grads", [(0.37, None), (2.0, None), (1.0, 0.5), (0.37, -1.5), (1.0, 0.0), (None, 0.5)],
                         ids=str)
@pytest.mark.parametrize("V", (32000, 128256, 4097))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_fused_scaled_gradient(dtype, V, grads, reduction):
    # Output gradients other than (1, 0) (loss scaling, a gradient through z_loss): the backward rewrites the
    # gradient the forward kept, with the same rounding as the general backward.
    logits, target, kw = make_inputs((37,), V, dtype, "cuda", opts="all")
    x = logits.clone().requires_grad_()
    loss, z = call(x, target, kw, reduction)
    gl_value, gz_value = grads
    gl = torch.tensor(gl_value or 0.0, device="cuda", dtype=dtype)
    if gz_value is None:
        (loss * gl).backward()
        gz = torch.zeros((), device="cuda", dtype=dtype)
    elif gl_value is None:  # a gradient through z_loss alone (the loss's is then none, not a zero tensor)
        gz = torch.tensor(gz_value, device="cuda", dtype=dtype)
        (z * gz).backward()
    else:
        gz = torch.tensor(gz_value, device="cuda", dtype=dtype)
        torch.autograd.backward((loss, z), (gl, gz))
    assert torch.equal(x.detach(), logits)
    cpu_reference_check(logits, target, kw, reduction, loss.detach(), z.detach(), x.grad, gl, gz)
    # the general backward's from the fused forward's lse: bit for bit when the backward rewrote the gradient
    # (the same kernel), to rounding for (1, 0) (the forward's copy of the gradient code, compiled separately)
    lse, stats = liger.cross_entropy_fwd_grad(logits, target, kw["weight"], kw["ignore_index"],
                                              kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"],
                                              reduction)[2:4]
    g = liger.cross_entropy_bwd(gl, gz, logits, target, kw["weight"], lse, stats, kw["ignore_index"],
                                kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"], reduction)
    if grads == (1.0, 0.0):
        torch.testing.assert_close(x.grad, g, rtol=2 * TOL[dtype], atol=1e-7)
    else:
        assert torch.equal(x.grad, g)


@gpu
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("opts", ["plain", "zloss"])
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_fused_tail_rows_split(dtype, opts, reduction):
    # Above 65536 classes the training forward runs one program per SM; the rows left over after the last full
    # round (fewer than half the programs) are split over the programs (TAIL): each split row's lse comes from the
    # parts' sums. Left-over counts 1, 5 and half the SMs; a left-over row ignored (every 4th target), one with a
    # logit ~120 above its target's (summed again behind its max), and a backward that rewrites the gradient.
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for n_tail in (1, 5, sms // 2):
        rows = 2 * sms + n_tail
        logits, target, kw = make_inputs((rows,), 65544, dtype, "cuda", opts=opts)
        kept = [r for r in range(2 * sms, rows) if target[r].item() != kw["ignore_index"]]
        if kept:
            logits[kept[-1], 17] = 120.0
        for gl, gz in ((1.0, None), (0.37, 0.5)):
            x = logits.clone().requires_grad_()
            loss, z = call(x, target, kw, reduction)
            glt = torch.tensor(gl, device="cuda", dtype=dtype)
            gzt = torch.tensor(gz or 0.0, device="cuda", dtype=dtype)
            torch.autograd.backward((loss, z) if gz is not None else (loss,), (glt, gzt) if gz is not None else (glt,))
            cpu_reference_check(logits, target, kw, reduction, loss.detach(), z.detach(), x.grad, glt, gzt)


@gpu
def test_cuda_fused_large_logit_resum():
    # A logit ~120 above the target's overflows exp(x - x[y]) in fp32: that row is summed again behind its max.
    for dtype in CUDA_DTYPES:
        logits, target, kw = make_inputs((16,), 32000, dtype, "cuda", opts="plain")
        logits[3, 17] = 120.0
        logits[7, :] = float("-inf")
        logits[7, target[7]] = 0.0
        x = logits.clone().requires_grad_()
        loss, z = call(x, target, kw, "sum")
        loss.backward()
        ones, zeros = torch.ones((), device="cuda", dtype=dtype), torch.zeros((), device="cuda", dtype=dtype)
        finite = torch.isfinite(logits)
        cpu_reference_check(logits.masked_fill(~finite, -1e4), target, kw, "sum", loss.detach(), z.detach(),
                            x.grad, ones, zeros)


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_strided_leading_dims_and_all_ignored(dtype):
    logits, target, kw = make_inputs((3, 11), 32000, dtype, "cuda", opts="all")
    wide = torch.randn(3, 11, 32008, device="cuda").to(dtype)
    wide[..., :32000] = logits
    x = wide[..., :32000].detach().requires_grad_()
    loss, z = call(x, target, kw, "mean")
    loss.backward()
    gl, gz = torch.ones((), device="cuda", dtype=dtype), torch.zeros((), device="cuda", dtype=dtype)
    cpu_reference_check(logits, target, kw, "mean", loss.detach(), z.detach(), x.grad, gl, gz)
    target.fill_(kw["ignore_index"])
    x.grad = None
    loss, z = call(x, target, kw, "mean")
    assert loss.isnan() and z.isnan()
    loss.nan_to_num().backward()
    assert not x.grad.any()
    assert call(x, target, kw, "sum")[0].item() == 0


@gpu
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_offset_views(reduction):
    # target[1:] starts 8 bytes into its storage: the launcher must take the variants without 16-byte promises
    logits, target, kw = make_inputs((34,), 32000, torch.bfloat16, "cuda", opts="all")
    x = logits[1:].detach().requires_grad_()
    loss, z = call(x, target[1:], kw, reduction)
    gl = torch.randn(loss.shape, device="cuda").to(torch.bfloat16)
    gz = torch.randn(z.shape, device="cuda").to(torch.bfloat16)
    torch.autograd.backward((loss, z), (gl, gz))
    cpu_reference_check(logits[1:], target[1:], kw, reduction, loss.detach(), z.detach(), x.grad, gl, gz)


@gpu
def test_cuda_zero_rows_and_out_of_range_target():
    logits = torch.randn(0, 100, device="cuda", requires_grad=True)
    target = torch.zeros(0, dtype=torch.long, device="cuda")
    loss, z = liger.cross_entropy(logits, target)
    assert loss.isnan()
    assert liger.cross_entropy(logits, target, reduction="sum")[0].item() == 0
    assert liger.cross_entropy(logits, target, reduction="none")[0].shape == (0,)
    logits = torch.randn(4, 100, device="cuda")
    target = torch.tensor([1, 100, 2, -100], device="cuda")
    per_row, _ = liger.cross_entropy(logits, target, reduction="none")
    assert per_row[1].isnan() and not per_row[[0, 2, 3]].isnan().any()
    assert liger.cross_entropy(logits, target)[0].isnan()


@gpu
def test_cuda_more_than_2_31_logits():
    rows, V = 8448, 256000  # 2.16e9 bf16 logits
    logits = torch.randn(rows, V, device="cuda", dtype=torch.bfloat16)
    target = torch.randint(0, V, (rows,), device="cuda")
    target[::7] = -100
    logits.requires_grad_()
    loss, z = liger.cross_entropy(logits, target, None, -100, 0.05, 1e-4, None, "none")
    (loss * torch.linspace(0.5, 1.5, rows, device="cuda", dtype=torch.bfloat16)).sum().backward()
    kw = dict(weight=None, ignore_index=-100, label_smoothing=0.05, lse_square_scale=1e-4, softcap=None)
    g = torch.linspace(0.5, 1.5, rows, device="cuda", dtype=torch.bfloat16)
    for sl in (slice(0, 64), slice(rows // 2, rows // 2 + 64), slice(rows - 64, rows)):
        cpu_reference_check(logits[sl].detach(), target[sl], kw, "none", loss[sl].detach(), z[sl].detach(),
                            logits.grad[sl], g[sl], torch.zeros(64, device="cuda"))


@gpu
def test_cuda_fused_more_than_2_31_logits():
    rows, V = 8448, 256000  # 2.16e9 bf16 logits, and as many in the kept gradient
    logits = torch.randn(rows, V, device="cuda", dtype=torch.bfloat16)
    target = torch.randint(0, V, (rows,), device="cuda")
    target[::7] = -100
    logits.requires_grad_()
    loss, z = liger.cross_entropy(logits, target, None, -100, 0.05, 1e-4, None, "sum")
    loss.backward()
    kw = dict(weight=None, ignore_index=-100, label_smoothing=0.05, lse_square_scale=1e-4, softcap=None)
    ones = torch.ones((), device="cuda", dtype=torch.bfloat16)
    for sl in (slice(0, 64), slice(rows // 2, rows // 2 + 64), slice(rows - 64, rows)):
        x64 = logits[sl].detach().double().requires_grad_()
        rl, rz = reference(x64, target[sl], reduction="sum", **kw)
        (g64,) = torch.autograd.grad(rl, x64)
        err = (logits.grad[sl].double() - g64).abs().max().item()
        assert err <= grad_bound(g64, target[sl], kw, "sum", ones, 0.0, 12.0, torch.bfloat16), err
    with torch.no_grad():
        per_row, _ = liger.cross_entropy(logits, target, None, -100, 0.05, 1e-4, None, "none")
    want = per_row.double().sum()
    assert abs(loss.double() - want) <= 2 * 2**-8 * want.abs() + 1e-3


@gpu
@pytest.mark.parametrize("rows", ("64", "tail"))
@pytest.mark.parametrize("scale", (1.0, 0.37))
@pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
def test_cuda_graph_capture_and_replay(reduction, scale, rows):
    # scale 1: the fused forward's gradient is returned as is; 0.37: the backward rewrites it (both captured).
    # "tail": FAST options and 3 rows past two full rounds of one program per SM, split over the programs (their
    # counters zeroed by the captured stats kernel at every replay)
    opts = "all" if rows == "64" else "zloss"
    rows = 64 if rows == "64" else 2 * torch.cuda.get_device_properties(0).multi_processor_count + 3
    logits, target, kw = make_inputs((rows,), 128256, torch.bfloat16, "cuda", opts=opts)
    x = logits.clone().requires_grad_()
    static_target = target.clone()

    def step():
        loss, z = call(x, static_target, kw, reduction)
        return (loss, z) + torch.autograd.grad((loss * scale).sum(), (x,))

    def expected(new_logits, new_target):
        xe = new_logits.clone().requires_grad_()
        loss, z = call(xe, new_target, kw, reduction)
        return (loss, z) + torch.autograd.grad((loss * scale).sum(), (xe,))

    replay = iter(range(3))

    def fresh():
        new_logits, new_target, _ = make_inputs((rows,), 128256, torch.bfloat16, "cuda", opts=opts)
        if next(replay) == 1:
            new_target.fill_(kw["ignore_index"])  # the mean's divisor changes with the data: computed on the device
        return new_logits, new_target

    def same(got, want):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)

    def logits_intact(outputs, new_logits, new_target):
        assert torch.equal(x.detach(), new_logits)

    check_cuda_graph(step, (x, static_target), expected, fresh=fresh, check=logits_intact, compare=same)


@gpu
def test_cuda_bad_inputs():
    logits = torch.randn(4, 10, device="cuda")
    with pytest.raises(RuntimeError, match=r"cross_entropy: target is on cpu"):
        liger.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match=r"cross_entropy: weight is on cpu"):
        liger.cross_entropy(logits, torch.zeros(4, dtype=torch.long, device="cuda"), torch.ones(10))
    with pytest.raises(RuntimeError, match=r"float64 on CPU"):
        liger.cross_entropy(logits.double(), torch.zeros(4, dtype=torch.long, device="cuda"))
