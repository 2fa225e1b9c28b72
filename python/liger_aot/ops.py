"""Typed wrappers over ``torch.ops.liger.*``: they normalize arguments and call the operator."""
from typing import Optional, Tuple

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
