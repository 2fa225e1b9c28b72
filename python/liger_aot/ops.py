"""Typed wrappers over ``torch.ops.liger.*``: they normalize arguments and call the operator."""
from typing import List, Optional, Tuple

import torch

from . import _fast

# Eager calls go through liger_aot._fast (csrc/python/fast.cpp): a direct binding that calls the operator's
# typed dispatcher handle, ~1 us cheaper per call than torch.ops. It returns NotImplemented for what it
# does not handle (Tensor subclasses, TorchFunctionModes, unexpected argument types, errors); the bound
# torch.ops operator (which skips OpOverload.__call__) then makes the call and raises PyTorch's errors.
# TorchScript and Dynamo see the OpOverload itself.
_rms_norm = torch.ops.liger.rms_norm.default._op
_rms_norm_fast = _fast.rms_norm


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor] = None, eps: float = 1e-6, offset: float = 0.0,
             casting_mode: str = "llama") -> torch.Tensor:
    """Root-mean-square normalization over the last dimension.

    ``y = x * rsqrt(mean(x**2, -1) + eps) * (offset + weight)``; ``weight=None`` means no affine.

    casting_mode:
        ``"llama"``: rstd in fp32, ``x * rstd`` rounded to x's dtype, then multiplied by the weight
        (Hugging Face ``LlamaRMSNorm``). ``"gemma"``: everything in fp32, rounded once at the end
        (``GemmaRMSNorm``, used with ``offset=1.0``). ``"none"``: every step rounded to x's dtype, as the
        formula computed in that dtype by eager PyTorch.

    x: float32, bfloat16 or float16 (float64 too on CPU), any leading dimensions, any strides. The
    output has x's dtype and shape and is contiguous. Gradients flow to x and weight.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.rms_norm(x, weight, eps, offset, casting_mode)
    y = _rms_norm_fast(x, weight, eps, offset, casting_mode)
    if y is NotImplemented:
        y = _rms_norm(x, weight, eps, offset, casting_mode)
    return y


# ---- layer_norm, fused_add_rms_norm (issue 3)

_layer_norm = torch.ops.liger.layer_norm.default._op
_fused_add_rms_norm = torch.ops.liger.fused_add_rms_norm.default._op


def layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
               eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization over the last dimension, as ``torch.nn.functional.layer_norm(x, x.shape[-1:], ...)``.

    ``y = (x - mean) * rsqrt(var + eps) * weight + bias`` (biased variance), computed in fp32 and rounded once
    to x's dtype; ``weight``/``bias`` of ``None`` are left out.

    x: float32, bfloat16 or float16 (float64 too on CPU), any leading dimensions, any strides. weight and bias:
    1-D of x's last dimension, any floating dtype. The output has x's dtype and shape and is contiguous.
    Gradients flow to x, weight and bias.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.layer_norm(x, weight, bias, eps)
    return _layer_norm(x, weight, bias, eps)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor] = None,
                       eps: float = 1e-6, offset: float = 0.0,
                       casting_mode: str = "llama") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(rms_norm(x + residual), x + residual)`` in one pass over memory.

    ``x + residual`` is rounded to x's dtype as eager PyTorch adds; the normalization is :func:`rms_norm`'s
    (same ``eps``, ``offset`` and ``casting_mode``). residual must have x's shape and dtype. Gradients flow
    through both outputs to x, residual (the same gradient) and weight.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.fused_add_rms_norm(x, residual, weight, eps, offset, casting_mode)
    return _fused_add_rms_norm(x, residual, weight, eps, offset, casting_mode)

# ---- softmax, sparsemax, group_norm (issue 3)

_softmax = torch.ops.liger.softmax.default._op
_sparsemax = torch.ops.liger.sparsemax.default._op
_group_norm = torch.ops.liger.group_norm.default._op


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, ``torch.softmax(x, -1)``: fp32 math, output in x's dtype.

    x: float32, bfloat16 or float16 (float64 too on CPU), any leading dimensions, any strides. The output is
    contiguous. Gradients flow to x (computed from the saved output).
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.softmax(x)
    return _softmax(x)


def sparsemax(x: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last dimension (Martins & Astudillo, 2016): the Euclidean projection of x onto the
    probability simplex, ``max(x - tau, 0)`` with tau such that each row sums to 1.

    x: float32, bfloat16 or float16 (float64 too on CPU), any leading dimensions, any strides. The output has
    x's dtype and is contiguous. Gradients flow to x: ``dx = mask * (dy - mean of dy over the support)``.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.sparsemax(x)
    return _sparsemax(x)


def group_norm(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    """Group normalization, ``F.group_norm(x, num_groups, weight, bias, eps)``.

    x: ``[N, C, *]`` float32, bfloat16 or float16 (float64 too on CPU); num_groups must divide C; weight and
    bias (optional) have shape ``[C]``. The output has x's dtype and shape and is contiguous. Gradients flow
    to x, weight and bias.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.group_norm(x, num_groups, weight, bias, eps)
    return _group_norm(x, num_groups, weight, bias, eps)


