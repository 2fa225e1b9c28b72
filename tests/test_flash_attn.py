"""Tests of torch.ops.liger.flash_attn / flash_attn_varlen (and the internal flash_attn_fwd / flash_attn_bwd).

Numerics follow FlashAttention's rule: the op's error against a float64 reference written here (not the op's
CPU path) may be at most twice the error of the same computation done by eager PyTorch at the op's precision
(scores, softmax and output in that dtype, as flash-attn's `attention_ref(upcast=False)`), plus an atol of
the rounding error of values of the output's magnitude. CPU tests run in CI; tests marked `gpu` need CUDA.
"""
import math

import pytest
import torch
from torch.library import opcheck

import liger_aot
from liger_aot import ops
from _shared import run_memcheck  # noqa: E402

liger = torch.ops.liger
gpu = pytest.mark.gpu
HEAD_DIMS = (64, 96, 128, 256)

# ---- float64 reference and eager baseline (independent of the op)


def visible(s_q, s_k, causal, window_left, window_right, device):
    """[S_q, S_k] bool: query i sees key j iff i + S_k - S_q - wl <= j <= i + S_k - S_q + wr (causal: wr = 0)."""
    i = torch.arange(s_q, device=device)[:, None] + (s_k - s_q)
    j = torch.arange(s_k, device=device)[None, :]
    ok = torch.ones(s_q, s_k, dtype=torch.bool, device=device)
    if window_left >= 0:
        ok &= j >= i - window_left
    wr = 0 if causal else window_right
    if wr >= 0:
        ok &= j <= i + wr
    return ok


def attention(q, k, v, causal=False, scale=None, window_left=-1, window_right=-1, softcap=0.0):
    """The definition on [B, S, H, D] tensors, computed in q's dtype (float64 for the reference, the op's dtype
    for the eager baseline): GQA by repeating k/v heads; a query that sees no key outputs 0."""
    b, s_q, h, d = q.shape
    s_k, h_k = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    k = k.repeat_interleave(h // h_k, 2)
    v = v.repeat_interleave(h // h_k, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    ok = visible(s_q, s_k, causal, window_left, window_right, q.device)
    s = s.masked_fill(~ok, float("-inf"))
    p = torch.softmax(s, -1).masked_fill(~ok.any(-1)[:, None], 0.0)  # rows with no key: 0, not NaN
    return torch.einsum("bhqk,bkhd->bqhd", p.to(v.dtype), v)


def attention_varlen(q, k, v, cu_q, cu_k, **kw):
    out = q.new_zeros(q.shape)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        if q1 > q0:
            out[q0:q1] = attention(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], **kw)[0]
    return out


def rounding_atol(ref, dtype):
    """Rounding error of values of the reference's magnitude in `dtype` (flash-attn's fwd_atol)."""
    return 2 * ((ref + 0.3 - 0.3).to(dtype).double() - ref).abs().max().item() + 1e-6


def check_rule(name, got, base, ref, floor=0.0):
    err = (got.double() - ref).abs().max().item()
    err_base = (base.double() - ref).abs().max().item()
    atol = rounding_atol(ref, got.dtype) + floor
    assert err <= 2 * err_base + atol, f"{name}: error {err:.3e} > 2 x eager error {err_base:.3e} + {atol:.2e}"


def run_and_check(fn, ref_fn, inputs, grads=True):
    """fn(*inputs) vs ref_fn in float64 and vs ref_fn at the inputs' own precision, forward and backward."""
    dtype = inputs[0].dtype
    ins = [t.detach().clone().requires_grad_(grads) for t in inputs]
    ins64 = [t.detach().double().requires_grad_(grads) for t in inputs]
    insb = [t.detach().clone().requires_grad_(grads) for t in inputs]
    out, ref, base = fn(*ins), ref_fn(*ins64), ref_fn(*insb)
    assert out.dtype == dtype and out.shape == ref.shape and out.is_contiguous()
    check_rule("out", out, base, ref.detach())
    if not grads:
        return
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    base.backward(dout)
    # FA2's backward forms dS = P * (dP - D) with D = rowsum(dO * O), not as softmax's backward does: where the
    # exact gradient cancels to 0 (a query that sees one key), eager is exact and the kernel is left with the fp32
    # rounding of length-D dot products. Floor: 2^-23 * D * the largest reference gradient.
    floor = 2.0 ** -23 * inputs[0].shape[-1] * max(r.grad.abs().max().item() for r in ins64 if r.grad.numel())
    for name, a, r, e in zip(("dq", "dk", "dv"), ins, ins64, insb):
        check_rule(name, a.grad, e.grad, r.grad, floor)


def qkv(b, s_q, s_k, h, h_k, d, dtype, device="cpu"):
    q = torch.randn(b, s_q, h, d, dtype=dtype, device=device)
    k = torch.randn(b, s_k, h_k, d, dtype=dtype, device=device)
    v = torch.randn(b, s_k, h_k, d, dtype=dtype, device=device)
    return q, k, v


def packed(lens_q, lens_k, h, h_k, d, dtype, device="cpu"):
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device=device)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device=device)
    q = torch.randn(int(cu_q[-1]), h, d, dtype=dtype, device=device)
    k = torch.randn(int(cu_k[-1]), h_k, d, dtype=dtype, device=device)
    v = torch.randn(int(cu_k[-1]), h_k, d, dtype=dtype, device=device)
    return q, k, v, cu_q, cu_k


# (causal, window_left, window_right, softcap)
MASKS = [(False, -1, -1, 0.0), (True, -1, -1, 0.0), (False, 5, 3, 0.0), (True, 4, -1, 0.0), (False, -1, -1, 3.0),
         (True, 2, -1, 5.0), (False, 0, 0, 0.0)]


