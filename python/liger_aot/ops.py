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


# ---- activations: swiglu, geglu, relu_squared, dyt (issue 3)

_swiglu = torch.ops.liger.swiglu.default._op
_geglu = torch.ops.liger.geglu.default._op
_relu_squared = torch.ops.liger.relu_squared.default._op
_dyt = torch.ops.liger.dyt.default._op


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


def geglu(gate: torch.Tensor, up: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """GeGLU activation: ``gelu(gate, approximate) * up``, elementwise.

    approximate: ``"tanh"`` (``gelu_pytorch_tanh``, Gemma's) or ``"none"`` (exact, erf). Inputs and
    outputs as :func:`swiglu`.
    """
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return torch.ops.liger.geglu(gate, up, approximate)
    return _geglu(gate, up, approximate)


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
