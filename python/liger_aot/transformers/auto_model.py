"""``AutoLigerKernelForCausalLM`` / ``AutoLigerKernelForImageTextToText``: the Auto classes, patching the checkpoint's
families first."""
import inspect

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from .monkey_patch import (FAMILY_BY_MODEL_TYPE, LIGER_FLASH, MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel,
                           _sub_model_patches)


def _names(fn) -> set:
    """The flags an apply function takes by name."""
    return {k for k, p in inspect.signature(fn).parameters.items()
            if k != "model" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def _patch(config, kwargs: dict) -> dict:
    """Apply the row of ``config`` and, for a multimodal wrapper (LLaVA, PaliGemma, ...), those of its language
    model and vision tower, to the classes before the model is built, with the liger flags among ``kwargs``;
    returns the other kwargs, for transformers."""
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(config.model_type)
    if fn is None:
        _apply_liger_kernel(config.model_type)  # warns
        return kwargs
    wraps = FAMILY_BY_MODEL_TYPE[config.model_type].wraps
    sub_fns = [s[2] for s in _sub_model_patches(config, {}) if s[2] is not None] if wraps else []
    names = set().union(*(_names(f) for f in [fn] + sub_fns))
    liger = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if liger.get("flash_attention"):
        kwargs.setdefault("attn_implementation", LIGER_FLASH)
    fn(**{k: v for k, v in liger.items() if k in _names(fn)})
    for _, _, sub_fn, sub in (_sub_model_patches(config, liger) if wraps else []):
        if sub_fn is not None:
            sub_fn(**sub)
    return kwargs


class _PatchFirst:
    """``from_pretrained`` / ``from_config`` that apply the config's rows (see :func:`_patch`) before building."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if config is None or isinstance(config, str):
            hub = {k: kwargs[k] for k in ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only")
                   if k in kwargs}
            config = AutoConfig.from_pretrained(config or pretrained_model_name_or_path, **hub)
        kwargs = _patch(config, dict(kwargs))
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        kwargs = _patch(config, dict(kwargs))
        return super().from_config(config, **kwargs)


class AutoLigerKernelForCausalLM(_PatchFirst, AutoModelForCausalLM):
    """``AutoModelForCausalLM`` whose ``from_pretrained``/``from_config`` first apply
    ``apply_liger_kernel_to_<family>`` for the config's ``model_type`` (unknown types load unpatched, with a
    warning). The family function's keyword arguments (``rope``, ``rms_norm``, ``swiglu``,
    ``fused_linear_cross_entropy``, ``flash_attention``, ...) may be passed along; the others go to transformers.

    ``AutoLigerKernelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype=torch.bfloat16)``
    """


class AutoLigerKernelForImageTextToText(_PatchFirst, AutoModelForImageTextToText):
    """The same for ``AutoModelForImageTextToText`` (Qwen2/2.5/3-VL, Gemma 3/4, Mllama, GLM-4.1V, LLaVA, PaliGemma,
    InternVL, SmolVLM, Mistral 3): a wrapper's language model and vision tower rows are applied too.

    ``AutoLigerKernelForImageTextToText.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct", dtype=torch.bfloat16)``
    """