def mask_id(m):
    return f"causal{int(m[0])}-w{m[1]}_{m[2]}-cap{m[3]:g}"


# ---- CPU: numerics


@pytest.mark.parametrize("mask", MASKS, ids=mask_id)
@pytest.mark.parametrize("shape", [(2, 9, 9, 4, 2, 16), (1, 5, 13, 2, 2, 8), (2, 13, 5, 3, 1, 8), (1, 1, 1, 1, 1, 4)],
                         ids=lambda s: "b{}-sq{}-sk{}-h{}_{}-d{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matches_float64_reference(dtype, shape, mask):
    causal, wl, wr, cap = mask
    kw = dict(causal=causal, window_left=wl, window_right=wr, softcap=cap)
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, **kw), lambda q, k, v: attention(q, k, v, **kw),
                  qkv(*shape, dtype))


def test_softmax_scale_and_rows_that_see_no_key():
    q, k, v = qkv(1, 7, 3, 2, 2, 8, torch.float64)
    out = ops.flash_attn(q, k, v, causal=True, softmax_scale=0.3)
    ref = attention(q, k, v, causal=True, scale=0.3)
    torch.testing.assert_close(out, ref)
    # Bottom-right causal with S_q > S_k: the first S_q - S_k queries see nothing and output 0.
    assert out[:, :4].abs().max() == 0 and out[:, 4:].abs().min() > 0
    o, lse = liger.flash_attn_fwd(q, k, v, None, None, 7, 3, True, 0.3, -1, -1, 0.0)
    assert torch.isinf(lse[:, :, :4]).all() and (lse[:, :, :4] > 0).all() and torch.isfinite(lse[:, :, 4:]).all()
    q.requires_grad_()
    ops.flash_attn(q, k, v, causal=True).sum().backward()
    assert q.grad[:, :4].abs().max() == 0


@pytest.mark.parametrize("mask", MASKS[:4], ids=mask_id)
def test_varlen_matches_reference_with_empty_sequences(mask):
    causal, wl, wr, cap = mask
    kw = dict(causal=causal, window_left=wl, window_right=wr, softcap=cap)
    q, k, v, cu_q, cu_k = packed([3, 0, 9, 1, 0], [5, 0, 9, 4, 2], 4, 2, 8, torch.bfloat16)

    def op(q, k, v):
        return ops.flash_attn_varlen(q, k, v, cu_q, cu_k, 9, 9, **kw)

    run_and_check(op, lambda q, k, v: attention_varlen(q, k, v, cu_q, cu_k, **kw), (q, k, v))


def test_varlen_equals_fixed_batch():
    q, k, v = qkv(3, 6, 6, 4, 2, 8, torch.float64)
    cu = torch.arange(0, 19, 6, dtype=torch.int32)
    fixed = ops.flash_attn(q, k, v, causal=True)
    packed_out = ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu, 6, 6, causal=True)
    torch.testing.assert_close(packed_out.view_as(fixed), fixed)


def test_rows_outside_every_sequence_are_zero():
    q, k, v, cu_q, cu_k = packed([2, 3], [2, 3], 2, 2, 8, torch.float32)
    q = torch.cat([q, torch.randn(4, 2, 8)])
    out = ops.flash_attn_varlen(q, k, v, cu_q, cu_k, 3, 3)
    assert out[5:].abs().max() == 0


def test_non_contiguous_views_of_a_fused_qkv():
    qkv_ = torch.randn(2, 11, 3, 4, 16, dtype=torch.float64)
    q, k, v = qkv_.unbind(2)
    torch.testing.assert_close(ops.flash_attn(q, k, v, causal=True),
                               ops.flash_attn(q.contiguous(), k.contiguous(), v.contiguous(), causal=True))


def test_internal_ops_match_public_op():
    q, k, v = qkv(2, 5, 7, 4, 2, 8, torch.float64)
    out, lse = liger.flash_attn_fwd(q, k, v, None, None, 5, 7, True, None, -1, -1, 0.0)
    torch.testing.assert_close(out, ops.flash_attn(q, k, v, causal=True))
    s = torch.einsum("bqhd,bkhd->bhqk", q, k.repeat_interleave(2, 2)) / math.sqrt(8)
    s = s.masked_fill(~visible(5, 7, True, -1, -1, "cpu"), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1))
    assert lse.shape == (2, 4, 5)


# ---- CPU: autograd machinery


