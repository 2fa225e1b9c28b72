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
