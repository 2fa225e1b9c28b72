"""``nn.Module``s whose parameter names match the Hugging Face modules they replace."""
import torch
from torch import nn

from . import ops


class LigerRMSNorm(nn.Module):
    """Drop-in for Hugging Face ``LlamaRMSNorm`` (``casting_mode="llama"``), ``GemmaRMSNorm``
    (``offset=1.0, casting_mode="gemma"``, weight initialised to zeros) and similar.

    The parameter is called ``weight`` so HF state dicts load unchanged; ``elementwise_affine=False``
    means no weight.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, offset: float = 0.0, casting_mode: str = "llama",
                 elementwise_affine: bool = True, init_fn: str = "ones", device=None, dtype=None):
        super().__init__()
        if casting_mode not in ("llama", "gemma", "none"):
            raise ValueError(f"LigerRMSNorm: casting_mode must be 'llama', 'gemma' or 'none', got {casting_mode!r}")
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"LigerRMSNorm: init_fn must be 'ones' or 'zeros', got {init_fn!r}")
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.offset = offset
        self.casting_mode = casting_mode
        self.init_fn = init_fn
        if elementwise_affine:
            fill = torch.ones if init_fn == "ones" else torch.zeros
            self.weight = nn.Parameter(fill(hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(hidden_states, self.weight, self.variance_epsilon, self.offset, self.casting_mode)

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, eps={self.variance_epsilon}, offset={self.offset}, "
                f"casting_mode={self.casting_mode!r}, elementwise_affine={self.weight is not None}")


# ---- LigerLayerNorm, LigerFusedAddRMSNorm (issue 3)


class LigerLayerNorm(nn.Module):
    """Drop-in for ``torch.nn.LayerNorm(hidden_size)`` and Liger-Kernel's ``LigerLayerNorm`` (same signature
    and parameters ``weight`` and ``bias``, so their state dicts load unchanged).

    As in Liger-Kernel, both parameters always exist: ``weight`` starts at ones (``init_fn="ones"``) or zeros,
    ``bias`` at zeros, or random normal values when ``bias=True``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, bias: bool = False, init_fn: str = "ones", device=None,
                 dtype=None):
        super().__init__()
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"LigerLayerNorm: init_fn must be 'ones' or 'zeros', got {init_fn!r}")
        self.hidden_size = hidden_size
        self.eps = eps
        self.variance_epsilon = eps
        fill = torch.ones if init_fn == "ones" else torch.zeros
        self.weight = nn.Parameter(fill(hidden_size, device=device, dtype=dtype))
        init_bias = torch.randn if bias else torch.zeros
        self.bias = nn.Parameter(init_bias(hidden_size, device=device, dtype=dtype))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return ops.layer_norm(hidden_states, self.weight, self.bias, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class LigerFusedAddRMSNorm(nn.Module):
    """Residual add + RMSNorm in one kernel: ``forward(hidden_states, residual)`` returns
    ``(rms_norm(hidden_states + residual), hidden_states + residual)``.

    Signature and parameter name (``weight``) as Liger-Kernel's ``LigerFusedAddRMSNorm``, whose ``in_place`` and
    ``row_mode`` kernel options have no counterpart here; ``offset`` and ``casting_mode`` as in
    :class:`LigerRMSNorm`.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, offset: float = 0.0, casting_mode: str = "llama",
                 init_fn: str = "ones", device=None, dtype=None):
        super().__init__()
        if casting_mode not in ("llama", "gemma", "none"):
            raise ValueError(
                f"LigerFusedAddRMSNorm: casting_mode must be 'llama', 'gemma' or 'none', got {casting_mode!r}")
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"LigerFusedAddRMSNorm: init_fn must be 'ones' or 'zeros', got {init_fn!r}")
        self.hidden_size = hidden_size
        self.variance_epsilon = eps
        self.offset = offset
        self.casting_mode = casting_mode
        fill = torch.ones if init_fn == "ones" else torch.zeros
        self.weight = nn.Parameter(fill(hidden_size, device=device, dtype=dtype))

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor):
        return ops.fused_add_rms_norm(hidden_states, residual, self.weight, self.variance_epsilon, self.offset,
                                      self.casting_mode)

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, eps={self.variance_epsilon}, offset={self.offset}, "
                f"casting_mode={self.casting_mode!r}")
