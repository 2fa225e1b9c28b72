"""Tests of torch.ops.liger.fused_linear_cross_entropy (and its internal fused_linear_cross_entropy_fwd).

The reference is F.linear in float64 followed by the float64 cross-entropy reference of test_cross_entropy.
The op makes the logits in the input's dtype (as F.linear does) and computes the loss in fp32, so its error
against float64 is the rounding of the logits (half an ulp of the dtype times |logit|) plus the cross-entropy's
own (TOL there); gradients go through matrix products in the input's dtype with fp32 accumulation. CPU tests run
in CI; tests marked `gpu` need CUDA and skip without it.
"""
import pytest
import torch
from torch.library import opcheck

import liger_aot  # noqa: F401  (loads the operators)
from liger_aot import functional, ops
from liger_aot.nn import LigerFusedLinearCrossEntropyLoss
from _shared import check_compile_fullgraph, check_cuda_graph, compile_params, dtype_id, poison_freed_blocks
from test_cross_entropy import OPTIONS, REDUCTIONS, reference

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
EPS = {torch.float64: 2**-52, torch.float32: 2**-23, torch.bfloat16: 2**-8, torch.float16: 2**-11}


def make_inputs(tokens, H, V, dtype, device="cpu", opts="plain", bias=True, ignore_some=True):
    has_weight, ls, zs, cap, ii = OPTIONS[opts]
    x = torch.randn(*tokens, H, device=device).to(dtype)
    w = (torch.randn(V, H, device=device) / H**0.5 * 2).to(dtype)
    b = (torch.randn(V, device=device) * 0.5).to(dtype) if bias else None
    target = torch.randint(0, V, tokens, device=device)
    if ignore_some and target.numel() > 1:
        target.view(-1)[::5] = ii
    kw = dict(ce_weight=torch.rand(V, device=device) + 0.5 if has_weight else None, ignore_index=ii,
              label_smoothing=ls, lse_square_scale=zs, softcap=cap)
    return x, w, b, target, kw


def call(x, w, target, b, kw, reduction):
    return liger.fused_linear_cross_entropy(x, w, target, b, kw["ce_weight"], kw["ignore_index"],
                                            kw["label_smoothing"], kw["lse_square_scale"], kw["softcap"], reduction)


def ref(x, w, target, b, kw, reduction):
    logits = torch.nn.functional.linear(x, w, b)
    return reference(logits, target, kw["ce_weight"], kw["ignore_index"], kw["label_smoothing"],
                     kw["lse_square_scale"], kw["softcap"], reduction)


def rounded_logits_grads(x64, target, kw, reduction, g, dtype):
    """Gradients of input, weight, bias in float64 from the float64 logits' gradient rounded to dtype."""
    xi, wi, bi = x64
    logits = torch.nn.functional.linear(xi.detach(), wi.detach(), None if bi is None else bi.detach())
    logits = logits.to(dtype).double().requires_grad_()
    rl, _ = reference(logits, target, kw["ce_weight"], kw["ignore_index"], kw["label_smoothing"],
                      kw["lse_square_scale"], kw["softcap"], reduction)
    (dl,) = torch.autograd.grad(rl, logits, g)
    dl = dl.to(dtype).double().reshape(-1, wi.shape[0])
    x2 = xi.detach().reshape(-1, wi.shape[1])
    out = [(dl @ wi.detach()).reshape(xi.shape), dl.T @ x2]
    return out + ([dl.sum(0)] if bi is not None else [])