@pytest.mark.parametrize("mask", MASKS, ids=mask_id)
def test_gradcheck(mask):
    causal, wl, wr, cap = mask
    q, k, v = (t.requires_grad_() for t in qkv(1, 4, 5, 4, 2, 3, torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: ops.flash_attn(q, k, v, causal, 0.7, wl, wr, cap), (q, k, v))


def test_gradcheck_varlen():
    q, k, v, cu_q, cu_k = packed([2, 0, 3], [3, 0, 2], 2, 1, 3, torch.float64)
    ins = tuple(t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda q, k, v: ops.flash_attn_varlen(q, k, v, cu_q, cu_k, 3, 3, causal=True, softcap=2.0), ins)


def test_double_backward_raises():
    q, k, v = (t.requires_grad_() for t in qkv(1, 3, 3, 1, 1, 4, torch.float64))
    (g,) = torch.autograd.grad(ops.flash_attn(q, k, v).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        g.sum().backward()


def test_no_grad_inputs_give_no_graph():
    q, k, v = qkv(1, 3, 3, 1, 1, 4, torch.float32)
    assert ops.flash_attn(q, k, v).grad_fn is None
    k.requires_grad_()
    out = ops.flash_attn(q, k, v)
    out.sum().backward()
    assert k.grad is not None and q.grad is None


def opcheck_samples():
    q, k, v = qkv(2, 5, 7, 4, 2, 8, torch.float32)
    qv, kv, vv, cu_q, cu_k = packed([3, 0, 4], [2, 0, 5], 2, 1, 8, torch.float32)
    dout = torch.randn_like(q)
    out, lse = liger.flash_attn_fwd(q, k, v, None, None, 5, 7, True, None, 3, -1, 2.0)
    return [
        (liger.flash_attn.default, (q, k, v, True, None, -1, -1, 0.0)),
        (liger.flash_attn.default, (q, k, v, False, 0.5, 2, 1, 3.0)),
        (liger.flash_attn_varlen.default, (qv, kv, vv, cu_q, cu_k, 4, 5, True, None, -1, -1, 0.0)),
        (liger.flash_attn_fwd.default, (q, k, v, None, None, 5, 7, True, None, 3, -1, 2.0)),
        (liger.flash_attn_bwd.default, (dout, q, k, v, out, lse, None, None, 5, 7, True, None, 3, -1, 2.0)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_opcheck(index):
    op, args = opcheck_samples()[index]
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() and
                 op in (liger.flash_attn.default, liger.flash_attn_varlen.default) else a for a in args)
    opcheck(op, args)


def test_export_dynamic_batch_and_seq(tmp_path):
    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return ops.flash_attn(q, k, v, causal=True)

    q, k, v = qkv(2, 6, 9, 4, 2, 8, torch.float32)
    b, sq, sk = torch.export.Dim("b"), torch.export.Dim("sq"), torch.export.Dim("sk")
    ep = torch.export.export(M(), (q, k, v), dynamic_shapes=({0: b, 1: sq}, {0: b, 1: sk}, {0: b, 1: sk}))
    path = tmp_path / "fa.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path).module()
    q2, k2, v2 = qkv(3, 4, 11, 4, 2, 8, torch.float32)
    torch.testing.assert_close(loaded(q2, k2, v2), ops.flash_attn(q2, k2, v2, causal=True))


def test_export_varlen_dynamic_total():
    class M(torch.nn.Module):
        def forward(self, q, k, v, cu_q, cu_k):
            return ops.flash_attn_varlen(q, k, v, cu_q, cu_k, 16, 16, causal=True)

    q, k, v, cu_q, cu_k = packed([3, 5], [4, 6], 2, 2, 8, torch.float32)
    tq, tk = torch.export.Dim("tq"), torch.export.Dim("tk")
    ep = torch.export.export(M(), (q, k, v, cu_q, cu_k),
                             dynamic_shapes=({0: tq}, {0: tk}, {0: tk}, None, None))
    q2, k2, v2, cu_q2, cu_k2 = packed([7, 2], [5, 9], 2, 2, 8, torch.float32)
    torch.testing.assert_close(ep.module()(q2, k2, v2, cu_q2, cu_k2),
                               ops.flash_attn_varlen(q2, k2, v2, cu_q2, cu_k2, 16, 16, causal=True))


def test_torchscript_backward():
    def f(q, k, v):
        return torch.ops.liger.flash_attn(q, k, v, True, None, -1, -1, 0.0)

    scripted = torch.jit.script(f)
    q, k, v = (t.requires_grad_() for t in qkv(1, 4, 4, 2, 1, 8, torch.float64))
    scripted(q, k, v).sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(dynamic):
    def f(q, k, v):
        return ops.flash_attn(q, k, v, causal=True, window_left=3, softcap=4.0).square().sum()

    q, k, v = (t.requires_grad_() for t in qkv(2, 6, 6, 4, 2, 8, torch.float32))
    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# ---- CPU: bad inputs


def bad_cases():
    q, k, v = qkv(2, 4, 4, 4, 2, 8, torch.float32)
    cu = torch.tensor([0, 4, 8], dtype=torch.int32)
    return [
        (lambda: ops.flash_attn(q, k.double(), v), "k must have q's dtype"),
        (lambda: ops.flash_attn(q.int(), k, v), "q must be bfloat16 or float16"),
        (lambda: ops.flash_attn(q[0], k, v), "q must be 4-D"),
        (lambda: ops.flash_attn(q, k, v[:, :3]), "v must have k's shape"),
        (lambda: ops.flash_attn(q, k[:1], v[:1]), "k must have q's batch size"),
        (lambda: ops.flash_attn(q, k[..., :4], v[..., :4]), "k must have q's head_dim"),
        (lambda: ops.flash_attn(q[:, :, :3], k, v), "must be a multiple of k's heads"),
        (lambda: ops.flash_attn(q, k, v, window_left=-2), "window_left must be -1"),
        (lambda: ops.flash_attn(q, k, v, window_right=-5), "window_right must be -1"),
        (lambda: ops.flash_attn(q, k, v, softcap=-1.0), "softcap must be >= 0"),
        (lambda: ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu.long(), cu, 4, 4),
         "cu_seqlens_q must be int32"),
        (lambda: ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu[:2], 4, 4),
         "cu_seqlens_k must have cu_seqlens_q's length"),
        (lambda: ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu[None], 4, 4),
         "cu_seqlens_k must be 1-D"),
        (lambda: ops.flash_attn_varlen(q, k, v, cu, cu, 4, 4), "q must be 3-D"),
        (lambda: ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu, -1, 4),
         "max_seqlen_q must be >= 0"),
        (lambda: ops.flash_attn_varlen(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu.flip(0), cu, 4, 4),
         "cu_seqlens_q must be non-decreasing"),
    ]


