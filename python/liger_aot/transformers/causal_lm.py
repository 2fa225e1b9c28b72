"""The causal-LM forward with the fused linear cross-entropy: with labels, the logits are never materialized.

One wrapper serves every family: it runs the family's own forward (so its inputs, multimodal position ids,
MoE router outputs and output class stay Hugging Face's) with the LM head fed an empty slice of the hidden states,
which it captures; the loss is then ``liger_aot.ops.fused_linear_cross_entropy`` of those hidden states and the
head's weight, with the family's final soft-cap or logits scaling folded in (table.py).
"""
import functools
import inspect

import torch
import torch.nn.functional as F

from .. import ops


def causal_lm_loss(hidden_states: torch.Tensor, lm_head: torch.nn.Module, labels=None, shift_labels=None,
                   ignore_index: int = -100, num_items_in_batch=None, softcap=None, logits_scaling=None,
                   logits_multiplier=None):
    """Hugging Face's ``ForCausalLMLoss`` of ``lm_head(hidden_states)`` (optionally soft-capped, divided by
    ``logits_scaling`` or multiplied by ``logits_multiplier``) without the logits: labels shifted left (padded
    with ``ignore_index``) unless ``shift_labels`` is given; mean over the non-ignored tokens, or their sum divided
    by ``num_items_in_batch``."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    if hidden.dtype != lm_head.weight.dtype:  # e.g. fp32 weights under autocast: the fused op takes one dtype
        hidden = hidden.to(lm_head.weight.dtype)
    if logits_scaling is not None and logits_scaling != 1:
        hidden = hidden * (1.0 / logits_scaling)  # (h W^T) / s == (h / s) W^T
    if logits_multiplier is not None and logits_multiplier != 1:
        hidden = hidden * logits_multiplier
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss, _ = ops.fused_linear_cross_entropy(hidden, lm_head.weight, shift_labels.reshape(-1).to(hidden.device),
                                             lm_head.bias, None, ignore_index, softcap=softcap, reduction=reduction)
    if reduction == "sum":
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def make_lce_forward(original, family):
    """The forward replacing ``original`` (a ForCausalLM/ForConditionalGeneration forward of ``family``).

    Extra argument ``skip_logits`` (Liger-Kernel's): None means "skip them when training with labels"; True
    forces the fused loss (labels required), False runs the original forward (logits and HF's loss).
    """
    signature = inspect.signature(original)

    @functools.wraps(original)
    def forward(self, *args, skip_logits=None, **kwargs):
        if args:  # positional arguments: name them once, by the original's signature
            bound = signature.bind(self, *args, **kwargs).arguments
            bound.pop(next(iter(bound)))
            extra = {k: bound.pop(k) for k, p in signature.parameters.items()
                     if p.kind is inspect.Parameter.VAR_KEYWORD and k in bound}
            kwargs = {**bound, **next(iter(extra.values()), {})}
        labels, shift_labels = kwargs.get("labels"), kwargs.get("shift_labels")
        if skip_logits is None:
            skip_logits = self.training and (labels is not None or shift_labels is not None)
        if not skip_logits:
            return original(self, **kwargs)
        if labels is None and shift_labels is None:
            raise ValueError("skip_logits=True needs labels or shift_labels: without them there is no loss to compute")

        kwargs.pop("labels", None)
        kwargs.pop("shift_labels", None)
        return_dict = kwargs.pop("return_dict", None)
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        lm_head = self.get_output_embeddings()
        captured = []

        def feed_empty(module, inputs):
            captured.append(inputs[0])
            return (inputs[0][..., :0, :],) + tuple(inputs[1:])

        handle = lm_head.register_forward_pre_hook(feed_empty)
        try:
            out = original(self, return_dict=True, **kwargs)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"liger_aot fused linear cross-entropy: {type(self).__name__}'s forward called its LM "
                               f"head {len(captured)} times, expected once")
        text_config = _text_config(self.config)
        loss = causal_lm_loss(
            captured[0], lm_head, labels, shift_labels, kwargs.get("ignore_index", -100),
            kwargs.get("num_items_in_batch"),
            softcap=getattr(text_config, family.softcap_attr, None) if family.softcap_attr else None,
            logits_scaling=getattr(text_config, family.logits_scaling_attr) if family.logits_scaling_attr else None,
            logits_multiplier=(getattr(text_config, family.logits_multiplier_attr)
                               if family.logits_multiplier_attr else None))
        aux_loss = out.get("aux_loss")
        if aux_loss is not None and hasattr(self, "router_aux_loss_coef"):
            loss = loss + self.router_aux_loss_coef * aux_loss.to(loss.device)
        fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
        out = type(out)(loss=loss, logits=None, **fields)
        return out if return_dict else out.to_tuple()

    forward.__liger_original__ = original
    return forward