def check_flce(x, w, b, target, kw, reduction, *, grads=True, grad_output=None):
    dtype = x.dtype
    xs = [t.detach().clone().requires_grad_(grads) if t is not None else None for t in (x, w, b)]
    loss, z = call(xs[0], xs[1], target, xs[2], kw, reduction)
    x64 = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    rl, rz = ref(x64[0], x64[1], target, x64[2], kw, reduction)
    logits_mag = torch.nn.functional.linear(x64[0], x64[1], x64[2]).abs().max().item()
    lse_mag = torch.logsumexp(torch.nn.functional.linear(x64[0], x64[1], x64[2]), -1).abs().max().item()
    n = target.numel() if reduction == "sum" else 1
    # logits rounded to dtype (a relative ulp of the largest logit, twice: mean of errors of either sign) + fp32 CE
    tol = (2 * EPS[dtype] * logits_mag + 1e-5 * lse_mag) * n * (1 + 2 * kw["lse_square_scale"] * lse_mag)
    loss_dtype = torch.promote_types(dtype, torch.float32)  # fp32 loss for half inputs, as Liger-Kernel / HF
    assert loss.dtype == loss_dtype and z.dtype == loss_dtype and loss.shape == rl.shape
    err = (loss.detach().double() - rl.detach()).abs().max().item() if rl.numel() else 0.0
    assert err <= tol + 1e-12, f"loss: {err:.3g} > {tol:.3g}"
    assert not z.requires_grad
    if not grads:
        return loss, z
    g = torch.tensor(1.7, dtype=torch.float64) if grad_output is None else grad_output
    # An fp32 grad_output, rounded to the gradients' dtype by the op (the reference uses that rounding).
    loss.backward(g.to(loss_dtype).to(x.device))
    refs = torch.autograd.grad(rl, [t for t in x64 if t is not None], g.to(dtype).double().to(x.device))
    emulated = rounded_logits_grads(x64, target, kw, reduction, g.to(dtype).double().to(x.device), dtype)
    for name, got, want, emu in zip(("input", "weight", "bias"), [t for t in xs if t is not None], refs, emulated):
        mag = want.abs().max().item()
        # softmax of logits rounded to dtype: relative error EPS * |logit| in p; products of terms rounded to
        # dtype with fp32 accumulation: a few ulps of dtype relative to the largest gradient. At least twice the
        # error of the same products from the logits' gradient rounded to dtype (what any implementation that
        # multiplies in dtype incurs: fp16 flushes the smallest p / N to its subnormals).
        bound = max((8 * EPS[dtype] + EPS[dtype] * logits_mag + 1e-5) * max(mag, 1e-30),
                    2 * (emu - want).abs().max().item() if want.numel() else 0.0)
        e = (got.grad.double() - want).abs().max().item()
        assert got.grad.dtype == dtype and got.grad.shape == want.shape
        assert e <= bound, f"d {name}: {e:.3g} > {bound:.3g} (|grad| {mag:.3g})"
    return loss, z


# ---- CPU numerics


@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("opts", list(OPTIONS))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=dtype_id)
def test_matches_float64_reference(dtype, opts, reduction):
    x, w, b, target, kw = make_inputs((3, 7), 24, 53, dtype, opts=opts)
    check_flce(x, w, b, target, kw, reduction)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=dtype_id)
def test_half_precision_forward(dtype):
    x, w, b, target, kw = make_inputs((9,), 32, 40, dtype, opts="all")
    check_flce(x, w, b, target, kw, "mean", grads=False)


def test_half_precision_loss_is_fp32():
    """A bf16 input's loss is not rounded to bf16: a sum over 4096 tokens keeps fp32's precision (bf16's ulp there
    is 2^-8 relative). The reference is the float64 cross-entropy of the same bf16 logits."""
    torch.manual_seed(3)
    x = torch.randn(4096, 32).bfloat16()
    w = (torch.randn(50, 32) / 32**0.5 * 2).bfloat16()
    target = torch.randint(0, 50, (4096,))
    for reduction in ("sum", "mean", "none"):
        loss, z = ops.fused_linear_cross_entropy(x, w, target, reduction=reduction)
        want = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w).double(), target,
                                                 reduction=reduction)
        assert loss.dtype == z.dtype == torch.float32
        rel = ((loss.double() - want).abs() / want.abs()).max().item()
        assert rel <= 1e-5, f"{reduction}: relative error {rel:.3g}"


def test_reduction_none_forward_only():
    x, w, b, target, kw = make_inputs((10,), 16, 30, torch.float32, opts="all")
    check_flce(x, w, b, target, kw, "none", grads=False)
    with pytest.raises(RuntimeError, match=r"gradients need reduction 'mean' or 'sum'"):
        call(x.requires_grad_(), w, target, b, kw, "none")