@pytest.mark.parametrize("index", range(len(bad_cases())))
def test_bad_inputs(index):
    fn, match = bad_cases()[index]
    with pytest.raises(RuntimeError, match=match):
        fn()


def test_bad_backward_inputs():
    q, k, v = qkv(1, 4, 4, 2, 2, 8, torch.float32)
    out, lse = liger.flash_attn_fwd(q, k, v, None, None, 4, 4, False, None, -1, -1, 0.0)
    with pytest.raises(RuntimeError, match="dout must have q's shape|dout and out must have q's shape"):
        liger.flash_attn_bwd(out[:, :3], q, k, v, out, lse, None, None, 4, 4, False, None, -1, -1, 0.0)
    with pytest.raises(RuntimeError, match="lse must be"):
        liger.flash_attn_bwd(out, q, k, v, out, lse.double(), None, None, 4, 4, False, None, -1, -1, 0.0)


# ---- Hugging Face AttentionInterface


def test_hugging_face_liger_flash_matches_sdpa_with_padding():
    transformers = pytest.importorskip("transformers")
    import liger_aot.attention  # noqa: F401  (registers "liger_flash")

    assert "liger_flash" in transformers.AttentionInterface._global_mapping
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    mask[2, 9:] = 0  # right padding
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    model.set_attn_implementation("liger_flash")
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], atol=1e-4, rtol=1e-4)
    # and gradients flow through it
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_hugging_face_4d_padding_mask():
    from liger_aot.attention import liger_flash_attention_forward

    class Module(torch.nn.Module):
        is_causal = True

    q = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    k = torch.randn(2, 2, 6, 8, dtype=torch.float64)
    v = torch.randn(2, 2, 6, 8, dtype=torch.float64)
    pad = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    four_d = torch.ones(6, 6, dtype=torch.bool).tril()[None, None] & pad[:, None, None, :]
    got, _ = liger_flash_attention_forward(Module(), q, k, v, four_d)
    two_d, _ = liger_flash_attention_forward(Module(), q, k, v, pad.long())
    torch.testing.assert_close(got, two_d)
    ref = attention(q.transpose(1, 2)[1:], k.transpose(1, 2)[1:], v.transpose(1, 2)[1:], causal=True)
    torch.testing.assert_close(got[1:], ref)


# ---- GPU (H200): CUDA kernels against the float64 reference, the 2x rule. Run with `pytest -m gpu`.

CUDA_DTYPES = (torch.bfloat16, torch.float16)


def cuda_qkv(b, s_q, s_k, h, h_k, d, dtype):
    return qkv(b, s_q, s_k, h, h_k, d, dtype, "cuda")


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s", [1, 17, 1000, 4097])
def test_cuda_lengths_and_head_dims(s, causal, d, dtype):
    b, h = (2, 2) if s <= 1000 else (1, 2)
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, causal=causal),
                  lambda q, k, v: attention(q, k, v, causal=causal), cuda_qkv(b, s, s, h, h, d, dtype))


@gpu
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s_q,s_k", [(1, 1000), (17, 1000), (1000, 17), (113, 4097), (4097, 113), (128, 129)])
def test_cuda_seqlen_q_ne_seqlen_k(s_q, s_k, causal, d):
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, causal=causal),
                  lambda q, k, v: attention(q, k, v, causal=causal), cuda_qkv(2, s_q, s_k, 2, 2, d, torch.bfloat16))


@gpu
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("window", [(0, 0), (1, 1), (64, 0), (127, 0), (256, 32), (-1, 100), (100, -1), (5000, 0)],
                         ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_windows(causal, window, d):
    wl, wr = window
    kw = dict(causal=causal, window_left=wl, window_right=wr)
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, **kw), lambda q, k, v: attention(q, k, v, **kw),
                  cuda_qkv(2, 777, 1001, 2, 2, d, torch.bfloat16))


@gpu
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal,window_left", [(False, -1), (True, -1), (True, 100)])
def test_cuda_softcap(causal, window_left, d, dtype):
    kw = dict(causal=causal, window_left=window_left, softcap=30.0, softmax_scale=1.0)  # scores up to ~30
    ref_kw = dict(causal=causal, window_left=window_left, softcap=30.0, scale=1.0)
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, **kw), lambda q, k, v: attention(q, k, v, **ref_kw),
                  cuda_qkv(2, 555, 555, 2, 2, d, dtype))


@gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("heads", [(8, 2), (8, 1), (6, 3)], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_gqa_mqa(causal, heads, d):
    h, h_k = heads
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, causal=causal),
                  lambda q, k, v: attention(q, k, v, causal=causal), cuda_qkv(2, 300, 300, h, h_k, d, torch.bfloat16))


@gpu
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("mask", MASKS, ids=mask_id)
def test_cuda_varlen_with_empty_sequences(mask, d):
    causal, wl, wr, cap = mask
    kw = dict(causal=causal, window_left=wl, window_right=wr, softcap=cap)
    lens_q = [0, 1, 17, 300, 0, 1000, 64]
    lens_k = [5, 0, 17, 129, 0, 1000, 200]
    q, k, v, cu_q, cu_k = packed(lens_q, lens_k, 4, 2, d, torch.bfloat16, "cuda")
    run_and_check(lambda q, k, v: ops.flash_attn_varlen(q, k, v, cu_q, cu_k, 1000, 1000, **kw),
                  lambda q, k, v: attention_varlen(q, k, v, cu_q, cu_k, **kw), (q, k, v))


