"""The forwards that replace Hugging Face's: norms, gated MLPs, MoE experts, rotary embeddings, the CE loss.

Each is a plain function of ``self`` so that one definition serves both ways of patching (see monkey_patch.py):
as the ``forward`` of a subclass put in place of the Hugging Face class before a model is built, and bound to
the modules of a model that exists (parameters, buffers and hooks stay where they are).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..nn import fused_gated_mlp, plain_projections
from ..nn import gated_mlp_forward as _fused_gated_mlp

# ---- RMSNorm ----------------------------------------------------------------------------------------------------
# The family's variant is described by three attributes set on the class or the instance when patching:
# _liger_offset (1.0 for Gemma's (1 + weight)), _liger_casting_mode ("llama": x * rstd rounded to x's dtype then
# times the weight; "gemma": all in fp32, rounded once) and _liger_eps_attr (the attribute holding eps).


def rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return ops.rms_norm(hidden_states, getattr(self, "weight", None), getattr(self, self._liger_eps_attr),
                        self._liger_offset, self._liger_casting_mode)


# ---- LayerNorm (torch.nn.LayerNorm over the last dimension) ----------------------------------------------------


def layer_norm_forward(self, input: torch.Tensor) -> torch.Tensor:
    if len(self.normalized_shape) != 1:  # liger's layer_norm normalizes the last dimension only
        return nn.LayerNorm.forward(self, input)
    return ops.layer_norm(input, self.weight, self.bias, self.eps)


# ---- gated MLPs -------------------------------------------------------------------------------------------------

# Hugging Face activation modules -> the gate function of the fused op ("silu" or geglu's approximate).
_TANH_GELUS = ("GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "FastGELUActivation")


def activation_kind(act: Optional[nn.Module]) -> Optional[str]:
    """"silu", "tanh" (tanh-approximated GELU), "none" (exact GELU) or None when no fused op computes it."""
    name = type(act).__name__
    if isinstance(act, nn.SiLU) or name == "SiLUActivation":
        return "silu"
    if name in _TANH_GELUS:
        return "tanh"
    if name == "GELUActivation":
        return "none"
    if name == "ReLUSquaredActivation":
        return "relu2"
    if isinstance(act, nn.GELU):
        return act.approximate
    return None


def _gate(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    kind = self._liger_act
    return ops.swiglu(gate, up) if kind == "silu" else ops.geglu(gate, up, kind)


def gated_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """``down_proj(act(gate_proj(x)) * up_proj(x))`` (Llama, Mistral, Qwen, Gemma, Granite, OLMo 2, SmolLM3, ...);
    with plain projections one ``swiglu_mlp`` / ``geglu_mlp`` (see nn.gated_mlp_forward)."""
    return _fused_gated_mlp(self, x, self._liger_act)


def fused_gate_up_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Phi-3 and GLM-4: one ``gate_up_proj`` whose output halves are the gate and the up projection; with plain
    projections one ``swiglu_mlp`` / ``geglu_mlp`` on the packed weight."""
    if plain_projections(x, self.gate_up_proj, self.down_proj):
        return fused_gated_mlp(x, self.gate_up_proj.weight, None, self.down_proj.weight, self._liger_act)
    gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
    return self.down_proj(_gate(self, gate, up))