def test_no_bias_and_weight_only_grad():
    x, w, _, target, kw = make_inputs((6,), 16, 21, torch.float64, bias=False, opts="smooth")
    check_flce(x, w, None, target, kw, "mean")
    wg = w.clone().requires_grad_()
    loss, _ = call(x, wg, target, None, kw, "sum")
    loss.backward()
    w64 = w.clone().requires_grad_()
    want, = torch.autograd.grad(ref(x, w64, target, None, kw, "sum")[0], [w64])
    torch.testing.assert_close(wg.grad, want)


def test_frozen_head_and_frozen_input():
    x, w, b, target, kw = make_inputs((6,), 16, 21, torch.float64, opts="all")
    for trainable in ((True, False, False), (False, True, True), (False, False, True)):
        leaves = [t.clone().requires_grad_(r) for t, r in zip((x, w, b), trainable)]
        call(leaves[0], leaves[1], target, leaves[2], kw, "mean")[0].backward()
        full = [t.clone().requires_grad_() for t in (x, w, b)]
        call(full[0], full[1], target, full[2], kw, "mean")[0].backward()
        for leaf, ref_leaf, r in zip(leaves, full, trainable):
            assert (leaf.grad is not None) == r
            if r:
                assert torch.equal(leaf.grad, ref_leaf.grad)
    _, _, gi, gw, gb = liger.fused_linear_cross_entropy_fwd(x, w, target, b, None, -100, 0.0, 0.0, None, "mean",
                                                           [True, False, False])
    assert gi.shape == x.shape and gw.numel() == 0 and gb.numel() == 0


def test_all_targets_ignored_and_single_token():
    x, w, b, target, kw = make_inputs((4,), 8, 12, torch.float64, opts="weight", ignore_some=False)
    target.fill_(kw["ignore_index"])
    xg = x.clone().requires_grad_()
    loss, z = call(xg, w, target, b, kw, "mean")
    assert loss.isnan() and z.isnan()
    assert call(x, w, target, b, kw, "sum")[0].item() == 0
    x, w, b, target, kw = make_inputs((1,), 8, 12, torch.float64, opts="all", ignore_some=False)
    check_flce(x, w, b, target, kw, "mean")


def test_backward_with_retain_graph_keeps_the_gradients():
    x, w, b, target, kw = make_inputs((4,), 8, 12, torch.float64)
    xg = x.clone().requires_grad_()
    loss, _ = call(xg, w, target, b, kw, "mean")
    loss.backward(torch.tensor(2.0, dtype=torch.float64), retain_graph=True)
    first = xg.grad.clone()
    xg.grad = None
    loss.backward(torch.tensor(2.0, dtype=torch.float64))  # the saved gradients were not scaled in place
    assert torch.equal(xg.grad, first)
    xg.grad = None
    loss2, _ = call(xg, w, target, b, kw, "mean")
    (loss2 * 2.0).backward()
    assert torch.equal(xg.grad, first)


def test_gradcheck():
    for opts in ("plain", "all"):
        for reduction in ("mean", "sum"):
            x, w, b, target, kw = make_inputs((5,), 4, 7, torch.float64, opts=opts)
            args = [t.requires_grad_() for t in (x, w, b)]
            assert torch.autograd.gradcheck(lambda x, w, b: call(x, w, target, b, kw, reduction)[0], args), opts


def test_python_wrappers_functional_and_module():
    x, w, b, target, kw = make_inputs((2, 3), 16, 30, torch.float32, opts="all")
    want, want_z = call(x, w, target, b, kw, "mean")
    got = ops.fused_linear_cross_entropy(x, w, target, b, kw["ce_weight"], kw["ignore_index"], kw["label_smoothing"],
                                         kw["lse_square_scale"], kw["softcap"], "mean")
    assert torch.equal(got[0], want) and torch.equal(got[1], want_z)
    f = functional.liger_fused_linear_cross_entropy(x, w, target, b, kw["ce_weight"], kw["ignore_index"],
                                                    kw["lse_square_scale"], kw["label_smoothing"], "mean",
                                                    kw["softcap"], return_z_loss=True)
    assert torch.equal(f[0], want) and torch.equal(f[1], want_z)
    module = LigerFusedLinearCrossEntropyLoss(ce_weight=kw["ce_weight"], ignore_index=kw["ignore_index"],
                                              lse_square_scale=kw["lse_square_scale"],
                                              label_smoothing=kw["label_smoothing"], softcap=kw["softcap"])
    assert torch.equal(module(w, x, target, b), want)
    with pytest.raises(NotImplementedError, match="accum_dtype"):
        LigerFusedLinearCrossEntropyLoss(accum_dtype=torch.float32)


# ---- opcheck, export, compile


def opcheck_samples(device):
    samples = []
    for dtype in CUDA_DTYPES:
        for opts, bias in (("plain", False), ("all", True)):
            for reduction in ("mean", "sum", "none"):
                for grad in (False, True) if reduction != "none" else (False,):
                    x, w, b, target, kw = make_inputs((2, 5), 16, 37, dtype, device, opts=opts, bias=bias)
                    for t in (x, w, b):
                        if t is not None:
                            t.requires_grad_(grad)
                    args = (x, w, target, b, kw["ce_weight"], kw["ignore_index"], kw["label_smoothing"],
                            kw["lse_square_scale"], kw["softcap"], reduction)
                    samples.append(("fused_linear_cross_entropy", args, grad))
                    if not grad:
                        mask = [reduction != "none", reduction == "sum", bias and reduction != "none"]
                        samples.append(("fused_linear_cross_entropy_fwd", args + (mask,), False))
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
    tests = ["test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"]
    opcheck(getattr(liger, name).default, args, test_utils=tests)


class Head(torch.nn.Module):
    def forward(self, x, w, target):
        loss, z = torch.ops.liger.fused_linear_cross_entropy(x, w, target, None, None, -100, 0.1, 1e-3, None, "mean")
        return loss, z


def test_export_dynamic_shapes(tmp_path):
    model = Head()
    n = torch.export.Dim("tokens", min=2, max=1 << 20)
    x, w, _, target, _ = make_inputs((6,), 16, 40, torch.float32, bias=False)
    ep = torch.export.export(model, (x, w, target), dynamic_shapes={"x": {0: n}, "w": None, "target": {0: n}})
    assert any(node.target is liger.fused_linear_cross_entropy.default for node in ep.graph.nodes)
    path = tmp_path / "flce.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    for tokens in (2, 9):
        x, _, _, target, _ = make_inputs((tokens,), 16, 40, torch.float32, bias=False)
        want = model(x, w, target)
        for m in (ep.module(), loaded.module()):
            for a, b in zip(m(x, w, target), want):
                assert torch.equal(a, b)


@pytest.mark.parametrize("device,backend,dynamic", compile_params())
def test_compile_fullgraph(device, backend, dynamic):
    def f(x, w, b, target):
        loss, z = liger.fused_linear_cross_entropy(x * 2.0, w, target, b, None, -100, 0.0, 1e-3, 20.0, "mean")
        return loss * 3.0

    cases = []
    for tokens in (8, 13):
        x, w, b, target, _ = make_inputs((tokens,), 32, 96, torch.float32, device)
        cases.append(((x, w, b, target), (0, 1, 2), None))
    check_compile_fullgraph(f, cases, backend, dynamic,
                            compare=lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6))