# ---- activations: swiglu, geglu, relu_squared, dyt (issue 3)

_swiglu = torch.ops.liger.swiglu.default._op
_geglu = torch.ops.liger.geglu.default._op
_relu_squared = torch.ops.liger.relu_squared.default._op
_dyt = torch.ops.liger.dyt.default._op
_swiglu_mlp = torch.ops.liger.swiglu_mlp.default._op
_geglu_mlp = torch.ops.liger.geglu_mlp.default._op


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation: ``silu(gate) * up``, elementwise.

    gate and up: one shape and one dtype (float32, bfloat16 or float16; float64 too on CPU), any strides
    (the CUDA path copies non-contiguous or expanded inputs to contiguous ones first). Computed in fp32
    and rounded once; the output is contiguous. Gradients flow to gate and up; the backward recomputes
    silu(gate) instead of saving the output.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.swiglu(gate, up)
    return _swiglu(gate, up)


def swiglu_mlp(x: torch.Tensor, gate_weight: torch.Tensor, up_weight: Optional[torch.Tensor],
               down_weight: torch.Tensor) -> torch.Tensor:
    """The Llama-style MLP, ``linear(swiglu(linear(x, gate_weight), linear(x, up_weight)), down_weight)``, as one op.

    x: ``[..., hidden]``; gate_weight and up_weight: ``[intermediate, hidden]``; down_weight: ``[out,
    intermediate]`` (``nn.Linear`` weights, no bias), all of x's dtype and device (under ``torch.autocast`` the op
    casts them to the autocast dtype, as ``nn.Linear`` does). ``up_weight=None``: gate_weight is a packed
    ``gate_up_proj`` weight ``[2 * intermediate, hidden]``, gate rows first (Phi-3, GLM-4). The same matrix products and SwiGLU kernel as the
    three modules, but for the backward it keeps gate and up only, not their product: one pass recomputes it
    while writing the gradients of gate and up over them, so a training step keeps ``intermediate`` fewer
    elements per token and the backward allocates no SwiGLU buffers. Gradients flow to x and the three weights.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.swiglu_mlp(x, gate_weight, up_weight, down_weight)
    return _swiglu_mlp(x, gate_weight, up_weight, down_weight)


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """GeGLU activation: ``gelu(gate, approximate) * up``, elementwise.

    approximate: ``"tanh"`` (``gelu_pytorch_tanh``, Gemma's) or ``"none"`` (exact, erf). Inputs and
    outputs as :func:`swiglu`.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.geglu(gate, up, approximate)
    return _geglu(gate, up, approximate)


def geglu_mlp(x: torch.Tensor, gate_weight: torch.Tensor, up_weight: Optional[torch.Tensor],
              down_weight: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """The Gemma-style MLP, ``linear(geglu(linear(x, gate_weight), linear(x, up_weight), approximate),
    down_weight)``, as one op: :func:`swiglu_mlp` with ``gelu(gate, approximate)`` (``"tanh"`` or ``"none"``)."""
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.geglu_mlp(x, gate_weight, up_weight, down_weight, approximate)
    return _geglu_mlp(x, gate_weight, up_weight, down_weight, approximate)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """``relu(x) ** 2``, elementwise; any shape and strides, float32, bfloat16 or float16 (float64 on CPU)."""
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.relu_squared(x)
    return _relu_squared(x)


def dyt(x: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor, beta: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dynamic Tanh: ``gamma * tanh(alpha * x) + beta`` over the last dimension.

    alpha: a one-element tensor; gamma and beta (optional): ``[x.shape[-1]]``. x: float32, bfloat16 or
    float16 (float64 on CPU), any leading dimensions and strides; the parameters may be of x's dtype or
    another floating dtype (then computed in fp32). Gradients flow to x, alpha, gamma and beta, each in
    its own dtype.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.dyt(x, alpha, gamma, beta)
    return _dyt(x, alpha, gamma, beta)


# ---- rotary position embeddings (rope, qwen2vl_mrope, llama4_rope) ------------------------------------------
# Eager calls skip OpOverload.__call__ through the bound operator; TorchScript and Dynamo see the OpOverload.

_rope = torch.ops.liger.rope.default._op
_qwen2vl_mrope = torch.ops.liger.qwen2vl_mrope.default._op
_llama4_rope = torch.ops.liger.llama4_rope.default._op


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
         unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of q and k, Hugging Face ``apply_rotary_pos_emb`` (rotate-half).

    q ``[B, Hq, S, D]`` and k ``[B, Hk, S, D]`` with ``unsqueeze_dim=1``, or ``[B, S, H, D]`` with
    ``unsqueeze_dim=2``; Hq and Hk may differ. cos/sin ``[B or 1, S, R]`` (``[S, R]`` is taken as ``[1, S, R]``),
    gathered per batch row for any position ids; their two halves may differ. With ``R < D`` only the first R
    columns rotate and the rest pass through (partial rotary); R must be even.

    Computed in fp32 and rounded once to q's dtype (the outputs keep q's and k's dtype even when cos/sin are
    fp32, where Hugging Face's formula would promote). q/k may be strided views (e.g. of a fused QKV
    projection): no copy unless their last dimension is strided. Outputs have q's/k's dense layout. Gradients
    flow to q, k and (when they require it) cos and sin.
    """
    if cos.dim() == 2:
        cos = cos.unsqueeze(0)
    if sin.dim() == 2:
        sin = sin.unsqueeze(0)
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.rope(q, k, cos, sin, unsqueeze_dim)
    return _rope(q, k, cos, sin, unsqueeze_dim)


_rope_kv_cache = torch.ops.liger.rope_kv_cache.default._op


def rope_kv_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  k_cache: torch.Tensor, v_cache: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
    """A decoding step's RoPE and static-cache write in one kernel: returns ``rope(q)`` and writes ``rope(k)`` and
    ``v`` into ``k_cache`` / ``v_cache`` at the slots ``cache_position`` (what :func:`rope` followed by two
    ``index_copy_(1, cache_position, ...)`` computes, in one launch instead of three).

    q ``[B, S, Hq, D]``, k and v ``[B, S, Hk, D]`` (the ``unsqueeze_dim=2`` layout of :func:`rope`; strided views of
    a fused projection are read in place), cos/sin ``[B or 1, S, R]`` (``[S, R]`` is taken as ``[1, S, R]``),
    caches ``[B, L, Hk, D]`` of k's dtype with a dense last dimension, ``cache_position`` int64 ``[S]``: token s of
    every batch row goes to slot ``cache_position[s]``. The slots are read on the device only (the step can be
    captured in a CUDA graph); a slot outside ``[0, L)`` is not written (the GPU cannot raise without a host
    sync), and the slots of one call should differ. Inference only: no gradients.
    """
    if cos.dim() == 2:
        cos = cos.unsqueeze(0)
    if sin.dim() == 2:
        sin = sin.unsqueeze(0)
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.rope_kv_cache(q, k, v, cos, sin, k_cache, v_cache, cache_position)
    return _rope_kv_cache(q, k, v, cos, sin, k_cache, v_cache, cache_position)


def qwen2vl_mrope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mrope_section: List[int],
                  unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL multimodal RoPE, Hugging Face ``apply_multimodal_rotary_pos_emb``.

    cos/sin ``[3, B, S, D]`` (temporal, height, width rows); ``mrope_section`` splits D/2, and each section
    (repeated for the second half) takes its columns from row ``i % 3``. q/k as in :func:`rope`.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.qwen2vl_mrope(q, k, cos, sin, mrope_section, unsqueeze_dim)
    return _qwen2vl_mrope(q, k, cos, sin, list(mrope_section), unsqueeze_dim)


def llama4_rope(q: torch.Tensor, k: torch.Tensor, freqs_cis: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Llama 4 complex RoPE, Hugging Face Llama 4 ``apply_rotary_emb(xq, xk, freqs_cis)``.

    q/k ``[B, S, H, D]`` seen as D/2 complex pairs ``(x[2i], x[2i+1])``, each multiplied by ``freqs_cis[b, s, i]``
    (complex, ``[B or 1, S, D/2]``, or its ``torch.view_as_real`` form ``[..., D/2, 2]``; ``[S, D/2]`` is taken as
    ``[1, S, D/2]``). Computed in fp32, rounded to q's
    dtype, as Hugging Face does. The operator takes the real and imaginary parts as two float tensors
    (``torch.ops.liger.llama4_rope(q, k, freqs_cos, freqs_sin)``): complex tensors do not go through schemas well.
    """
    parts = torch.view_as_real(freqs_cis) if freqs_cis.is_complex() else freqs_cis
    if parts.dim() == 3:
        parts = parts.unsqueeze(0)
    cos, sin = parts[..., 0], parts[..., 1]
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.llama4_rope(q, k, cos, sin)
    return _llama4_rope(q, k, cos, sin)


def liger_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         position_ids: Optional[torch.Tensor] = None,
                         unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for Hugging Face ``apply_rotary_pos_emb`` (``position_ids`` is unused there too: cos/sin are
    already gathered per position)."""
    return rope(q, k, cos, sin, unsqueeze_dim)


def liger_multimodal_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                                    mrope_section: List[int],
                                    unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for Hugging Face Qwen2-VL ``apply_multimodal_rotary_pos_emb``."""
    return qwen2vl_mrope(q, k, cos, sin, mrope_section, unsqueeze_dim)


# ---- cross_entropy, fused_linear_cross_entropy (issue 5) -----------------------------------------------------

_cross_entropy = torch.ops.liger.cross_entropy.default._op
_fused_linear_cross_entropy = torch.ops.liger.fused_linear_cross_entropy.default._op


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0, lse_square_scale: float = 0.0,
                  softcap: Optional[float] = None, reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the last dimension of ``logits`` ``[*, V]`` for int64 class indices ``target`` ``[*]``.

    Returns ``(loss, z_loss)``. ``loss`` is ``F.cross_entropy(x, target, weight, ignore_index=ignore_index,
    label_smoothing=label_smoothing, reduction=reduction)`` of ``x = softcap * tanh(logits / softcap)`` (``x =
    logits`` when ``softcap`` is None) plus the z-loss; ``z_loss`` is ``lse_square_scale * logsumexp(x)**2`` per
    non-ignored row, reduced as Liger-Kernel does ("mean": divided by the number of non-ignored rows, also with
    class weights). The mean over no rows is NaN, as PyTorch's. A non-ignored target outside ``[0, V)`` gives
    NaN (checked on the device: no host synchronization, CUDA-graph capturable).

    logits: float32, bfloat16 or float16 (float64 on CPU), fp32 math; outputs in logits' dtype, 0-d or
    ``target``'s shape for "none". Gradients flow to logits (through both outputs).
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.cross_entropy(logits, target, weight, ignore_index, label_smoothing, lse_square_scale,
                                             softcap, reduction)
    return _cross_entropy(logits, target, weight, ignore_index, float(label_smoothing), float(lse_square_scale),
                          None if softcap is None else float(softcap), reduction)


def fused_linear_cross_entropy(input: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                               bias: Optional[torch.Tensor] = None, ce_weight: Optional[torch.Tensor] = None,
                               ignore_index: int = -100, label_smoothing: float = 0.0, lse_square_scale: float = 0.0,
                               softcap: Optional[float] = None,
                               reduction: str = "mean") -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`cross_entropy` of ``input @ weight.T + bias`` without holding the logits of all tokens.

    input ``[*, H]``, weight ``[V, H]`` and bias ``[V]`` of one dtype (float32, bfloat16, float16), target
    ``[*]`` int64, ``ce_weight`` ``[V]`` the class weights. Tokens are processed in chunks whose logits stay
    within 128 MiB. The gradients for input, weight and bias are computed in the forward and scaled by
    grad_output in the backward (in place unless ``retain_graph=True``); they need reduction "mean" or "sum" ("none"
    is forward-only). ``z_loss`` is reported without a gradient (it is part of ``loss``). ``loss`` and ``z_loss``
    are float32 (float64 for float64 input), as Liger-Kernel's and Hugging Face's causal-LM loss are; grad_output
    is rounded to the gradients' dtype once.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.fused_linear_cross_entropy(input, weight, target, bias, ce_weight, ignore_index,
                                                          label_smoothing, lse_square_scale, softcap, reduction)
    return _fused_linear_cross_entropy(input, weight, target, bias, ce_weight, ignore_index, float(label_smoothing),
                                       float(lse_square_scale), None if softcap is None else float(softcap),
                                       reduction)


# ---- distillation losses: kl_div, jsd, fused_linear_jsd, tvd (issue 5)

_kl_div = torch.ops.liger.kl_div.default._op
_jsd = torch.ops.liger.jsd.default._op
_fused_linear_jsd = torch.ops.liger.fused_linear_jsd.default._op
_tvd = torch.ops.liger.tvd.default._op


def kl_div(input: torch.Tensor, target: torch.Tensor, reduction: str = "batchmean", log_target: bool = False,
           eps: float = 1e-10) -> torch.Tensor:
    """KL divergence with ``F.kl_div(input, target, reduction=..., log_target=...)`` semantics.

    input: log-probabilities; target: probabilities (log-probabilities with ``log_target=True``), same shape
    and dtype (float32, bfloat16 or float16; float64 too on CPU), any shape with at least one dimension. The
    loss is ``target * (log(max(target, eps)) - input)`` per element (``exp(target) * (target - input)`` with
    log_target), reduced by ``"none"``, ``"sum"``, ``"mean"`` (over elements) or ``"batchmean"`` (over
    ``input.shape[0]``); the result has input's dtype, computed in fp32. Gradients flow to input and target.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.kl_div(input, target, reduction, log_target, eps)
    return _kl_div(input, target, reduction, log_target, eps)


def jsd(input: torch.Tensor, target: torch.Tensor, shift_labels: Optional[torch.Tensor] = None, beta: float = 0.5,
        ignore_index: int = -100) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence of Liger-Kernel's ``LigerJSD``.

    input: the student's log-probabilities, target: the teacher's, both ``[BT, V]`` of one dtype (float32,
    bfloat16 or float16; float64 too on CPU). ``beta * KL(P || M) + (1 - beta) * KL(Q || M)`` with
    ``M = beta * P + (1 - beta) * Q``; ``beta=0`` is the forward KL(P || Q), ``beta=1`` the reverse KL(Q || P).
    Mean over the rows whose ``shift_labels`` (int64 ``[BT]``, optional) is not ignore_index (0 when every row
    is ignored), counted on the device. Returns an fp32 scalar; gradients flow to input only.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.jsd(input, target, shift_labels, beta, ignore_index)
    return _jsd(input, target, shift_labels, beta, ignore_index)


def fused_linear_jsd(student_input: torch.Tensor, student_weight: torch.Tensor, teacher_input: torch.Tensor,
                     teacher_weight: torch.Tensor, shift_labels: Optional[torch.Tensor] = None, beta: float = 0.5,
                     ignore_index: int = -100, temperature: float = 1.0) -> torch.Tensor:
    """``jsd(log_softmax(student_input @ student_weight.T / T), log_softmax(teacher_input @ teacher_weight.T / T))``
    without materializing the ``[BT, V]`` logits (chunks over tokens, Liger-Kernel's ``LigerFusedLinearJSD``).

    student_input ``[BT, H]``, student_weight ``[V, H]``, teacher_input ``[BT, H_t]``, teacher_weight ``[V, H_t]``,
    one dtype. Returns an fp32 scalar. Gradients flow to student_input and student_weight; the teacher must
    not require grad.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight,
                                                shift_labels, beta, ignore_index, temperature)
    return _fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels, beta,
                             ignore_index, temperature)


