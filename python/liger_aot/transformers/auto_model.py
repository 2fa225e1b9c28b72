"""``AutoLigerKernelForCausalLM`` / ``AutoLigerKernelForImageTextToText``: the Auto classes, patching the checkpoint's
families first."""
import inspect

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from .monkey_patch import (FAMILY_BY_MODEL_TYPE, LIGER_FLASH, MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel,
                           _sub_models)


def _model_types(config) -> list:
    """The config's model_type, then for a multimodal wrapper (LLaVA, PaliGemma, ...) those of its language model
    and vision tower, whose classes are patched too."""
    types = [config.model_type]
    family = FAMILY_BY_MODEL_TYPE.get(config.model_type)
    if family is not None and family.wraps:
        types += [t for _, t in _sub_models(config)]
    return types


def _names(model_type: str) -> set:
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        return set()
    return {k for k, p in inspect.signature(fn).parameters.items()
            if k != "model" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def _patch(config, kwargs: dict) -> dict:
    """Apply the families of ``config`` (classes, before the model is built) with the liger flags among
    ``kwargs``; returns the other kwargs, for transformers."""
    types = _model_types(config)
    names = set().union(*(_names(t) for t in types))
    liger = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if liger.get("flash_attention"):
        kwargs.setdefault("attn_implementation", LIGER_FLASH)
    for i, t in enumerate(types):
        if i and t not in MODEL_TYPE_TO_APPLY_LIGER_FN:
            continue  # a wrapper's sub-model without a row: the wrapper's own patch (the loss) still applies
        sub = {k: v for k, v in liger.items() if k in _names(t)}
        if i:  # the wrapper's forward computes the loss
            sub.update({k: False for k in ("cross_entropy", "fused_linear_cross_entropy") if k in _names(t)})
            sub.pop("flash_attention", None)
        _apply_liger_kernel(t, **sub)
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
