"""Typed wrappers over ``torch.ops.liger.*``: they normalize arguments and call the operator."""
from typing import Optional

import torch

# The bound C++ operator skips OpOverload.__call__ (0.7 us of the ~3 us host cost of a call, measured);
# TorchScript and Dynamo see the OpOverload itself.
_rms_norm = torch.ops.liger.rms_norm.default._op


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
    return _rms_norm(x, weight, eps, offset, casting_mode)


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
