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


# ---- activations: SwiGLU / GeGLU MLPs, ReLU², DyT (issue 3)

# Hugging Face activation names (config.hidden_act / hidden_activation) -> geglu's approximate.
_GELU_APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu": "none"}


class LigerSwiGLUMLP(nn.Module):
    """Drop-in for Hugging Face ``LlamaMLP`` (and Mistral, Qwen2, ...): ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

    Built from a config with ``hidden_size``, ``intermediate_size`` and ``hidden_act`` (``"silu"`` or
    ``"swish"``); the three projections have no bias, as in HF, so state dicts load unchanged.
    """

    def __init__(self, config):
        super().__init__()
        if config.hidden_act not in ("silu", "swish"):
            raise ValueError(f"LigerSwiGLUMLP: hidden_act must be 'silu' or 'swish', got {config.hidden_act!r}")
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class LigerGEGLUMLP(nn.Module):
    """Drop-in for Hugging Face ``GemmaMLP``: ``down_proj(gelu(gate_proj(x)) * up_proj(x))``.

    The GELU form follows the config's ``hidden_activation`` (else ``hidden_act``): ``gelu_pytorch_tanh``,
    ``gelu_new`` and ``gelu_fast`` use the tanh approximation, ``gelu`` the exact erf form; a config
    with neither uses tanh, as Liger-Kernel's LigerGEGLUMLP always does.
    """

    def __init__(self, config):
        super().__init__()
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None) or "gelu_pytorch_tanh"
        if act not in _GELU_APPROXIMATE:
            raise ValueError(f"LigerGEGLUMLP: the activation must be one of {sorted(_GELU_APPROXIMATE)}, got {act!r}")
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.approximate = _GELU_APPROXIMATE[act]
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(ops.geglu(self.gate_proj(x), self.up_proj(x), self.approximate))


class LigerReLUSquared(nn.Module):
    """``relu(x) ** 2`` as a module (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.relu_squared(x)


class LigerDyT(nn.Module):
    """Dynamic Tanh, ``gamma * tanh(alpha * x) + beta`` over the last dimension, with Liger-Kernel's
    ``LigerDyT`` parameters: ``alpha`` ``[1]`` (``init_alpha``), ``gamma`` ``[hidden_size]`` (ones) and
    ``beta`` ``[hidden_size]`` (zeros; ``None`` with ``beta=False``).
    """

    def __init__(self, hidden_size: int, beta: bool = True, init_alpha: float = 0.5, device=None, dtype=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.init_alpha = init_alpha
        self.alpha = nn.Parameter(torch.full((1,), init_alpha, device=device, dtype=dtype))
        self.gamma = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        if beta:
            self.beta = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("beta", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.dyt(x, self.alpha, self.gamma, self.beta)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, init_alpha={self.init_alpha}, beta={self.beta is not None}"