@gpu
@pytest.mark.parametrize("d", [64, 96, 128])
def test_cuda_non_contiguous_inputs_match_contiguous(d, monkeypatch):
    # The kernels read strided views without a copy; the results must be those of contiguous inputs, bit for bit.
    # (Contiguous inputs would take the Hopper Gluon forward, strided ones the Triton one: both take Triton here.)
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    fused = torch.randn(2, 333, 3, 4, d, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    q, k, v = fused.unbind(2)  # views of a fused QKV: strides (333*3*4*d, 3*4*d, d, 1)
    out = ops.flash_attn(q, k, v, causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    qc, kc, vc = (t.detach().contiguous().requires_grad_() for t in (q, k, v))
    want = ops.flash_attn(qc, kc, vc, causal=True)
    want.backward(dout)
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    torch.testing.assert_close(fused.grad, torch.stack([qc.grad, kc.grad, vc.grad], 2), atol=0, rtol=0)
    # [B, H, S, D] tensors transposed to [B, S, H, D] (what Hugging Face layers pass), expanded incoming gradient
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (qc, kc, vc))
    out = ops.flash_attn(qt, kt, vt, causal=True)
    ones = torch.ones(1, 1, 1, 1, dtype=out.dtype, device="cuda").expand_as(out)
    out.backward(ones)
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (qc, kc, vc))
    ops.flash_attn(q2, k2, v2, causal=True).backward(ones.contiguous())
    for a, b in ((qt, q2), (kt, k2), (vt, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=0, rtol=0)
    # a misaligned storage offset is copied, not misread
    flat = torch.randn(2 * 64 * 2 * d + 1, dtype=torch.bfloat16, device="cuda")
    qm = flat[1:].view(2, 64, 2, d)
    torch.testing.assert_close(ops.flash_attn(qm, qm, qm), ops.flash_attn(qm.clone(), qm.clone(), qm.clone()),
                               atol=0, rtol=0)


def forward_kernels(fn):
    """Names of the CUDA kernels fn() launches whose names contain 'flash_attn'."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key for e in prof.key_averages() if "flash_attn" in e.key}


def hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def hf_layout(t):
    """The same values in [B, H, S, D] memory, viewed as [B, S, H, D] (what Hugging Face attention layers pass)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def misaligned(t):
    """The same values 2 bytes past a 16-byte boundary (contiguous otherwise)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon forward is built for sm_90 only")
def test_cuda_hopper_forward_taken_where_it_applies(monkeypatch):
    def kernels(b, s_q, s_k, h, h_k, d, dtype=torch.bfloat16, view=None, **kw):
        q, k, v = cuda_qkv(b, s_q, s_k, h, h_k, d, dtype)
        if view is not None:
            q, k, v = (view(t) for t in (q, k, v))
        names = forward_kernels(lambda: ops.flash_attn(q, k, v, **kw))
        return {"ws" if any("flash_attn_ws_fwd" in n for n in names) else
                "triton" if any("flash_attn_fwd_kernel" in n for n in names) else "?"}

    for d in (64, 128, 256):
        for dtype in CUDA_DTYPES:
            assert kernels(2, 600, 600, 4, 2, d, dtype, causal=True) == {"ws"}, (d, dtype)
            assert kernels(2, 300, 300, 4, 2, d, dtype) == {"ws"}, (d, dtype)
    assert kernels(1, 9, 9, 2, 2, 128, window_left=8, window_right=9) == {"ws"}  # a window that cuts nothing
    assert kernels(1, 513, 513, 2, 2, 128, causal=True, window_left=512) == {"ws"}
    assert kernels(2, 600, 600, 4, 2, 128, view=hf_layout, causal=True) == {"ws"}
    for kw in (dict(d=96), dict(d=128, s_k=301), dict(d=128, causal=True, window_left=100),
               dict(d=128, causal=True, s_q=512, s_k=512),
               dict(d=128, softcap=20.0), dict(d=128, softmax_scale=-0.1), dict(d=128, view=misaligned)):
        args = dict(b=2, s_q=300, s_k=300, h=4, h_k=2)
        args.update(kw)
        assert kernels(**args) == {"triton"}, kw
    # Deterministic algorithms: the forward stays Gluon (each output tile is summed by one program in a fixed order).
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert kernels(2, 600, 600, 4, 2, 128, causal=True) == {"ws"}
    finally:
        torch.use_deterministic_algorithms(False)
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    assert kernels(2, 300, 300, 4, 2, 128, causal=True) == {"triton"}


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon backward is built for sm_90 only")
def test_cuda_hopper_backward_taken_where_it_applies(monkeypatch):
    def kernels(b, s_q, s_k, h, h_k, d, dtype=torch.bfloat16, view=None, dout_view=None, **kw):
        q, k, v = (t.requires_grad_() for t in cuda_qkv(b, s_q, s_k, h, h_k, d, dtype))
        out = ops.flash_attn(*((view(t) for t in (q, k, v)) if view else (q, k, v)), **kw)
        dout = torch.randn_like(out)
        dout = dout_view(dout) if dout_view else dout
        names = forward_kernels(lambda: out.backward(dout))
        return {"ws" if any("flash_attn_ws_bwd" in n for n in names) else
                "triton" if any("flash_attn_bwd_dkdv_kernel" in n for n in names) else "?"}

    for d in (64, 128):
        for dtype in CUDA_DTYPES:
            assert kernels(2, 600, 600, 4, 2, d, dtype, causal=True) == {"ws"}, (d, dtype)
            assert kernels(2, 300, 300, 4, 2, d, dtype) == {"ws"}, (d, dtype)
    assert kernels(2, 600, 600, 4, 2, 128, view=hf_layout, dout_view=hf_layout, causal=True) == {"ws"}
    assert kernels(1, 513, 513, 2, 2, 128, causal=True, window_left=512) == {"ws"}
    for kw in (dict(d=256), dict(d=96), dict(d=128, s_k=301), dict(d=128, causal=True, window_left=100),
               dict(d=128, causal=True, s_q=512, s_k=512), dict(d=128, softcap=20.0),
               dict(d=128, dout_view=lambda t: t[:, :, :1].expand_as(t))):  # an expanded gradient: head stride 0
        args = dict(b=2, s_q=300, s_k=300, h=4, h_k=2)
        args.update(kw)
        assert kernels(**args) == {"triton"}, kw
    # Deterministic algorithms: the Triton backward (no atomics, fixed summation order), not the Gluon one whose dQ
    # reduce-adds land in the order key tiles finish.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert kernels(2, 600, 600, 4, 2, 128, causal=True) == {"triton"}
    finally:
        torch.use_deterministic_algorithms(False)
    assert kernels(2, 600, 600, 4, 2, 128, causal=True) == {"ws"}
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    assert kernels(2, 300, 300, 4, 2, 128, causal=True) == {"triton"}


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon kernels are built for sm_90 only")
def test_cuda_hopper_kernels_taken_for_packed_batches():
    # Packed sequences take the Gluon kernels when cu_seqlens_q and cu_seqlens_k are one tensor (the same
    # sequences on both sides, known without reading the device); two tensors, even equal ones, take Triton.
    cu = torch.tensor([0, 300, 1000, 1001], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(1001, h, 128, dtype=torch.bfloat16, device="cuda", requires_grad=True) for h in (4, 2, 2))

    def kernels(cu_k, **kw):
        out = ops.flash_attn_varlen(q, k, v, cu, cu_k, 700, 700, **kw)
        names = forward_kernels(lambda: out.backward(torch.randn_like(out)))
        return {n.split("(")[0] for n in names if "flash_attn" in n}

    for causal in (False, True):
        with_one = kernels(cu, causal=causal)
        assert any("flash_attn_ws_bwd" in n for n in with_one), with_one
        assert not any("flash_attn_bwd_dkdv" in n for n in with_one), with_one
        with_two = kernels(cu.clone(), causal=causal)
        assert any("flash_attn_bwd_dkdv" in n for n in with_two) and not any("_ws_" in n for n in with_two), with_two
    names = forward_kernels(lambda: ops.flash_attn_varlen(q, k, v, cu, cu, 700, 700, causal=True))
    assert any("flash_attn_ws_fwd" in n for n in names), names


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon kernels are built for sm_90 only")
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_hopper_packed_batches_match_triton(causal, d, dtype, monkeypatch):
    # A packed batch with an empty sequence, a one-token one and lengths around the tiles, through the Gluon
    # forward and (d64/d128) backward: the float64 reference by the 2x rule, the Triton kernels to rounding.
    cu = torch.tensor([0, 0, 700, 1800, 1801, 1929, 4000], dtype=torch.int32, device="cuda")
    total, max_len = 4000, 2071
    q, k, v = (torch.randn(total, h, d, dtype=dtype, device="cuda") for h in (6, 2, 2))
    dout = torch.randn_like(q)
    args = (q, k, v, cu, cu, max_len, max_len, causal, None, -1, -1, 0.0)
    out, lse = liger.flash_attn_fwd(*args)
    grads = liger.flash_attn_bwd(dout, q, k, v, out, lse, *args[3:])
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    out_t, lse_t = liger.flash_attn_fwd(*args)
    grads_t = liger.flash_attn_bwd(dout, q, k, v, out_t, lse_t, *args[3:])
    monkeypatch.delenv("LIGER_FLASH_ATTN_WS")
    ins64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    insb = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = attention_varlen(*ins64, cu, cu, causal=causal)
    base = attention_varlen(*insb, cu, cu, causal=causal)
    check_rule("out", out, base, ref.detach())
    torch.testing.assert_close(out, out_t, atol=2 * rounding_atol(ref.detach(), dtype), rtol=0)
    torch.testing.assert_close(lse, lse_t, atol=1e-4, rtol=1e-5)
    ref.backward(dout.double())
    base.backward(dout)
    floor = 2.0 ** -23 * d * max(r.grad.abs().max().item() for r in ins64)
    for name, g, gt, r, gb in zip(("dq", "dk", "dv"), grads, grads_t, ins64, insb):
        assert torch.isfinite(g).all(), name
        check_rule(name, g, gb.grad, r.grad, floor)
        torch.testing.assert_close(g, gt, atol=2 * rounding_atol(r.grad, dtype) + floor, rtol=0)


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon backward is built for sm_90 only")
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(3, 1, 4, 1), (2, 700, 4, 4), (1, 1000, 8, 2), (1, 4097, 6, 3), (2, 2049, 2, 1)],
                         ids=str)
@pytest.mark.parametrize("layout", [None, hf_layout], ids=["contiguous", "bhsd"])
def test_cuda_hopper_backward_matches_triton_backward(layout, shape, causal, d, dtype, monkeypatch):
    # The Gluon backward's dq, dk, dv against the float64 reference by the 2x rule and against the Triton backward
    # from the same out and LSE (to the rounding of fp32 sums taken in another order: dQ is added up by TMA
    # reduce-adds in whatever order the key tiles finish).
    b, s, h, h_k = shape
    q, k, v = cuda_qkv(b, s, s, h, h_k, d, dtype)
    if layout is not None:
        q, k, v = (layout(t) for t in (q, k, v))
    dout = torch.randn_like(q)
    if layout is not None:
        dout = layout(dout)
    args = (q, k, v, None, None, s, s, causal, None, -1, -1, 0.0)
    out, lse = liger.flash_attn_fwd(*args)
    grads = liger.flash_attn_bwd(dout, q, k, v, out, lse, *args[3:])
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    grads_t = liger.flash_attn_bwd(dout, q, k, v, out, lse, *args[3:])
    monkeypatch.delenv("LIGER_FLASH_ATTN_WS")
    ins64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    insb = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref, base = attention(*ins64, causal=causal), attention(*insb, causal=causal)
    ref.backward(dout.double())
    base.backward(dout)
    # where the exact gradient cancels to 0 (S 1) the fp32 rounding of length-D sums remains (as in run_and_check)
    floor = 2.0 ** -23 * d * max(r.grad.abs().max().item() for r in ins64)
    for name, g, gt, r, gb in zip(("dq", "dk", "dv"), grads, grads_t, ins64, insb):
        assert g.shape == gt.shape and g.is_contiguous() and torch.isfinite(g).all(), name
        check_rule(name, g, gb.grad, r.grad, floor)
        torch.testing.assert_close(g, gt, atol=2 * rounding_atol(r.grad, dtype) + floor, rtol=0)


@gpu
@pytest.mark.skipif(not hopper(), reason="the Gluon forward is built for sm_90 only")
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(3, 1, 4, 1), (2, 777, 4, 4), (1, 4097, 6, 2), (1, 2500, 2, 1)], ids=str)
@pytest.mark.parametrize("layout", [None, hf_layout], ids=["contiguous", "bhsd"])
def test_cuda_hopper_forward_matches_triton_forward(layout, shape, causal, d, dtype, monkeypatch):
    # The Gluon forward against the float64 reference (the 2x rule) and against the Triton forward (outputs and
    # the saved LSE agree to rounding); the backward from its out and LSE by the 2x rule as well.
    b, s, h, h_k = shape
    q, k, v = cuda_qkv(b, s, s, h, h_k, d, dtype)
    if layout is not None:
        q, k, v = (layout(t) for t in (q, k, v))
    args = (q, k, v, None, None, s, s, causal, None, -1, -1, 0.0)
    out, lse = liger.flash_attn_fwd(*args)
    monkeypatch.setenv("LIGER_FLASH_ATTN_WS", "0")
    out_t, lse_t = liger.flash_attn_fwd(*args)
    monkeypatch.delenv("LIGER_FLASH_ATTN_WS")
    ref = attention(q.double(), k.double(), v.double(), causal=causal)
    check_rule("out", out, attention(q, k, v, causal=causal), ref)
    torch.testing.assert_close(out, out_t, atol=2 * rounding_atol(ref, dtype), rtol=0)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double().repeat_interleave(h // h_k, 2)) * d ** -0.5
    scores = scores.masked_fill(~visible(s, s, causal, -1, -1, "cuda"), float("-inf"))
    torch.testing.assert_close(lse.double(), torch.logsumexp(scores, -1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lse, lse_t, atol=1e-4, rtol=1e-5)
    if s > 1000 and d == 256:
        return  # the float64 backward reference of the largest cases would dominate the run
    run_and_check(lambda q, k, v: ops.flash_attn(q, k, v, causal=causal),
                  lambda q, k, v: attention(q, k, v, causal=causal), (q, k, v))


@gpu
def test_cuda_poisoned_outputs_are_fully_written():
    # Fill the caching allocator's blocks with NaN so that every output the op allocates starts as NaN.
    junk = torch.full((64 << 20,), float("nan"), dtype=torch.bfloat16, device="cuda")
    del junk
    for kw in (dict(causal=True, window_left=100), dict(causal=True), dict()):  # the last two: Hopper forward
        q, k, v = (t.requires_grad_() for t in cuda_qkv(2, 1000, 1000, 4, 2, 128, torch.bfloat16))
        out, lse = liger.flash_attn_fwd(q, k, v, None, None, 1000, 1000, kw.get("causal", False), None,
                                        kw.get("window_left", -1), -1, 0.0)
        assert torch.isfinite(out).all() and torch.isfinite(lse).all(), kw
        out = ops.flash_attn(q, k, v, **kw)
        out.backward(torch.randn_like(out))
        for t in (out, q.grad, k.grad, v.grad):
            assert torch.isfinite(t).all(), kw


@gpu
def test_cuda_zero_size():
    q, k, v = cuda_qkv(2, 0, 5, 2, 2, 64, torch.bfloat16)
    assert ops.flash_attn(q, k, v).shape == q.shape
    q, k, v = (t.requires_grad_() for t in cuda_qkv(2, 5, 0, 2, 2, 64, torch.bfloat16))
    out = ops.flash_attn(q, k, v)
    assert out.abs().max() == 0
    out.sum().backward()
    assert q.grad.abs().max() == 0 and k.grad.shape == k.shape


@gpu
def test_cuda_offsets_beyond_2_31_elements():
    # q, k, v of 2^31 + elements each: the last batch entries live past 2^31 elements (64-bit offsets).
    b, s, h, d = 8200, 2048, 1, 128
    q, k, v = (t.requires_grad_() for t in cuda_qkv(b, s, s, h, h, d, torch.bfloat16))
    out = ops.flash_attn(q, k, v, causal=True)
    dout = torch.randn_like(out)
    out.backward(dout)
    for i in (0, b - 1):
        qi, ki, vi = (t[i:i + 1].detach().double().requires_grad_() for t in (q, k, v))
        ref = attention(qi, ki, vi, causal=True)
        ref.backward(dout[i:i + 1].double())
        torch.testing.assert_close(out[i:i + 1].double(), ref, atol=2e-2, rtol=2e-2)
        for g, r in ((q.grad, qi.grad), (k.grad, ki.grad), (v.grad, vi.grad)):
            torch.testing.assert_close(g[i:i + 1].double(), r, atol=5e-2, rtol=5e-2)


@gpu
@pytest.mark.parametrize("s", [500, 700])  # causal S 500 takes the Triton forward, S 700 the Gluon one on sm_90
def test_cuda_graph_capture_and_replay(s):
    q, k, v = (t.requires_grad_() for t in cuda_qkv(2, s, s, 4, 2, 128, torch.bfloat16))
    dout = torch.randn(2, s, 4, 128, dtype=torch.bfloat16, device="cuda")

    def step():
        for t in (q, k, v):
            t.grad = None
        out = ops.flash_attn(q, k, v, causal=True)
        out.backward(dout)
        return out

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()  # warm-up: loads the modules before capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = step()
    with torch.no_grad():
        for t in (q, k, v):
            t.copy_(torch.randn_like(t))
    g.replay()
    torch.cuda.synchronize()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    want = ops.flash_attn(q2, k2, v2, causal=True)
    want.backward(dout)
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    torch.testing.assert_close(q.grad, q2.grad, atol=0, rtol=0)  # deterministic: no atomics


@gpu
def test_cuda_bad_inputs():
    q, k, v = cuda_qkv(1, 4, 4, 2, 2, 64, torch.bfloat16)
    with pytest.raises(RuntimeError, match="bfloat16 or float16"):
        ops.flash_attn(q.float(), k.float(), v.float())
    q2, k2, v2 = cuda_qkv(1, 4, 4, 2, 2, 80, torch.bfloat16)
    with pytest.raises(RuntimeError, match="head_dim 64, 96, 128 and 256"):
        ops.flash_attn(q2, k2, v2)
    with pytest.raises(RuntimeError, match="k is on"):
        ops.flash_attn(q, k.cpu(), v)


@gpu
def test_cuda_hugging_face_liger_flash_matches_sdpa():
    transformers = pytest.importorskip("transformers")
    import liger_aot.attention  # noqa: F401

    config = transformers.MistralConfig(vocab_size=1000, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=128, sliding_window=16)
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 1000, (2, 100), device="cuda")
    mask = torch.ones(2, 100, dtype=torch.long, device="cuda")
    mask[1, :30] = 0
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits.float()
    model.set_attn_implementation("liger_flash")
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits.float()
    valid = mask.bool()
    assert (got[valid] - want[valid]).abs().max() < 0.1 * want[valid].abs().max()


@gpu
def test_cuda_two_streams():
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    bases = [cuda_qkv(2, n, n, 4, 2, 128, torch.bfloat16) for n in (300, 1000)]
    douts = [torch.randn_like(b[0]) for b in bases]

    def fwd_bwd(q, k, v, dout):
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = ops.flash_attn(q, k, v, causal=True)
        out.backward(dout)
        return out, q.grad, k.grad, v.grad

    expected = [fwd_bwd(*(t * 2 for t in b), d) for b, d in zip(bases, douts)]
    results = [None, None]
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
    for i, s in enumerate(streams):
        with torch.cuda.stream(s):
            # ~10 ms of spinning on s before its inputs exist: a launch on another stream would read them early
            torch.cuda._sleep(20_000_000)
            results[i] = fwd_bwd(*(t * 2 for t in bases[i]), douts[i])
    for s in streams:
        torch.cuda.current_stream().wait_stream(s)
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


SANITIZER_SCRIPT = """
import torch
import liger_aot
from liger_aot import ops

torch.manual_seed(0)
for d in (64, 96, 128, 256):
    for s_q, s_k, causal, wl in ((1, 1, False, -1), (17, 33, True, -1), (130, 67, True, 5), (65, 129, False, 16)):
        fused = torch.randn(2, max(s_q, s_k), 3, 4, d, dtype=torch.bfloat16, device="cuda")
        q = fused[:, :s_q, 0].detach().requires_grad_()
        k = fused[:, :s_k, 1, :2].detach().requires_grad_()
        v = fused[:, :s_k, 2, :2].detach().requires_grad_()
        out = ops.flash_attn(q, k, v, causal=causal, window_left=wl, softcap=10.0 if wl > 0 else 0.0)
        out.backward(torch.randn_like(out))
        cu_q = torch.tensor([0, 0, s_q, s_q + 3], dtype=torch.int32, device="cuda")
        cu_k = torch.tensor([0, 5, 5 + s_k, 5 + s_k + 3], dtype=torch.int32, device="cuda")
        qv = torch.randn(s_q + 3, 4, d, dtype=torch.float16, device="cuda", requires_grad=True)
        kv = torch.randn(s_k + 8, 2, d, dtype=torch.float16, device="cuda", requires_grad=True)
        vv = torch.randn(s_k + 8, 2, d, dtype=torch.float16, device="cuda", requires_grad=True)
        outv = ops.flash_attn_varlen(qv, kv, vv, cu_q, cu_k, max(s_q, 3), max(s_k, 5), causal=causal, window_left=wl)
        outv.backward(torch.randn_like(outv))
        torch.cuda.synchronize()
print("sanitizer script ok")
"""


@gpu
def test_cuda_compute_sanitizer_memcheck(tmp_path):
    run_memcheck(SANITIZER_SCRIPT, tmp_path, timeout=900)