def plain_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Nemotron's ``down_proj(relu(up_proj(x)) ** 2)``: the activation is liger's relu_squared."""
    return self.down_proj(ops.relu_squared(self.up_proj(x)))


def multiplied_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """Falcon-H1: ``down_proj(up_proj(x) * act(gate_proj(x) * gate_multiplier)) * down_multiplier``."""
    h = _gate(self, self.gate_proj(x) * self.gate_multiplier, self.up_proj(x))
    return self.down_proj(h) * self.down_multiplier


# ---- MoE experts with 3-D weights (Mixtral, Qwen3-MoE in transformers 5) ----------------------------------------
# The class's forward dispatches on config._experts_implementation; "grouped_mm"/"batched_mm" call
# self._apply_gate, which we replace; the eager loop writes act_fn(gate) * up inline, so it is rewritten here
# around _apply_gate.


def experts_apply_gate(self, gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return _gate(self, gate, up)


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    if getattr(getattr(self, "config", None), "_experts_implementation", None) not in (None, "eager"):
        return self._liger_dispatch_forward(hidden_states, top_k_index, top_k_weights)
    out = torch.zeros_like(hidden_states)
    with torch.no_grad():
        # [num_experts, top_k, tokens] membership, and the experts that received at least one token
        mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
        hit = (mask.sum(dim=(-1, -2)) > 0).nonzero()
    for expert in hit[:, 0].tolist():
        slot, token = torch.where(mask[expert])
        h = self._apply_gate(F.linear(hidden_states[token], self.gate_up_proj[expert]))
        h = F.linear(h, self.down_proj[expert]) * top_k_weights[token, slot, None]
        out.index_add_(0, token, h.to(out.dtype))
    return out


def llama4_experts_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Llama 4's experts: tokens already grouped per expert, ``gate_up_proj`` stored [E, H, 2I]."""
    x = hidden_states.view(self.gate_up_proj.shape[0], -1, self.hidden_size)
    gate, up = torch.bmm(x, self.gate_up_proj).chunk(2, dim=-1)
    return torch.bmm(_gate(self, gate, up), self.down_proj).view(-1, self.hidden_size)


# ---- rotary position embeddings ---------------------------------------------------------------------------------


def rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """Hugging Face ``apply_rotary_pos_emb`` (rotate-half; partial rotary when cos is narrower than q, as Phi-3)."""
    if unsqueeze_dim == 0 and cos.dim() == 2 and q.dim() == 4:
        unsqueeze_dim = 1  # Pixtral: q [B, H, S, D], cos/sin [S, D] shared by every row and head
    return ops.rope(q, k, cos, sin, unsqueeze_dim)


def half_cos_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """GPT-OSS's ``apply_rotary_pos_emb``: rotate-half RoPE whose cos/sin hold each frequency once (head_dim / 2
    columns); Hugging Face's layout repeats them, which is what ``ops.rope`` takes."""
    return ops.rope(q, k, torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1), unsqueeze_dim)


def glm4_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """GLM-4's ``apply_rotary_pos_emb``: adjacent pairs (x[2i], x[2i+1]) of the first ``cos.shape[-1]`` columns
    rotate by the angle of frequency i (the first half of cos/sin); the other columns pass through.

    That is Llama 4's complex rotation on the rotary slice, so it runs on ``llama4_rope`` ([B, S, H, D] layout:
    the [B, H, S, D] views are transposed, not copied).
    """
    rot = cos.shape[-1]
    half = rot // 2
    freqs = torch.stack((cos[..., :half], sin[..., :half]), dim=-1)  # [B, S, rot/2, 2]: the real form of freqs_cis
    if unsqueeze_dim == 1:
        q_rot, k_rot = q[..., :rot].transpose(1, 2), k[..., :rot].transpose(1, 2)
    else:
        q_rot, k_rot = q[..., :rot], k[..., :rot]
    q_out, k_out = ops.llama4_rope(q_rot, k_rot, freqs.to(torch.float32))
    if unsqueeze_dim == 1:
        q_out, k_out = q_out.transpose(1, 2), k_out.transpose(1, 2)
    if rot == q.shape[-1]:
        return q_out, k_out
    return torch.cat([q_out, q[..., rot:]], dim=-1), torch.cat([k_out, k[..., rot:]], dim=-1)


def llama4_rotary_emb(xq, xk, freqs_cis):
    """Llama 4's ``apply_rotary_emb`` (q, k [B, S, H, D], complex freqs_cis [B, S, D/2])."""
    return ops.llama4_rope(xq, xk, freqs_cis)


# ---- cross-entropy on materialized logits (cross_entropy=True) -------------------------------------------------


def fixed_cross_entropy(source: torch.Tensor, target: torch.Tensor, num_items_in_batch=None,
                        ignore_index: int = -100, **kwargs) -> torch.Tensor:
    """Replaces ``transformers.loss.loss_utils.fixed_cross_entropy`` (what ForCausalLMLoss and the other HF losses
    call): mean over non-ignored targets, or the sum divided by ``num_items_in_batch`` when it is given."""
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss, _ = ops.cross_entropy(source, target, None, ignore_index, reduction=reduction)
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss
