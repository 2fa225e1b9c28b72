"""Tests of torch.ops.liger.rope, qwen2vl_mrope and llama4_rope (and the internal rope_bwd / llama4_rope_bwd).

The references are Hugging Face's formulas written here in float64 (apply_rotary_pos_emb with rotate_half,
apply_multimodal_rotary_pos_emb, Llama 4's complex apply_rotary_emb), never the op's CPU path. Numerics follow
FlashAttention's rule: the op's error may be at most twice the error of the same formula computed by eager
PyTorch at the inputs' precision, plus FLOOR_ULPS ulps of the result's magnitude. Tests marked `gpu` need CUDA.
"""
import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot import ops
from _shared import dtype_id, opcheck_params, poison_freed_blocks

liger = torch.ops.liger
gpu = pytest.mark.gpu

CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CPU_DTYPES = CUDA_DTYPES + (torch.float64,)
DEVICES = ("cpu", pytest.param("cuda", marks=gpu))
# 2 ulps: the op and the baseline may each round a final result once the other way.
FLOOR_ULPS = 2


# ---- Hugging Face formulas (the definitions) and eager baselines


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def hf_rope(q, k, cos, sin, unsqueeze_dim=1):
    """apply_rotary_pos_emb; with cos's last dimension R < D only the first R columns rotate (partial rotary)."""
    c, s = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    r = cos.shape[-1]

    def one(x):
        xr, xp = x[..., :r], x[..., r:]
        return torch.cat((xr * c + rotate_half(xr) * s, xp), dim=-1)

    return one(q), one(k)


def hf_mrope(q, k, cos, sin, mrope_section, unsqueeze_dim=1):
    """apply_multimodal_rotary_pos_emb (Qwen2-VL)."""
    mrope_section = mrope_section * 2
    cos = torch.cat([m[i % 3] for i, m in enumerate(cos.split(mrope_section, dim=-1))], dim=-1)
    sin = torch.cat([m[i % 3] for i, m in enumerate(sin.split(mrope_section, dim=-1))], dim=-1)
    return hf_rope(q, k, cos, sin, unsqueeze_dim)


