"""Functional forms with Liger-Kernel's names (``liger_kernel.transformers.functional``)."""
from typing import Optional

import torch

from . import ops

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
