"""``nn.Module``s whose parameter names match the Hugging Face modules they replace."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

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


# ---- softmax, sparsemax, group_norm (issue 3)


class LigerSoftmax(nn.Module):
    """Softmax over the last dimension (Liger-Kernel's ``LigerSoftmax``, which takes no arguments)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.softmax(x)


class LigerSparsemax(nn.Module):
    """Sparsemax over ``dim`` (Liger-Kernel's ``LigerSparsemax(dim=-1)``).

    The kernels work on the last dimension; another ``dim`` is moved there and back (the op then copies
    the transposed input to contiguous rows).
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0:
            raise ValueError("LigerSparsemax: x must have at least one dimension, got a 0-d tensor")
        dim = self.dim + x.dim() if self.dim < 0 else self.dim
        if not 0 <= dim < x.dim():
            raise ValueError(f"LigerSparsemax: dim {self.dim} is out of range for a {x.dim()}-d input")
        if dim == x.dim() - 1:
            return ops.sparsemax(x)
        return ops.sparsemax(x.transpose(dim, -1)).transpose(dim, -1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LigerGroupNorm(nn.Module):
    """Group normalization with Liger-Kernel's ``LigerGroupNorm`` signature and parameters.

    ``weight`` and ``bias`` are always parameters of shape ``[num_channels]`` (as in Liger-Kernel and
    ``torch.nn.GroupNorm(affine=True)``, so their state dicts load unchanged): ``init_fn`` picks ones or
    zeros for the weight; ``bias=True`` initialises the bias from a normal distribution (Liger-Kernel's
    choice), ``bias=False`` with zeros.
    """

    def __init__(self, num_channels: int, num_groups: int, eps: float = 1e-6, bias: bool = False,
                 init_fn: str = "ones", device=None, dtype=None):
        super().__init__()
        if init_fn not in ("ones", "zeros"):
            raise ValueError(f"LigerGroupNorm: init_fn must be 'ones' or 'zeros', got {init_fn!r}")
        if num_groups <= 0 or num_channels % num_groups != 0:
            raise ValueError(f"LigerGroupNorm: num_groups ({num_groups}) must be positive and divide "
                             f"num_channels ({num_channels})")
        self.num_channels = num_channels
        self.num_groups = num_groups
        self.eps = eps
        self.variance_epsilon = eps
        fill = torch.ones if init_fn == "ones" else torch.zeros
        self.weight = nn.Parameter(fill(num_channels, device=device, dtype=dtype))
        init_bias = torch.randn if bias else torch.zeros
        self.bias = nn.Parameter(init_bias(num_channels, device=device, dtype=dtype))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dim() < 2 or hidden_states.shape[1] != self.num_channels:
            raise ValueError(f"LigerGroupNorm: input must have shape [N, {self.num_channels}, *], "
                             f"got {list(hidden_states.shape)}")
        return ops.group_norm(hidden_states, self.num_groups, self.weight, self.bias, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, num_groups={self.num_groups}, eps={self.eps}"


# ---- activations: SwiGLU / GeGLU MLPs, ReLU², DyT (issue 3)

# Hugging Face activation names (config.hidden_act / hidden_activation) -> geglu's approximate.
_GELU_APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu": "none"}


def plain_projections(x: torch.Tensor, *layers: nn.Module) -> bool:
    """True when the layers are plain bias-free ``nn.Linear``s without forward hooks (no LoRA, quantized or hooked
    layer) and x and their weights plain tensors (no DTensor): then one ``swiglu_mlp`` / ``geglu_mlp`` computes
    exactly what calling them would."""
    if _global_forward_hooks or _global_forward_pre_hooks or type(x) is not torch.Tensor:
        return False
    for layer in layers:
        if type(layer) is not nn.Linear or layer.bias is not None or layer._forward_hooks or layer._forward_pre_hooks:
            return False
        if type(layer.weight) not in (nn.Parameter, torch.Tensor):
            return False
    return True


def fused_gated_mlp(x: torch.Tensor, gate_weight: torch.Tensor, up_weight: Optional[torch.Tensor],
                    down_weight: torch.Tensor, gate: str) -> torch.Tensor:
    """:func:`ops.swiglu_mlp` (gate ``"silu"``) or :func:`ops.geglu_mlp` (gate ``"tanh"`` or ``"none"``)."""
    if gate == "silu":
        return ops.swiglu_mlp(x, gate_weight, up_weight, down_weight)
    return ops.geglu_mlp(x, gate_weight, up_weight, down_weight, gate)


def gated_mlp_forward(mlp: nn.Module, x: torch.Tensor, gate: str) -> torch.Tensor:
    """``mlp.down_proj(act(mlp.gate_proj(x)) * mlp.up_proj(x))`` with act silu (gate ``"silu"``) or gelu (gate
    ``"tanh"`` or ``"none"``, its approximation): one :func:`ops.swiglu_mlp` / :func:`ops.geglu_mlp` (which keeps
    less for the backward) when the projections are plain, else the three modules around the activation op."""
    if plain_projections(x, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        return fused_gated_mlp(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight, gate)
    g, u = mlp.gate_proj(x), mlp.up_proj(x)
    return mlp.down_proj(ops.swiglu(g, u) if gate == "silu" else ops.geglu(g, u, gate))


class LigerSwiGLUMLP(nn.Module):
    """Drop-in for Hugging Face ``LlamaMLP`` (and Mistral, Qwen2, ...): ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

    Built from a config with ``hidden_size``, ``intermediate_size`` and ``hidden_act`` (``"silu"`` or
    ``"swish"``); the three projections have no bias, as in HF, so state dicts load unchanged. The forward is one
    :func:`ops.swiglu_mlp`, whose backward recomputes the SwiGLU product instead of keeping it (``intermediate``
    fewer saved elements per token); projections replaced by other modules (LoRA, quantized) or hooked are called
    as modules instead.
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
        if torch.jit.is_scripting():  # a scripted module's projections are nn.Linear and cannot hold hooks
            return ops.swiglu_mlp(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)
        return gated_mlp_forward(self, x, "silu")


class LigerGEGLUMLP(nn.Module):
    """Drop-in for Hugging Face ``GemmaMLP``: ``down_proj(gelu(gate_proj(x)) * up_proj(x))``.

    The GELU form follows the config's ``hidden_activation`` (else ``hidden_act``): ``gelu_pytorch_tanh``,
    ``gelu_new`` and ``gelu_fast`` use the tanh approximation, ``gelu`` the exact erf form; a config
    with neither uses tanh, as Liger-Kernel's LigerGEGLUMLP always does. The forward is one :func:`ops.geglu_mlp`
    (see :class:`LigerSwiGLUMLP`).
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
        if torch.jit.is_scripting():  # a scripted module's projections are nn.Linear and cannot hold hooks
            return ops.geglu_mlp(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight,
                                 self.approximate)
        return gated_mlp_forward(self, x, self.approximate)


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


# ---- cross_entropy, fused_linear_cross_entropy (issue 5) -----------------------------------------------------



class LigerCrossEntropyLoss(nn.Module):
    """Liger-Kernel's ``LigerCrossEntropyLoss``: ``nn.CrossEntropyLoss`` over the last dimension with a logit
    soft-cap and the z-loss; ``forward(_input, target)`` returns the loss, or ``(loss, z_loss)`` with
    ``return_z_loss=True``. ``weight`` holds the class weights (a buffer, not a parameter)."""

    def __init__(self, weight: Optional[torch.Tensor] = None, ignore_index: int = -100, lse_square_scale: float = 0.0,
                 label_smoothing: float = 0.0, reduction: str = "mean", softcap: Optional[float] = None,
                 return_z_loss: bool = False):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"LigerCrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"LigerCrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if softcap is not None and not softcap > 0:
            raise ValueError(f"LigerCrossEntropyLoss: softcap must be > 0 or None, got {softcap}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.lse_square_scale = lse_square_scale
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.softcap = softcap
        self.return_z_loss = return_z_loss

    def forward(self, _input: torch.Tensor, target: torch.Tensor):
        loss, z_loss = ops.cross_entropy(_input, target, self.weight, self.ignore_index, self.label_smoothing,
                                         self.lse_square_scale, self.softcap, self.reduction)
        return (loss, z_loss) if self.return_z_loss else loss


class LigerFusedLinearCrossEntropyLoss(nn.Module):
    """Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``: ``forward(lin_weight, _input, target, bias=None)`` is
    the cross-entropy of ``_input @ lin_weight.T + bias`` without holding all logits (see
    :func:`liger_aot.ops.fused_linear_cross_entropy`). ``ce_weight`` holds the class weights (a buffer)."""

    def __init__(self, ce_weight: Optional[torch.Tensor] = None, ignore_index: int = -100,
                 lse_square_scale: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
                 softcap: Optional[float] = None, return_z_loss: bool = False,
                 accum_dtype: Optional[torch.dtype] = None, use_token_scaling: bool = False):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"LigerFusedLinearCrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"LigerFusedLinearCrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got "
                             f"{reduction!r}")
        if softcap is not None and not softcap > 0:
            raise ValueError(f"LigerFusedLinearCrossEntropyLoss: softcap must be > 0 or None, got {softcap}")
        if accum_dtype is not None or use_token_scaling:
            raise NotImplementedError("LigerFusedLinearCrossEntropyLoss: accum_dtype and use_token_scaling are not "
                                      "supported by liger_aot")
        self.register_buffer("ce_weight", ce_weight)
        self.ignore_index = ignore_index
        self.lse_square_scale = lse_square_scale
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.softcap = softcap
        self.return_z_loss = return_z_loss

    def forward(self, lin_weight: torch.Tensor, _input: torch.Tensor, target: torch.Tensor,
                bias: Optional[torch.Tensor] = None):
        loss, z_loss = ops.fused_linear_cross_entropy(_input, lin_weight, target, bias, self.ce_weight,
                                                      self.ignore_index, self.label_smoothing,
                                                      self.lse_square_scale, self.softcap, self.reduction)
        return (loss, z_loss) if self.return_z_loss else loss


# ---- distillation losses (issue 5): Liger-Kernel's names and constructor arguments


class LigerKLDIVLoss(nn.KLDivLoss):
    """``nn.KLDivLoss`` on liger::kl_div: ``forward(y_pred, y_true)`` with y_pred log-probabilities."""

    def __init__(self, eps: float = 1e-10, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return ops.kl_div(y_pred, y_true, self.reduction, self.log_target, self.eps)


class LigerJSD(nn.Module):
    """Generalized JSD, ``forward(log_q, log_p, shift_labels=None)``: student then teacher log-probabilities."""

    def __init__(self, beta: float = 0.5, ignore_index: int = -100):
        super().__init__()
        self.beta = beta
        self.ignore_index = ignore_index

    def forward(self, log_q: torch.Tensor, log_p: torch.Tensor, shift_labels=None) -> torch.Tensor:
        return ops.jsd(log_q, log_p, shift_labels, self.beta, self.ignore_index)


class LigerFusedLinearJSD(nn.Module):
    """Fused lm-head + generalized JSD, ``forward(student_input, student_weight, teacher_input, teacher_weight,
    shift_labels=None)``; the logits are never materialized."""

    def __init__(self, jsd_beta: float = 0.5, ignore_index: int = -100, temperature: float = 1.0):
        super().__init__()
        self.jsd_beta = jsd_beta
        self.ignore_index = ignore_index
        self.temperature = temperature

    def forward(self, student_input: torch.Tensor, student_weight: torch.Tensor, teacher_input: torch.Tensor,
                teacher_weight: torch.Tensor, shift_labels=None) -> torch.Tensor:
        return ops.fused_linear_jsd(student_input, student_weight, teacher_input, teacher_weight, shift_labels,
                                    self.jsd_beta, self.ignore_index, self.temperature)


class LigerTVDLoss(nn.Module):
    """Total variation distance, ``forward(p, q, shift_labels=None)``."""

    def __init__(self, reduction: str = "batchmean", ignore_index: int = -100):
        super().__init__()
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, p: torch.Tensor, q: torch.Tensor, shift_labels=None) -> torch.Tensor:
        return ops.tvd(p, q, shift_labels, self.reduction, self.ignore_index)


# ---- inference: the projections that read one input as one matrix product


class LinearPack:
    """The ``nn.Linear`` children ``names`` of ``parent`` that read the same input (q/k/v, gate/up), run as one
    matrix product where autograd does not record: ``q, k, v = LinearPack(attn, ("q_proj", "k_proj", "v_proj"))(x)``.

    At the first such call the layers' weights (and biases) move into one tensor, each parameter becoming a view
    of its rows: the modules, their parameter names and state dicts stay as they were (loading a state dict, or an
    optimizer step, writes through the views), and one ``F.linear`` gives every output (split views of it). With
    grad enabled, under ``torch.compile``/``torch.export`` tracing, during a CUDA graph capture that would have to
    pack, or when a child is not a plain hook-free ``nn.Linear`` (say a PEFT wrapper), each layer runs on its own.
    The children are looked up on ``parent`` at every call and the pack is rebuilt when a parameter no longer
    points into it (after ``.to(dtype)`` or a move), so it never serves stale weights.

    What it saves is host time: at batch 1 a decode step is bound by the launches, and q/k/v and gate/up are five
    of a Llama layer's seven matrix products.
    """

    def __init__(self, parent: nn.Module, names: Sequence[str]):
        if len(names) < 2:
            raise ValueError(f"LinearPack: needs at least two layers, got {list(names)}")
        self.parent = parent
        self.names = tuple(names)
        self._key = None  # (the data_ptr of each weight and bias) when packed
        self._weight: Optional[torch.Tensor] = None
        self._bias: Optional[torch.Tensor] = None
        self._sizes: Tuple[int, ...] = ()

    def layers(self) -> Tuple[nn.Module, ...]:
        return tuple(map(self.parent._modules.__getitem__, self.names))

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        layers = self.layers()
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return tuple(layer(x) for layer in layers)
        key = self._key_of(layers)
        if key is None or (key != self._key and not self._pack(layers)):
            return tuple(layer(x) for layer in layers)
        return F.linear(x, self._weight, self._bias).split(self._sizes, -1)

    @staticmethod
    def _key_of(layers):
        """The data_ptr of each weight and bias, or None when a layer must run as itself (not a plain nn.Linear,
        or forward hooks that the packed product would skip). Written for host time: it runs at every call."""
        if _global_forward_hooks or _global_forward_pre_hooks:
            return None
        key = []
        for layer in layers:
            if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
                return None
            params = layer._parameters
            key.append(params["weight"].data_ptr())
            bias = params["bias"]
            key.append(-1 if bias is None else bias.data_ptr())
        return tuple(key)

    def _pack(self, layers) -> bool:
        weights = [layer.weight for layer in layers]
        biases = [layer.bias for layer in layers]
        first = weights[0]
        if (any(w.dim() != 2 or w.shape[1] != first.shape[1] or w.dtype != first.dtype or w.device != first.device
                or type(w) is not nn.Parameter for w in weights)
                or len({b is None for b in biases}) != 1
                or (biases[0] is not None and any(b.dtype != first.dtype or b.device != first.device for b in biases))
                or (first.is_cuda and torch.cuda.is_current_stream_capturing())):
            return False
        with torch.no_grad(), torch.inference_mode(False):
            weight = torch.cat([w.detach() for w in weights])
            bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
            sizes = tuple(w.shape[0] for w in weights)
            for layer, w in zip(layers, weight.split(sizes)):
                layer.weight.data = w
            if bias is not None:
                for layer, b in zip(layers, bias.split(sizes)):
                    layer.bias.data = b
        self._weight, self._bias, self._sizes = weight, bias, sizes
        self._key = self._key_of(layers)
        return True
