"""Liger-Kernel's functional API (``liger_kernel.transformers.functional``) over the operators of liger_aot.

Sections are delimited per issue; each function keeps Liger-Kernel's name, argument names and defaults.
"""
from typing import Optional

import torch

from . import ops

# ==== cross_entropy, fused_linear_cross_entropy (issue 5) =====================================================


def _check_unsupported(fn: str, **flags):
    for name, value in flags.items():
        if value:
            raise NotImplementedError(f"{fn}: {name} is not supported by liger_aot")


def liger_cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                        size_average=None, ignore_index: int = -100, reduce=None, reduction: str = "mean",
                        label_smoothing: float = 0.0, lse_square_scale: float = 0.0, softcap: Optional[float] = None,
                        return_z_loss: bool = False, return_token_accuracy: bool = False):
    """Liger-Kernel's ``liger_cross_entropy``: the loss, or ``(loss, z_loss)`` with ``return_z_loss=True``.

    ``size_average`` and ``reduce`` are PyTorch's deprecated arguments, ignored as Liger-Kernel does. See
    :func:`liger_aot.ops.cross_entropy` for the semantics.
    """
    _check_unsupported("liger_cross_entropy", return_token_accuracy=return_token_accuracy)
    loss, z_loss = ops.cross_entropy(input, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                                     reduction)
    return (loss, z_loss) if return_z_loss else loss


def liger_fused_linear_cross_entropy(input: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                                     bias: Optional[torch.Tensor] = None, ce_weight: Optional[torch.Tensor] = None,
                                     ignore_index: int = -100, lse_square_scale: float = 0.0,
                                     label_smoothing: float = 0.0, reduction: str = "mean",
                                     softcap: Optional[float] = None, return_z_loss: bool = False,
                                     accum_dtype: Optional[torch.dtype] = None, use_token_scaling: bool = False,
                                     return_token_accuracy: bool = False):
    """Liger-Kernel's ``liger_fused_linear_cross_entropy``: the loss of ``input @ weight.T + bias``, or
    ``(loss, z_loss)`` with ``return_z_loss=True``.

    ``accum_dtype`` (grad_weight is accumulated in weight's dtype by cuBLAS, fp32 inside each product),
    ``use_token_scaling`` and ``return_token_accuracy`` are not supported and raise. See
    :func:`liger_aot.ops.fused_linear_cross_entropy` (gradients need reduction "mean" or "sum").
    """
    _check_unsupported("liger_fused_linear_cross_entropy", accum_dtype=accum_dtype is not None,
                       use_token_scaling=use_token_scaling, return_token_accuracy=return_token_accuracy)
    loss, z_loss = ops.fused_linear_cross_entropy(input, weight, target, bias, ce_weight, ignore_index,
                                                  label_smoothing, lse_square_scale, softcap, reduction)
    return (loss, z_loss) if return_z_loss else loss

# ==== end of issue 5 section ===================================================================================


# ---- distillation losses: kl_div, jsd, fused_linear_jsd, tvd (issue 5)


def liger_kl_div(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean", log_target: bool = False,
                 eps: float = 1e-10) -> torch.Tensor:
    """``F.kl_div(input, target, reduction=reduction, log_target=log_target)`` (see liger_aot.ops.kl_div)."""
    return ops.kl_div(input, target, reduction, log_target, eps)


def liger_jsd(input: torch.Tensor, target: torch.Tensor, shift_labels: Optional[torch.Tensor] = None,
              beta: float = 0.5, ignore_index: int = -100) -> torch.Tensor:
    """Generalized JSD of student ``input`` and teacher ``target`` log-probabilities (see liger_aot.ops.jsd)."""
    return ops.jsd(input, target, shift_labels, beta, ignore_index)


def liger_fused_linear_jsd(student_input: torch.Tensor, student_weight: torch.Tensor, teacher_input: torch.Tensor,
                           teacher_weight: torch.Tensor, shift_labels: Optional[torch.Tensor] = None,
                           jsd_beta: float = 0.5, ignore_index: int = -100, temperature: float = 1.0) -> torch.Tensor:
    """JSD of the two lm-heads' log_softmax at ``temperature``, logits never materialized
    (see liger_aot.ops.fused_linear_jsd)."""
    return ops.fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels, jsd_beta,
                                ignore_index, temperature)


def liger_tvd(input: torch.Tensor, target: torch.Tensor, shift_labels: Optional[torch.Tensor] = None,
              reduction: str = "batchmean", ignore_index: int = -100) -> torch.Tensor:
    """Total variation distance ``0.5 * |input - target|`` (see liger_aot.ops.tvd)."""
    return ops.tvd(input, target, shift_labels, reduction, ignore_index)

# ---- end of the distillation losses
