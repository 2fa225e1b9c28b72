"""Typed wrappers over ``torch.ops.liger.*``: they normalize arguments and call the operator."""
from typing import Optional

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


# ---- rotary position embeddings (rope, qwen2vl_mrope, llama4_rope) ------------------------------------------
# Eager calls skip OpOverload.__call__ through the bound operator; TorchScript and Dynamo see the OpOverload.
from typing import List, Tuple  # noqa: E402

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