def tvd(p: torch.Tensor, q: torch.Tensor, shift_labels: Optional[torch.Tensor] = None, reduction: str = "batchmean",
        ignore_index: int = -100) -> torch.Tensor:
    """Total variation distance ``0.5 * |p - q|`` of Liger-Kernel's ``LigerTVDLoss``.

    p, q: probabilities ``[BT, V]`` of one dtype. Rows whose ``shift_labels`` is ignore_index count 0.
    reduction: ``"none"`` (fp32 ``[BT, V]``), ``"sum"``, ``"mean"`` (over non-ignored elements) or
    ``"batchmean"`` (over non-ignored rows); the count is taken on the device. Gradients flow to p and q.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.tvd(p, q, shift_labels, reduction, ignore_index)
    return _tvd(p, q, shift_labels, reduction, ignore_index)


# ---- flash_attn, flash_attn_varlen (issue 6) ------------------------------------------------------------------

_flash_attn = torch.ops.liger.flash_attn.default._op
_flash_attn_varlen = torch.ops.liger.flash_attn_varlen.default._op


def flash_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
               softmax_scale: Optional[float] = None, window_left: int = -1, window_right: int = -1,
               softcap: float = 0.0) -> torch.Tensor:
    """FlashAttention-2: ``softmax(mask(softcap(softmax_scale * q @ k^T))) @ v`` per head.

    q ``[batch, seqlen_q, heads_q, head_dim]``, k and v ``[batch, seqlen_k, heads_k, head_dim]`` with heads_q a
    multiple of heads_k (MHA, GQA, MQA). Query i sees key j iff
    ``i + seqlen_k - seqlen_q - window_left <= j <= i + seqlen_k - seqlen_q + window_right`` (a window of -1 is
    unbounded); ``causal=True`` is ``window_right=0``, aligned to the bottom-right corner when
    seqlen_q != seqlen_k, as flash-attn. A query that sees no key gets 0. ``softmax_scale`` defaults to
    ``head_dim ** -0.5``; ``softcap > 0`` caps the scores as ``softcap * tanh(s / softcap)`` (Gemma 2).

    CUDA: bfloat16/float16, head_dim 64, 96, 128 or 256, any strides (views of a fused QKV need no copy).
    CPU: a float32 (float64 for float64 inputs) math reference. Returns ``[batch, seqlen_q, heads_q,
    head_dim]`` in q's dtype, contiguous. Gradients flow to q, k and v.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.flash_attn(q, k, v, causal, softmax_scale, window_left, window_right, softcap)
    return _flash_attn(q, k, v, causal, softmax_scale, window_left, window_right, softcap)


def flash_attn_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool = False,
                      softmax_scale: Optional[float] = None, window_left: int = -1, window_right: int = -1,
                      softcap: float = 0.0) -> torch.Tensor:
    """:func:`flash_attn` over packed sequences: q ``[total_q, heads_q, head_dim]``, k/v ``[total_k, heads_k,
    head_dim]``; sequence b holds rows ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]`` of q and the matching rows of
    k/v (int32 ``[batch + 1]`` offsets, empty sequences allowed). ``max_seqlen_q``/``max_seqlen_k`` must bound
    every sequence's length (they size the CUDA grid; the kernels trust them, as flash-attn does). Rows of q
    outside every sequence get 0.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.flash_attn_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                                 causal, softmax_scale, window_left, window_right, softcap)
    return _flash_attn_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                              softmax_scale, window_left, window_right, softcap)
