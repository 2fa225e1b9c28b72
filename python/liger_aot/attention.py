"""Hugging Face attention implementation ``"liger_flash"`` backed by ``liger::flash_attn`` / ``flash_attn_varlen``.

    import liger_aot.attention          # registers "liger_flash" when transformers is installed
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="liger_flash")
    # or, on a loaded model: model.set_attn_implementation("liger_flash")

Every attention layer then calls :func:`liger_flash_attention_forward`. Padded batches are unpadded into packed
sequences (``flash_attn_varlen``), as transformers' own FlashAttention-2 path does; causal attention is taken
from ``module.is_causal``, sliding windows from ``sliding_window``, soft-capping from ``softcap``, GQA from the
head counts. Importing ``liger_aot`` itself never imports transformers.
"""
from __future__ import annotations

import importlib.util
import warnings
from typing import Optional, Tuple

import torch

from . import ops

NAME = "liger_flash"


def _unpad(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """[B, S, H, D] rows at flat positions `indices` -> [total, H, D]."""
    return x.reshape(-1, x.shape[-2], x.shape[-1]).index_select(0, indices)


def _cu_seqlens(valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    lengths = valid.sum(-1, dtype=torch.int32)
    cu = torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    indices = torch.nonzero(valid.flatten(), as_tuple=False).flatten()
    return cu, indices, int(lengths.max().item()) if lengths.numel() else 0


def _padding_from_4d(mask: torch.Tensor, s_q: int, s_k: int, causal: bool,
                     window_left: int) -> Optional[torch.Tensor]:
    """Key padding [B, S_k] of a 4-D mask when the mask is exactly padding + causal (+ window), else None."""
    allowed = mask if mask.dtype == torch.bool else mask == 0
    allowed = allowed.expand(allowed.shape[0], allowed.shape[1], s_q, s_k)
    if allowed.shape[1] != 1 and not bool((allowed == allowed[:, :1]).all()):
        return None
    allowed = allowed[:, 0]
    keys = allowed.any(1)  # a non-padding key is seen by some query
    i = torch.arange(s_q, device=mask.device)[:, None] + (s_k - s_q)
    j = torch.arange(s_k, device=mask.device)[None, :]
    rule = torch.ones(s_q, s_k, dtype=torch.bool, device=mask.device)
    if causal:
        rule &= j <= i
    if window_left >= 0:
        rule &= j >= i - window_left
    queries = keys[:, s_k - s_q:]
    expected = rule[None] & keys[:, None, :] & queries[:, :, None]
    # Rows of padding queries are don't-care (their outputs are zeroed); compare the valid rows only.
    if not bool(((allowed == expected) | ~queries[:, :, None]).all()):
        return None
    return keys


def liger_flash_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                                  value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                                  scaling: Optional[float] = None, dropout: float = 0.0,
                                  sliding_window: Optional[int] = None, softcap: Optional[float] = None,
                                  **kwargs) -> Tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query ``[B, H_q, S_q, D]``, key/value ``[B, H_k, S_k, D]``;
    returns ``([B, S_q, H_q, D], None)``. attention_mask: None, a 2-D ``[B, S_k]`` padding mask (1 = token), or
    a 4-D mask (bool, or additive float) that must be padding + causal/sliding-window; any other 4-D mask
    falls back to PyTorch SDPA with a warning.
    """
    if dropout and module.training:
        raise NotImplementedError("liger_flash: attention dropout is not supported (set attention_dropout=0)")
    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    window_left = int(sliding_window) - 1 if sliding_window else -1
    cap = float(softcap) if softcap else 0.0
    b, _, s_q, _ = query.shape
    s_k = key.shape[2]
    q = query.transpose(1, 2)
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is not None and cu_k is not None and b == 1 and attention_mask is None:
        # Packed sequences (transformers' DataCollatorWithFlattening): one row holding several sequences.
        max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
        max_q = int(max_q) if max_q is not None else int((cu_q[1:] - cu_q[:-1]).max())
        max_k = int(max_k) if max_k is not None else int((cu_k[1:] - cu_k[:-1]).max())
        # one tensor for both sides when the caller passed one: the kernels then know the sequences match (the
        # Hopper kernels need that)
        cu_q32 = cu_q.to(torch.int32)
        cu_k32 = cu_q32 if cu_k is cu_q else cu_k.to(torch.int32)
        out = ops.flash_attn_varlen(q[0], k[0], v[0], cu_q32, cu_k32, max_q, max_k, causal, scaling, window_left, -1,
                                    cap)
        return out.unsqueeze(0), None
    keys = None
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            keys = attention_mask[:, -s_k:].bool()
        elif attention_mask.dim() == 4:
            keys = _padding_from_4d(attention_mask, s_q, s_k, causal, window_left)
            if keys is None:
                warnings.warn("liger_flash: a 4-D attention mask that is not padding + causal/sliding window: "
                              "using torch's scaled_dot_product_attention for this call", stacklevel=2)
                return _sdpa_fallback(query, key, value, attention_mask, scaling), None
        else:
            raise ValueError(f"liger_flash: attention_mask must be 2-D or 4-D, got shape {tuple(attention_mask.shape)}")
        if bool(keys.all()):
            keys = None
    if keys is None:
        out = ops.flash_attn(q, k, v, causal, scaling, window_left, -1, cap)
        return out, None
    cu_k, idx_k, max_k = _cu_seqlens(keys)
    if s_q == s_k:  # the same sequences on both sides: one cu_seqlens tensor
        cu_q, idx_q, max_q = cu_k, idx_k, max_k
    else:
        cu_q, idx_q, max_q = _cu_seqlens(keys[:, s_k - s_q:])
    out = ops.flash_attn_varlen(_unpad(q, idx_q), _unpad(k, idx_k), _unpad(v, idx_k), cu_q, cu_k, max_q, max_k,
                                causal, scaling, window_left, -1, cap)
    full = out.new_zeros(b * s_q, out.shape[-2], out.shape[-1])
    full.index_copy_(0, idx_q, out)
    return full.view(b, s_q, out.shape[-2], out.shape[-1]), None


def _sdpa_fallback(query, key, value, mask, scaling):
    group = query.shape[1] // key.shape[1]
    if group > 1:
        key = key.repeat_interleave(group, 1)
        value = value.repeat_interleave(group, 1)
    if mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous()


def _skip_flash_kernel_loading():
    """transformers treats every implementation whose name contains "flash" as a FlashAttention build and, when
    a model selects it, preloads flash_attn_func / flash_attn_varlen_func for it (from the flash-attn package
    or a hub kernel); for "liger_flash" that load fails. The attention function registered here needs none of
    them, so the preload is skipped for this name only."""
    try:
        from transformers import modeling_utils
    except ImportError:
        return
    original = getattr(modeling_utils, "lazy_import_flash_attention", None)
    if original is None or getattr(original, "_liger_flash_skip", False):
        return

    def lazy_import_flash_attention(implementation, *args, **kwargs):
        if implementation is not None and implementation.split("|")[-1] == NAME:
            return None
        return original(implementation, *args, **kwargs)

    lazy_import_flash_attention._liger_flash_skip = True
    modeling_utils.lazy_import_flash_attention = lazy_import_flash_attention


def register() -> bool:
    """Registers ``"liger_flash"`` with transformers' AttentionInterface (and the FlashAttention-2 style 2-D
    padding mask for it where transformers has an AttentionMaskInterface). Returns False without transformers."""
    if importlib.util.find_spec("transformers") is None:
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, liger_flash_attention_forward)
    _skip_flash_kernel_loading()
    try:
        from transformers import AttentionMaskInterface
        from transformers.masking_utils import flash_attention_mask
    except ImportError:  # older transformers: the model builds its own mask, handled above
        return True
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    return True


register()