def test_bad_inputs():
    x, w, b, target, _ = make_inputs((4,), 8, 10, torch.float32)
    cases = [
        ((x, w.double(), target), {}, r"fused_linear_cross_entropy: weight must have input's dtype"),
        ((x, w[:, :7], target), {}, r"fused_linear_cross_entropy: weight must have shape \[vocab, 8\]"),
        ((x, w, target[:3]), {}, r"fused_linear_cross_entropy: target must have shape \[4\]"),
        ((x, w, target.float()), {}, r"fused_linear_cross_entropy: target must be int64"),
        ((x, w, target), {"bias": b[:9]}, r"fused_linear_cross_entropy: bias must have shape \[10\]"),
        ((x, w, target), {"ce_weight": torch.rand(9)}, r"fused_linear_cross_entropy: ce_weight must have shape \[10\]"),
        ((x, w, target), {"reduction": "avg"}, r"fused_linear_cross_entropy: reduction must be"),
        ((x.long(), w.long(), target), {}, r"fused_linear_cross_entropy: input must be float32"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(RuntimeError, match=match):
            liger.fused_linear_cross_entropy(*args, **kwargs)


# =====================================================================================================
# GPU tests. Run with `pytest -m gpu`.


@gpu
@pytest.mark.parametrize("reduction", ("mean", "sum"))
@pytest.mark.parametrize("opts", ["plain", "all"])
@pytest.mark.parametrize("V", (32000, 128256, 50257))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_matches_float64_reference(dtype, V, opts, reduction):
    # 1200 tokens: several chunks (512 tokens of 128256 bf16 logits per chunk), the last one partial
    x, w, b, target, kw = make_inputs((1200,), 256, V, dtype, "cuda", opts=opts)
    poison_freed_blocks((512 * V, dtype))  # NaN where the logits chunk and the gradients will be allocated
    poison_freed_blocks((V * 256, dtype))
    check_flce(x, w, b, target, kw, reduction)


@gpu
def test_cuda_matches_cpu_and_none_reduction():
    x, w, b, target, kw = make_inputs((3, 100), 64, 32000, torch.float32, "cuda", opts="all")
    for reduction in REDUCTIONS:
        got = call(x, w, target, b, kw, reduction)
        cpu_kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
        want = call(x.cpu(), w.cpu(), target.cpu(), b.cpu(), cpu_kw, reduction)
        for a, c in zip(got, want):
            torch.testing.assert_close(a.cpu(), c, rtol=1e-5, atol=1e-5)


@gpu
def test_cuda_peak_memory_is_one_chunk():
    tokens, H, V = 4096, 1024, 128256
    x, w, _, target, kw = make_inputs((tokens,), H, V, torch.bfloat16, "cuda", bias=False)
    x.requires_grad_()
    w.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss, _ = call(x, w, target, None, kw, "mean")
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    grads = x.numel() * 2 + w.numel() * 2
    # the logits chunk + per-row fp32 buffers + cuBLAS's workspace (allocated by PyTorch on first use per stream)
    chunk = (1 << 27) + 8 * tokens * 4 + (64 << 20)
    assert extra <= grads + chunk, f"peak extra {extra / 2**20:.0f} MiB > {(grads + chunk) / 2**20:.0f} MiB"
    assert extra - grads < tokens * V * 2 / 4  # far below the logits of all tokens (1 GB here)


@gpu
def test_cuda_graph_capture_and_replay():
    x, w, b, target, kw = make_inputs((700,), 128, 32000, torch.bfloat16, "cuda", opts="all")
    static = [t.clone().requires_grad_() for t in (x, w, b)]
    static_target = target.clone()

    def step():
        loss, z = call(static[0], static[1], static_target, static[2], kw, "mean")
        return (loss, z) + torch.autograd.grad(loss, static)

    def expected(nx, nw, nb, nt):
        fresh = [t.clone().requires_grad_() for t in (nx, nw, nb)]
        loss, z = call(fresh[0], fresh[1], nt, fresh[2], kw, "mean")
        return (loss, z) + torch.autograd.grad(loss, fresh)

    def close(got, want):  # cuBLAS may pick other kernels under capture: close, not bitwise (the divisor on the
        # device is what this checks: a stale or host-side count would be off by far more)
        torch.testing.assert_close(got.float(), want.float(), rtol=2**-7, atol=2**-7 * want.abs().max().item())

    def fresh():
        nx, nw, nb, nt, _ = make_inputs((700,), 128, 32000, torch.bfloat16, "cuda", opts="all")
        return nx, nw, nb, nt

    check_cuda_graph(step, (*static, static_target), expected, fresh=fresh, replays=2, compare=close)