def hf_llama4(xq, xk, freqs_cis):
    """Llama 4 apply_rotary_emb, at freqs_cis's precision (complex128 for the reference)."""
    real = torch.float64 if freqs_cis.dtype == torch.complex128 else torch.float32

    def one(x):
        xc = torch.view_as_complex(x.to(real).reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(xc * freqs_cis[:, :, None, :]).flatten(3)

    return one(xq), one(xk)


def eager_rope(q, k, cos, sin, unsqueeze_dim):
    """The formula as eager PyTorch computes it: in q's dtype when cos has it, else promoted to fp32 and rounded."""
    if cos.dtype == q.dtype:
        return hf_rope(q, k, cos, sin, unsqueeze_dim)
    oq, ok = hf_rope(q.float(), k.float(), cos.float(), sin.float(), unsqueeze_dim)
    return oq.to(q.dtype), ok.to(k.dtype)


def check_error(name, dtype, op, eager, ref, scale, what=""):
    op_err = (op.double() - ref).abs().max().item() if ref.numel() else 0.0
    eager_err = (eager.double() - ref).abs().max().item() if ref.numel() else 0.0
    bound = 2 * eager_err + FLOOR_ULPS * torch.finfo(dtype).eps * scale
    assert op_err <= bound, (f"{what}{name}: max |op - float64| = {op_err:.3g} exceeds {bound:.3g} "
                             f"(eager {dtype_id(dtype)} error {eager_err:.3g}, magnitude {scale:.3g})")


def magnitude(x, *coeffs):
    amax = lambda t: t.abs().max().item() if t.numel() else 0.0  # noqa: E731
    return amax(x) * sum(amax(c) for c in coeffs)


def grads_of(fn, inputs, outputs_grads):
    """(outputs, input gradients) of fn(*inputs) through autograd."""
    xs = [t.detach().requires_grad_() for t in inputs]
    outs = fn(*xs)
    gs = torch.autograd.grad(outs, xs, outputs_grads, allow_unused=True)
    return [o.detach() for o in outs], gs


def check_rope(q, k, cos, sin, udim, what=""):
    """Forward and q/k gradients of liger.rope against the float64 formula, under the 2x rule."""
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    (oq, ok), (dq, dk) = grads_of(lambda a, b: liger.rope(a, b, cos, sin, udim), (q, k), (gq, gk))
    d64 = lambda t: t.detach().double()  # noqa: E731
    (rq, rk), (rdq, rdk) = grads_of(lambda a, b: hf_rope(a, b, d64(cos), d64(sin), udim), (d64(q), d64(k)),
                                    (d64(gq), d64(gk)))
    (eq, ek), (edq, edk) = grads_of(lambda a, b: eager_rope(a, b, cos, sin, udim), (q, k), (gq, gk))
    for name, o, e, r, x in (("q", oq, eq, rq, q), ("k", ok, ek, rk, k)):
        assert o.shape == x.shape and o.dtype == x.dtype
        check_error(name, q.dtype, o, e, r, magnitude(x, cos, sin), what)
    for name, o, e, r, g in (("dq", dq, edq, rdq, gq), ("dk", dk, edk, rdk, gk)):
        assert o.shape == g.shape and o.dtype == g.dtype
        check_error(name, q.dtype, o, e, r, magnitude(g, cos, sin), what)
    with torch.no_grad():  # the inference path gives the same values
        nq, nk = liger.rope(q, k, cos, sin, udim)
    assert torch.equal(nq, oq) and torch.equal(nk, ok)


# ---- inputs


def rope_table(positions, dim, dtype, base=10000.0):
    """cos/sin rows for the given position ids ([B, S] -> [B, S, dim]) as Llama's rotary embedding makes them."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
    freqs = positions.double()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def make_case(case, dtype, device="cpu"):
    """(q, k, cos, sin, unsqueeze_dim) for a named layout; cos/sin halves differ unless stated."""
    randn = lambda *s, dt=dtype: torch.randn(*s, dtype=dt, device=device)  # noqa: E731
    B, S, Hq, Hk, D = 2, 5, 4, 2, 16
    if case == "bhsd":
        return randn(B, Hq, S, D), randn(B, Hk, S, D), randn(B, S, D), randn(B, S, D), 1
    if case == "bshd":
        return randn(B, S, Hq, D), randn(B, S, Hk, D), randn(B, S, D), randn(B, S, D), 2
    if case == "negative_unsqueeze_dim":
        return randn(B, Hq, S, D), randn(B, Hk, S, D), randn(B, S, D), randn(B, S, D), -3
    if case == "hf_transpose_view":  # q_proj(x).view(B, S, H, D).transpose(1, 2)
        return (randn(B, S, Hq * D).view(B, S, Hq, D).transpose(1, 2),
                randn(B, S, Hk * D).view(B, S, Hk, D).transpose(1, 2), randn(B, S, D), randn(B, S, D), 1)
    if case == "fused_qkv":  # slices of one QKV projection: neither q nor k is dense
        qkv = randn(B, S, (Hq + 2 * Hk) * D)
        q = qkv[..., :Hq * D].view(B, S, Hq, D).transpose(1, 2)
        k = qkv[..., Hq * D:(Hq + Hk) * D].view(B, S, Hk, D).transpose(1, 2)
        return q, k, randn(B, S, D), randn(B, S, D), 1
    if case == "partial_rotary":  # R = 8 of D = 20
        return randn(B, Hq, S, 20), randn(B, Hk, S, 20), randn(B, S, 8), randn(B, S, 8), 1
    if case == "broadcast_cos":
        return randn(B, Hq, S, D), randn(B, Hk, S, D), randn(1, S, D), randn(1, S, D), 1
    if case == "expanded_cos":
        return randn(B, Hq, S, D), randn(B, Hk, S, D), randn(1, S, D).expand(B, S, D), randn(B, S, D), 1
    if case == "position_ids":  # a different, non-monotonic position sequence per batch row
        pos = torch.stack([torch.randperm(100, device=device)[:S], torch.arange(40, 40 + S, device=device)])
        cos, sin = rope_table(pos, D, dtype)
        return randn(B, Hq, S, D), randn(B, Hk, S, D), cos, sin, 1
    if case == "odd_sizes":  # S 7, D 6, 3 q heads, 1 k head
        return randn(3, 3, 7, 6), randn(3, 1, 7, 6), randn(3, 7, 6), randn(3, 7, 6), 1
    if case == "cos_fp32":
        return (randn(B, Hq, S, D), randn(B, Hk, S, D), randn(B, S, D, dt=torch.float32),
                randn(B, S, D, dt=torch.float32), 1)
    if case == "strided_last_dim":
        return (randn(B, Hq, S, 2 * D)[..., ::2], randn(B, Hk, S, D), randn(B, S, 2 * D)[..., ::2],
                randn(B, S, D), 1)
    raise ValueError(case)


CASES = ("bhsd", "bshd", "negative_unsqueeze_dim", "hf_transpose_view", "fused_qkv", "partial_rotary",
         "broadcast_cos", "expanded_cos", "position_ids", "odd_sizes", "cos_fp32", "strided_last_dim")


# ---- CPU numerics


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
def test_rope_matches_float64_reference(dtype, case):
    q, k, cos, sin, udim = make_case(case, dtype)
    check_rope(q, k, cos, sin, udim)


def test_rope_output_keeps_dense_layout():
    q = torch.randn(2, 5, 4, 16).transpose(1, 2)  # [B, H, S, D] with strides of [B, S, H, D]
    k = torch.randn(2, 2, 5, 16)
    oq, ok = liger.rope(q, k, torch.randn(2, 5, 16), torch.randn(2, 5, 16), 1)
    assert oq.stride() == q.stride() and ok.stride() == k.stride()


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_take_the_inputs_layout(device):
    # HF's q/k are transposed views of [B, S, H, D] projections: their gradients are produced in that layout
    # (whatever the incoming gradient's), so q_proj's backward and AccumulateGrad need no copy.
    q0 = torch.randn(2, 5, 4, 16, device=device, requires_grad=True)
    k0 = torch.randn(2, 2, 5, 16, device=device, requires_grad=True)  # a contiguous [B, H, S, D] k
    cos, sin = torch.randn(1, 5, 16, device=device), torch.randn(1, 5, 16, device=device)
    q = q0.transpose(1, 2)
    seen = {}
    q.register_hook(lambda g: seen.__setitem__("q", g))
    k0.register_hook(lambda g: seen.__setitem__("k", g))
    oq, ok = liger.rope(q, k0, cos, sin, 1)
    gq = torch.randn_like(oq, memory_format=torch.contiguous_format)  # [B, H, S, D] contiguous: not q's layout
    gk = torch.randn(2, 5, 2, 16, device=device).transpose(1, 2)  # not k's layout either
    torch.autograd.backward((oq, ok), (gq, gk))
    assert seen["q"].stride() == q.stride() and seen["k"].stride() == k0.stride()
    # values: the transpose of the forward map applied to the gradients (float64 reference)
    qd, kd = q.detach().double().requires_grad_(), k0.detach().double().requires_grad_()
    torch.autograd.backward(hf_rope(qd, kd, cos.double(), sin.double()),
                            (gq.double(), gk.double()))
    torch.testing.assert_close(q0.grad.transpose(1, 2).double(), qd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k0.grad.double(), kd.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="q_order must be empty or a permutation"):
        liger.rope_bwd(gq, ok, cos, sin, 1, [0, 1, 1, 3], [])


def test_wrappers_and_drop_ins():
    q, k, cos, sin, _ = make_case("bhsd", torch.float32)
    expected = liger.rope(q, k, cos, sin, 1)
    for got in (ops.rope(q, k, cos, sin), ops.liger_rotary_pos_emb(q, k, cos, sin, None, 1),
                ops.rope(q, k, cos[:1].squeeze(0).expand(5, 16), sin[:1].squeeze(0))):
        assert got[0].shape == expected[0].shape
    assert all(torch.equal(a, b) for a, b in zip(ops.liger_rotary_pos_emb(q, k, cos, sin), expected))
    # 2-D cos/sin [S, R] broadcast over the batch
    a = ops.rope(q, k, cos[0], sin[0])
    b = liger.rope(q, k, cos[:1], sin[:1], 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", ("bhsd", "bshd"))
@pytest.mark.parametrize("section", ([2, 3, 3], [16, 24, 24], [1, 1, 1, 1]))
def test_qwen2vl_mrope_matches_float64_reference(section, layout, dtype):
    B, S, Hq, Hk = 2, 6, 4, 2
    D = 2 * sum(section)
    udim = 1 if layout == "bhsd" else 2
    shape = (lambda h: (B, h, S, D)) if udim == 1 else (lambda h: (B, S, h, D))
    q, k = torch.randn(shape(Hq), dtype=dtype), torch.randn(shape(Hk), dtype=dtype)
    pos = torch.randint(0, 50, (3, B, S))  # t, h, w position ids
    cos, sin = rope_table(pos, D, dtype)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    fn = lambda a, b: ops.liger_multimodal_rotary_pos_emb(a, b, cos, sin, section, udim)  # noqa: E731
    (oq, ok), (dq, dk) = grads_of(fn, (q, k), (gq, gk))
    d64 = lambda t: t.double()  # noqa: E731
    (rq, rk), (rdq, rdk) = grads_of(lambda a, b: hf_mrope(a, b, d64(cos), d64(sin), section, udim),
                                    (d64(q), d64(k)), (d64(gq), d64(gk)))
    (eq, ek), (edq, edk) = grads_of(lambda a, b: hf_mrope(a, b, cos, sin, section, udim), (q, k), (gq, gk))
    for name, o, e, r, x in (("q", oq, eq, rq, q), ("k", ok, ek, rk, k), ("dq", dq, edq, rdq, gq),
                             ("dk", dk, edk, rdk, gk)):
        check_error(name, dtype, o, e, r, magnitude(x, cos, sin))


def make_freqs(B, S, half, device="cpu"):
    return torch.polar(torch.rand(B, S, half, device=device) + 0.5, torch.randn(B, S, half, device=device) * 3)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", ((2, 5, 4, 2, 16), (1, 7, 3, 1, 6), (3, 2, 2, 2, 128)))
@pytest.mark.parametrize("freqs_batch", ("per_batch", "broadcast", "2d", "2d_view_as_real"))
def test_llama4_rope_matches_float64_reference(freqs_batch, shape, dtype):
    B, S, Hq, Hk, D = shape
    q, k = torch.randn(B, S, Hq, D, dtype=dtype), torch.randn(B, S, Hk, D, dtype=dtype)
    freqs = make_freqs(B if freqs_batch == "per_batch" else 1, S, D // 2)
    arg = {"2d": freqs[0], "2d_view_as_real": torch.view_as_real(freqs[0])}.get(freqs_batch, freqs)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    (oq, ok), (dq, dk) = grads_of(lambda a, b: ops.llama4_rope(a, b, arg), (q, k), (gq, gk))
    (rq, rk), (rdq, rdk) = grads_of(lambda a, b: hf_llama4(a, b, freqs.to(torch.complex128)),
                                    (q.double(), k.double()), (gq.double(), gk.double()))
    # eager baseline: Hugging Face's own formula (fp32 complex math, rounded to q's dtype)
    eager = lambda a, b: tuple(t.to(dtype) for t in hf_llama4(a, b, freqs))  # noqa: E731
    (eq, ek), (edq, edk) = grads_of(eager, (q, k), (gq, gk))
    f = freqs.abs()
    for name, o, e, r, x in (("q", oq, eq, rq, q), ("k", ok, ek, rk, k), ("dq", dq, edq, rdq, gq),
                             ("dk", dk, edk, rdk, gk)):
        assert o.dtype == dtype and o.shape == x.shape
        check_error(name, dtype, o, e, r, magnitude(x, f))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ((0, 4, 5, 16), (2, 4, 0, 16), (2, 0, 5, 16)))
def test_zero_size(device, shape):
    q = torch.randn(shape, device=device, requires_grad=True)
    k = torch.randn(shape[0], 2, shape[2], 16, device=device, requires_grad=True)
    cos = torch.randn(max(shape[0], 1), shape[2], 16, device=device)
    oq, ok = liger.rope(q, k, cos, cos, 1)
    assert oq.shape == q.shape and ok.shape == k.shape
    (oq.sum() + ok.sum()).backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


# ---- gradients (fp64 gradcheck, cos/sin included)


@pytest.mark.parametrize("case", ("bhsd", "bshd", "partial_rotary", "broadcast_cos", "fused_qkv"))
def test_rope_gradcheck(case):
    q, k, cos, sin, udim = make_case(case, torch.float64)
    args = [t.detach().clone().requires_grad_() for t in (q[:, :, :3], k[:, :, :3], cos[:, :3], sin[:, :3])] \
        if case != "bshd" else [t.detach().clone().requires_grad_() for t in (q, k, cos, sin)]
    assert torch.autograd.gradcheck(lambda *a: liger.rope(*a, udim), args)


def test_rope_gradcheck_only_cos_sin():
    q, k = torch.randn(2, 3, 4, 8, dtype=torch.float64), torch.randn(2, 1, 4, 8, dtype=torch.float64)
    cos, sin = (torch.randn(1, 4, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda c, s: liger.rope(q, k, c, s, 1), (cos, sin))


def test_llama4_and_mrope_gradcheck():
    q = torch.randn(2, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 1, 8, dtype=torch.float64, requires_grad=True)
    fc, fs = (torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *a: liger.llama4_rope(*a), (q, k, fc, fs))
    qm = torch.randn(2, 2, 3, 12, dtype=torch.float64, requires_grad=True)
    km = torch.randn(2, 1, 3, 12, dtype=torch.float64, requires_grad=True)
    c, s = (torch.randn(3, 2, 3, 12, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda *a: liger.qwen2vl_mrope(*a, [2, 2, 2], 1), (qm, km, c, s))


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_raises(device):
    q = torch.randn(1, 2, 3, 8, device=device, requires_grad=True)
    k = torch.randn(1, 1, 3, 8, device=device, requires_grad=True)
    cos = torch.randn(1, 3, 8, device=device)
    oq, ok = liger.rope(q, k, cos, cos, 1)
    dq, dk = torch.autograd.grad(oq.square().sum() + ok.square().sum(), (q, k), create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(dq.sum() + dk.sum(), (q, k))


def kv_cache_case(dtype, device, B=2, S=3, Hq=4, Hk=2, D=16, L=9, rot=None, cos_batch=1, fused=False,
                  cache_dtype=None):
    """q/k/v (views of one fused projection when fused), fp32 cos/sin tables at the new positions, caches filled
    with random values (a skipped or misplaced write shows), and the slots."""
    g = torch.Generator().manual_seed(7)

    def r(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dt)

    if fused:
        qkv = r(B, S, (Hq + 2 * Hk) * D)
        q, k, v = qkv.split([Hq * D, Hk * D, Hk * D], -1)
        q, k, v = q.view(B, S, Hq, D), k.view(B, S, Hk, D), v.view(B, S, Hk, D)
    else:
        q, k, v = r(B, S, Hq, D), r(B, S, Hk, D), r(B, S, Hk, D)
    slots = torch.randperm(L, generator=g)[:S].to(device)
    rot = rot or D
    cos, sin = rope_table(torch.arange(cos_batch * S).view(cos_batch, S) * 3 + 1, rot, torch.float32)
    cos, sin = cos.to(device), sin.to(device)
    k_cache, v_cache = r(B, L, Hk, D, dt=cache_dtype or dtype), r(B, L, Hk, D, dt=cache_dtype or dtype)
    return q, k, v, cos, sin, k_cache, v_cache, slots


# ---- opcheck


def opcheck_samples(device):
    def t(*shape, dtype=torch.float32, grad=False):
        return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(grad)

    samples = []
    for dtype in (torch.float32, torch.bfloat16):
        for grad in (False, True):
            samples.append(("rope", (t(2, 4, 5, 16, dtype=dtype, grad=grad), t(2, 2, 5, 16, dtype=dtype, grad=grad),
                                     t(2, 5, 16, dtype=dtype), t(2, 5, 16, dtype=dtype), 1), grad))
            samples.append(("rope", (t(2, 5, 3, 20, dtype=dtype, grad=grad), t(2, 5, 1, 20, dtype=dtype, grad=grad),
                                     t(1, 5, 8, grad=grad), t(1, 5, 8, grad=grad), 2), grad))
            samples.append(("rope_bwd", (t(2, 4, 5, 16, dtype=dtype), t(2, 2, 5, 16, dtype=dtype),
                                         t(2, 5, 16, dtype=dtype), t(2, 5, 16, dtype=dtype), 1), False))
            samples.append(("rope_bwd", (t(2, 4, 5, 16, dtype=dtype), t(2, 2, 5, 16, dtype=dtype),
                                         t(1, 5, 16, dtype=dtype), t(1, 5, 16, dtype=dtype), 1, [0, 2, 1, 3],
                                         [0, 2, 1, 3]), False))
            samples.append(("llama4_rope", (t(2, 5, 3, 8, dtype=dtype, grad=grad),
                                            t(2, 5, 1, 8, dtype=dtype, grad=grad), t(2, 5, 4, grad=grad),
                                            t(2, 5, 4, grad=grad)), grad))
            samples.append(("llama4_rope_bwd", (t(2, 5, 3, 8, dtype=dtype), t(2, 5, 1, 8, dtype=dtype), t(1, 5, 4),
                                                t(1, 5, 4)), False))
            samples.append(("qwen2vl_mrope", (t(2, 3, 4, 12, dtype=dtype, grad=grad),
                                              t(2, 1, 4, 12, dtype=dtype, grad=grad), t(3, 2, 4, 12, dtype=dtype),
                                              t(3, 2, 4, 12, dtype=dtype), [2, 2, 2], 1), grad))
        # rope_kv_cache (inference only: no grad cases)
        samples.append(("rope_kv_cache", kv_cache_case(dtype, device), False))
        samples.append(("rope_kv_cache", kv_cache_case(dtype, device, fused=True, rot=8), False))
    return samples


@pytest.mark.parametrize("device,index", opcheck_params(opcheck_samples))
def test_opcheck(device, index):
    name, args, _ = opcheck_samples(device)[index]
    opcheck(getattr(liger, name).default, args,
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))


# ---- torch.export, TorchScript, torch.compile


class Attention(torch.nn.Module):
    """HF-style q/k projection, view, transpose and RoPE: what export and TorchScript see."""

    def __init__(self, hq=4, hk=2, d=16):
        super().__init__()
        self.hq, self.hk, self.d = hq, hk, d
        self.q_proj = torch.nn.Linear(hq * d, hq * d)
        self.k_proj = torch.nn.Linear(hq * d, hk * d)

    def forward(self, x, cos, sin):
        b, s = x.shape[0], x.shape[1]
        q = self.q_proj(x).view(b, s, self.hq, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.hk, self.d).transpose(1, 2)
        oq, ok = torch.ops.liger.rope(q, k, cos, sin, 1)
        return oq.sum(1) + ok.sum(1)


def test_export_dynamic_batch_and_seq(tmp_path):
    model = Attention()
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=8192)
    dims = {"x": {0: batch, 1: seq}, "cos": {0: batch, 1: seq}, "sin": {0: batch, 1: seq}}
    args = (torch.randn(2, 3, 64), torch.randn(2, 3, 16), torch.randn(2, 3, 16))
    ep = torch.export.export(model, args, dynamic_shapes=dims)
    nodes = lambda g: [n for n in g.nodes if n.target is torch.ops.liger.rope.default]  # noqa: E731
    assert len(nodes(ep.graph)) == 1
    path = tmp_path / "rope.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        for b, s in ((1, 2), (4, 17), (3, 5)):
            a = (torch.randn(b, s, 64), torch.randn(b, s, 16), torch.randn(b, s, 16))
            assert torch.equal(ep.module()(*a), model(*a))
            assert torch.equal(loaded.module()(*a), model(*a))


def test_torchscript_save_load_and_backward(tmp_path):
    model = Attention()
    scripted = torch.jit.script(model)
    assert "liger::rope" in str(scripted.graph)
    path = tmp_path / "rope.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x, cos, sin = torch.randn(2, 3, 64), torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    outs = []
    for m in (model, loaded):
        xg = x.clone().requires_grad_()
        y = m(xg, cos, sin)
        y.sum().backward()
        outs.append((y.detach(), xg.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_torchscript_wrappers():
    @torch.jit.script
    def f(q, k, cos, sin, cos3, sin3, freqs_cos_sin):
        a = liger_aot.ops.rope(q, k, cos, sin, 1)
        b = liger_aot.ops.qwen2vl_mrope(q, k, cos3, sin3, [2, 3, 3], 1)
        c = liger_aot.ops.llama4_rope(q.transpose(1, 2), k.transpose(1, 2), freqs_cos_sin)
        return a[0] + b[0] + c[0].transpose(1, 2)

    q, k = torch.randn(2, 3, 4, 16), torch.randn(2, 1, 4, 16)
    cos, sin = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    c3, s3 = torch.randn(3, 2, 4, 16), torch.randn(3, 2, 4, 16)
    freqs = torch.randn(2, 4, 8, 2)  # real/imag pairs, as view_as_real(freqs_cis) gives them
    expected = (ops.rope(q, k, cos, sin)[0] + ops.qwen2vl_mrope(q, k, c3, s3, [2, 3, 3])[0]
                + ops.llama4_rope(q.transpose(1, 2), k.transpose(1, 2), freqs)[0].transpose(1, 2))
    assert torch.equal(f(q, k, cos, sin, c3, s3, freqs), expected)


def compile_params():
    return [pytest.param("cpu", d, id=f"cpu-dynamic{d}") for d in (False, True)] + \
        [pytest.param("cuda", d, marks=gpu, id=f"cuda-dynamic{d}") for d in (False, True)]


@pytest.mark.parametrize("device,dynamic", compile_params())
def test_compile_fullgraph(device, dynamic):
    torch._dynamo.reset()

    def f(q, k, cos, sin, cos3, freqs):
        a = ops.liger_rotary_pos_emb(q, k, cos, sin)
        b = ops.liger_multimodal_rotary_pos_emb(q, k, cos3, cos3, [2, 3, 3])
        c = ops.llama4_rope(q.transpose(1, 2), k.transpose(1, 2), freqs)
        return (a[0] * b[0]).sum() + (a[1] + b[1]).sum() + c[0].sum() + c[1].square().sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic)
    for s in (4, 7):
        q = torch.randn(2, 3, s, 16, device=device, requires_grad=True)
        k = torch.randn(2, 1, s, 16, device=device, requires_grad=True)
        cos, sin = torch.randn(2, s, 16, device=device), torch.randn(2, s, 16, device=device)
        cos3 = torch.randn(3, 2, s, 16, device=device)
        freqs = make_freqs(2, s, 8, device)
        ref = torch.autograd.grad(f(q, k, cos, sin, cos3, freqs), (q, k))
        out = torch.autograd.grad(compiled(q, k, cos, sin, cos3, freqs), (q, k))
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- bad inputs


def bad(q=(2, 4, 5, 16), k=(2, 2, 5, 16), cos=(2, 5, 16), sin=None, dtype=torch.float32, k_dtype=None):
    return (torch.randn(q).to(dtype), torch.randn(k).to(k_dtype or dtype), torch.randn(cos), torch.randn(sin or cos))


@pytest.mark.parametrize("args,udim,match", [
    (bad(cos=(2, 5, 15)), 1, "cos's last dimension \\(the rotary dimension R\\) must be even"),
    (bad(cos=(2, 5, 18)), 1, "must be at most q's head dimension 16"),
    (bad(cos=(2, 6, 16)), 1, "cos's second dimension must be q's sequence length 5"),
    (bad(cos=(3, 5, 16)), 1, "cos's first dimension must be 1 or q's batch 2"),
    (bad(cos=(5, 16)), 1, "cos must be 3-D"),
    (bad(sin=(2, 5, 8)), 1, "sin must have cos's shape"),
    (bad(q=(2, 5, 16)), 1, "q must be 4-D"),
    (bad(k=(2, 2, 6, 16)), 1, "k must match q in every dimension but the heads"),
    (bad(k_dtype=torch.float16), 1, "k must have q's dtype"),
    (bad(dtype=torch.int32), 1, "q must be float32, bfloat16 or float16"),
    (bad(), 0, "unsqueeze_dim must be 1"),
    (bad(), 3, "unsqueeze_dim must be 1"),
])
def test_bad_inputs(args, udim, match):
    with pytest.raises(RuntimeError, match=match):
        liger.rope(*args, udim)


def test_bad_mrope_and_llama4_inputs():
    q, k = torch.randn(2, 3, 4, 16), torch.randn(2, 1, 4, 16)
    with pytest.raises(RuntimeError, match="mrope_section must sum to half of cos's last dimension"):
        liger.qwen2vl_mrope(q, k, torch.randn(3, 2, 4, 16), torch.randn(3, 2, 4, 16), [2, 3, 4], 1)
    with pytest.raises(RuntimeError, match="cos's first dimension must be 3"):
        liger.qwen2vl_mrope(q, k, torch.randn(2, 2, 4, 16), torch.randn(2, 2, 4, 16), [2, 3, 3], 1)
    with pytest.raises(RuntimeError, match="freqs_cos's last dimension must be half of q's"):
        liger.llama4_rope(q.transpose(1, 2), k.transpose(1, 2), torch.randn(2, 4, 16), torch.randn(2, 4, 16))
    with pytest.raises(RuntimeError, match="q's last dimension must be even"):
        liger.llama4_rope(torch.randn(2, 3, 4, 15), torch.randn(2, 3, 1, 15), torch.randn(2, 3, 7),
                          torch.randn(2, 3, 7))


# ---- GPU


GPU_SHAPES = [  # (B, S, Hq, Hk, D, R)
    (4, 128, 32, 8, 128, 128), (1, 1, 1, 1, 64, 64), (2, 7, 5, 1, 256, 256), (3, 129, 12, 4, 80, 80),
    (2, 33, 3, 3, 72, 72), (2, 17, 6, 2, 80, 32), (1, 9, 2, 2, 6, 6), (2, 5, 40, 8, 512, 512), (2, 5, 4, 2, 96, 0),
]


@gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("layout", ("bhsd", "bshd", "hf_transpose_view", "fused_qkv"))
def test_cuda_rope_matches_float64_reference(layout, dtype, shape):
    B, S, Hq, Hk, D, R = shape
    randn = lambda *s: torch.randn(*s, dtype=dtype, device="cuda")  # noqa: E731
    udim = 2 if layout == "bshd" else 1
    if layout == "bhsd":
        q, k = randn(B, Hq, S, D), randn(B, Hk, S, D)
    elif layout == "bshd":
        q, k = randn(B, S, Hq, D), randn(B, S, Hk, D)
    elif layout == "hf_transpose_view":
        q = randn(B, S, Hq * D).view(B, S, Hq, D).transpose(1, 2)
        k = randn(B, S, Hk * D).view(B, S, Hk, D).transpose(1, 2)
    else:
        qkv = randn(B, S, (Hq + 2 * Hk) * D)
        q = qkv[..., :Hq * D].view(B, S, Hq, D).transpose(1, 2)
        k = qkv[..., Hq * D:(Hq + Hk) * D].view(B, S, Hk, D).transpose(1, 2)
    pos = torch.randint(0, 4096, (B, S), device="cuda")
    cos, sin = rope_table(pos, R, dtype) if R else (randn(B, S, 0), randn(B, S, 0))
    sin = sin * 1.5  # halves and cos/sin unrelated enough to catch a swapped term
    poison_freed_blocks((q.shape, dtype), (k.shape, dtype), copies=1)
    check_rope(q, k, cos, sin, udim, what=f"{layout} {shape}: ")


@gpu
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_rope_cases(dtype, case):
    q, k, cos, sin, udim = make_case(case, dtype, "cuda")
    check_rope(q, k, cos, sin, udim)


@gpu
@pytest.mark.parametrize("cos_dtype", (torch.float32, torch.float16, torch.float64), ids=dtype_id)
def test_cuda_rope_cos_grads_and_other_cos_dtypes(cos_dtype):
    # bf16 q and k with cos/sin of another dtype (converted to fp32 by the launcher), cos/sin requiring grad
    q = torch.randn(2, 4, 9, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, 9, 64, device="cuda", dtype=torch.bfloat16)
    cos, sin = (torch.randn(1, 9, 64, device="cuda", dtype=cos_dtype) for _ in range(2))
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    (oq, ok), grads = grads_of(lambda *a: liger.rope(*a, 1), (q, k, cos, sin), (gq, gk))
    (rq, rk), ref = grads_of(lambda *a: hf_rope(*a, 1), [t.double() for t in (q, k, cos, sin)],
                             (gq.double(), gk.double()))
    for name, o, r, x in (("q", oq, rq, q), ("k", ok, rk, k)):
        # fp32 math rounded once to bf16: within one bf16 rounding of the float64 result (plus fp32 error)
        err = (o.double() - r).abs().max().item()
        assert err <= 2 * torch.finfo(torch.bfloat16).eps * magnitude(x, cos, sin), (name, err)
    for name, g, r, x in zip(("dq", "dk", "dcos", "dsin"), grads, ref, (q, k, cos, sin)):
        assert g.dtype == x.dtype and g.shape == x.shape, name
        # bf16 x bf16 products are exact in fp32: only fp32 sums and one rounding to the input's dtype
        tol = 4 * torch.finfo(torch.bfloat16 if name in ("dq", "dk") else cos_dtype if cos_dtype != torch.float64
                              else torch.float32).eps * r.abs().max().item() * (1 if name in ("dq", "dk") else 8)
        assert (g.double() - r).abs().max().item() <= tol, (name, (g.double() - r).abs().max().item(), tol)


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", ((2, 128, 32, 8, 128), (1, 7, 3, 1, 6), (2, 33, 5, 5, 256)))
def test_cuda_llama4_rope(shape, dtype):
    B, S, Hq, Hk, D = shape
    q = torch.randn(B, S, Hq, D, dtype=dtype, device="cuda")
    k = torch.randn(B, S * 2, Hk, D, dtype=dtype, device="cuda")[:, ::2]  # strided tokens
    freqs = make_freqs(B, S, D // 2, "cuda")
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    (oq, ok), (dq, dk) = grads_of(lambda a, b: ops.llama4_rope(a, b, freqs), (q, k), (gq, gk))
    (rq, rk), (rdq, rdk) = grads_of(lambda a, b: hf_llama4(a, b, freqs.to(torch.complex128)),
                                    (q.double(), k.double()), (gq.double(), gk.double()))
    eager = lambda a, b: tuple(t.to(dtype) for t in hf_llama4(a, b, freqs))  # noqa: E731
    (eq, ek), (edq, edk) = grads_of(eager, (q, k), (gq, gk))
    for name, o, e, r, x in (("q", oq, eq, rq, q), ("k", ok, ek, rk, k), ("dq", dq, edq, rdq, gq),
                             ("dk", dk, edk, rdk, gk)):
        check_error(name, dtype, o, e, r, magnitude(x, freqs.abs()))


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
def test_cuda_qwen2vl_mrope(dtype):
    B, S, Hq, Hk, D, section = 2, 100, 28, 4, 128, [16, 24, 24]
    q = torch.randn(B, S, Hq * D, dtype=dtype, device="cuda").view(B, S, Hq, D).transpose(1, 2)
    k = torch.randn(B, Hk, S, D, dtype=dtype, device="cuda")
    cos, sin = rope_table(torch.randint(0, 1000, (3, B, S), device="cuda"), D, dtype)
    oq, ok = ops.qwen2vl_mrope(q, k, cos, sin, section)
    rq, rk = hf_mrope(q.double(), k.double(), cos.double(), sin.double(), section)
    eq, ek = hf_mrope(q, k, cos, sin, section)
    check_error("q", dtype, oq, eq, rq, magnitude(q, cos, sin))
    check_error("k", dtype, ok, ek, rk, magnitude(k, cos, sin))


@gpu
def test_cuda_more_than_2_31_elements():
    B, S, Hq, Hk, D = 1, 1 << 17, 130, 1, 128  # q: 2.18e9 elements
    q = torch.randn(B, S, Hq, D, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(B, S, Hk, D, dtype=torch.bfloat16, device="cuda")
    cos, sin = rope_table(torch.arange(S, device="cuda")[None], D, torch.bfloat16)
    oq, ok = liger.rope(q, k, cos, sin, 2)
    step = 1 << 13
    for s0 in list(range(0, S, step))[::3] + [S - step]:  # spot-check chunks, the last one included
        sl = slice(s0, s0 + step)
        rq, rk = hf_rope(q[:, sl].float(), k[:, sl].float(), cos[:, sl].float(), sin[:, sl].float(), 2)
        torch.testing.assert_close(oq[:, sl].float(), rq, rtol=1.6e-2, atol=1e-2)
        torch.testing.assert_close(ok[:, sl].float(), rk, rtol=1.6e-2, atol=1e-2)


@gpu
def test_cuda_graph_capture_and_replay():
    q = torch.randn(2, 32, 64, 128, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(2, 8, 64, 128, dtype=torch.bfloat16, device="cuda")
    cos, sin = rope_table(torch.arange(64, device="cuda")[None], 128, torch.bfloat16)
    liger.rope(q, k, cos, sin, 1)  # load the kernel before capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        oq, ok = liger.rope(q, k, cos, sin, 1)
    q.copy_(torch.randn_like(q))
    g.replay()
    torch.cuda.synchronize()
    rq, rk = liger.rope(q, k, cos, sin, 1)
    assert torch.equal(oq, rq) and torch.equal(ok, rk)


@gpu
def test_cuda_bad_inputs():
    q, k = torch.randn(2, 3, 4, 16, device="cuda"), torch.randn(2, 1, 4, 16, device="cuda")
    with pytest.raises(RuntimeError, match="must be on one device"):
        liger.rope(q, k, torch.randn(2, 4, 16), torch.randn(2, 4, 16), 1)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        cos = torch.randn(2, 4, 16, device="cuda")
        liger.rope(q.double(), k.double(), cos, cos, 1)


# ---- rope_kv_cache: a decoding step's RoPE and static-cache write


def kv_cache_reference(q, k, v, cos, sin, k_cache, v_cache, slots):
    """float64: Hugging Face's rotate-half formula, then index_copy_ into copies of the caches."""
    qr, kr = hf_rope(q.double(), k.double(), cos.double(), sin.double(), unsqueeze_dim=2) if cos.shape[-1] == q.shape[
        -1] else partial_rope64(q, k, cos, sin)
    kc, vc = k_cache.double().clone(), v_cache.double().clone()
    keep = ((slots >= 0) & (slots < kc.shape[1])).nonzero().squeeze(1)
    kc.index_copy_(1, slots[keep], kr[:, keep])
    vc.index_copy_(1, slots[keep], v.double()[:, keep])
    return qr, kc, vc


def partial_rope64(q, k, cos, sin):
    r = cos.shape[-1]
    qr, kr = hf_rope(q.double()[..., :r], k.double()[..., :r], cos.double(), sin.double(), unsqueeze_dim=2)
    return torch.cat([qr, q.double()[..., r:]], -1), torch.cat([kr, k.double()[..., r:]], -1)


def check_kv_cache(case, what):
    q, k, v, cos, sin, k_cache, v_cache, slots = case
    ref_q, ref_k, ref_v = kv_cache_reference(*case)
    out = ops.rope_kv_cache(q, k, v, cos, sin, k_cache, v_cache, slots)
    assert out.shape == q.shape and out.dtype == q.dtype
    # each value is one rotation rounded once (or a copy): within 2 ulps of the float64 result
    ulp = torch.finfo(q.dtype).eps
    for name, got, ref in (("q", out, ref_q), ("k_cache", k_cache, ref_k), ("v_cache", v_cache, ref_v)):
        err = (got.double().cpu() - ref.cpu()).abs()
        limit = FLOOR_ULPS * ulp * ref.abs().cpu().clamp_min(1.0)
        assert (err <= limit).all(), f"{what}: {name} off by {err.max().item():.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", ("plain", "fused_qkv", "partial_rotary", "cos_per_batch", "decode_d64",
                                  "d256_gqa", "d96_odd_heads"))
def test_rope_kv_cache_matches_float64_reference(case, dtype, device):
    kwargs = {"plain": {}, "fused_qkv": {"fused": True}, "partial_rotary": {"rot": 8},
              "cos_per_batch": {"cos_batch": 2}, "decode_d64": {"B": 1, "S": 1, "Hq": 32, "Hk": 8, "D": 64, "L": 600},
              "d256_gqa": {"B": 1, "S": 2, "Hq": 8, "Hk": 1, "D": 256}, "d96_odd_heads": {"Hq": 5, "Hk": 1, "D": 96}}
    check_kv_cache(kv_cache_case(dtype, device, **kwargs[case]), case)


@pytest.mark.parametrize("device", DEVICES)
def test_rope_kv_cache_skips_slots_outside_the_cache(device):
    case = list(kv_cache_case(torch.float32, device, S=3, L=5))
    case[7] = torch.tensor([4, -1, 5], device=device)  # one valid slot, one below, one past the end
    k_before, v_before = case[5].clone(), case[6].clone()
    check_kv_cache(case, "slots outside")
    changed = (case[5] != k_before).any(-1).any(-1).any(0)
    assert changed.tolist() == [False, False, False, False, True]
    assert torch.equal(case[6][:, :4], v_before[:, :4])


@pytest.mark.parametrize("device", DEVICES)
def test_rope_kv_cache_strided_cache_and_zero_tokens(device):
    # caches as per-layer views of one [layers, B, L, Hk, D] tensor (what a static cache holds)
    q, k, v, cos, sin, _, _, slots = kv_cache_case(torch.bfloat16, device)
    big = torch.randn(3, 2, 2, 9, 2, 16, device=device).to(torch.bfloat16)  # [layers, k|v, B, L, Hk, D]
    k_cache, v_cache = big[1, 0], big[1, 1]
    before = big.clone()
    check_kv_cache((q, k, v, cos, sin, k_cache, v_cache, slots), "views of one cache")
    assert torch.equal(big[0], before[0]) and torch.equal(big[2], before[2])  # other layers untouched
    empty = ops.rope_kv_cache(q[:, :0], k[:, :0], v[:, :0], cos[:, :0], sin[:, :0], k_cache, v_cache, slots[:0])
    assert empty.shape == (2, 0, 4, 16)


def test_rope_kv_cache_bad_inputs_and_no_gradients():
    q, k, v, cos, sin, kc, vc, slots = kv_cache_case(torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="cache_position must be a 1-D int64"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc, vc, slots.int())
    with pytest.raises(RuntimeError, match="one slot per token"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc, vc, slots[:1])
    with pytest.raises(RuntimeError, match="v must have k's shape"):
        ops.rope_kv_cache(q, k, v[:, :, :1], cos, sin, kc, vc, slots)
    with pytest.raises(RuntimeError, match="k_cache must have k's dtype"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc.double(), vc, slots)
    with pytest.raises(RuntimeError, match="v_cache must match k"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc, vc[:, :, :1], slots)
    with pytest.raises(RuntimeError, match="dense"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc, torch.randn(2, 9, 2, 32)[..., ::2], slots)
    with pytest.raises(RuntimeError, match="different tensors"):
        ops.rope_kv_cache(q, k, v, cos, sin, kc, kc, slots)
    q.requires_grad_(True)
    out = ops.rope_kv_cache(q, k, v, cos, sin, kc, vc, slots)
    with pytest.raises(RuntimeError, match="not implemented"):
        out.sum().backward()


@pytest.mark.parametrize("device", DEVICES)
def test_rope_kv_cache_compile_fullgraph(device):
    q, k, v, cos, sin, kc, vc, slots = kv_cache_case(torch.float32, device)
    kc2, vc2 = kc.clone(), vc.clone()
    expected = ops.rope_kv_cache(q, k, v, cos, sin, kc2, vc2, slots)
    backend = "inductor" if device == "cuda" else "aot_eager"
    fn = torch.compile(ops.rope_kv_cache, fullgraph=True, backend=backend)
    got = fn(q, k, v, cos, sin, kc, vc, slots)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(kc, kc2, rtol=0, atol=0)
    torch.testing.assert_close(vc, vc2, rtol=0, atol=0)
