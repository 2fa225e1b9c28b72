"""``AutoLigerKernelForCausalLM``: ``AutoModelForCausalLM`` that patches the family of the checkpoint first."""
import inspect

from transformers import AutoConfig, AutoModelForCausalLM

from .monkey_patch import LIGER_FLASH, MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel


def _split_kwargs(model_type: str, kwargs: dict):
    """(liger kwargs for the family's apply function, the rest for transformers)."""
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    names = set(inspect.signature(fn).parameters) - {"model"} if fn else set()
    liger = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    if liger.get("flash_attention"):
        kwargs.setdefault("attn_implementation", LIGER_FLASH)
    return liger, kwargs


class AutoLigerKernelForCausalLM(AutoModelForCausalLM):
    """``AutoModelForCausalLM`` whose ``from_pretrained``/``from_config`` first apply
    ``apply_liger_kernel_to_<family>`` for the config's ``model_type`` (unknown types load unpatched, with a
    warning). The family function's keyword arguments (``rope``, ``rms_norm``, ``swiglu``,
    ``fused_linear_cross_entropy``, ``flash_attention``, ...) may be passed along; the others go to transformers.

    ``AutoLigerKernelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype=torch.bfloat16)``
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if config is None or isinstance(config, str):
            hub = {k: kwargs[k] for k in ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only")
                   if k in kwargs}
            config = AutoConfig.from_pretrained(config or pretrained_model_name_or_path, **hub)
        liger, kwargs = _split_kwargs(config.model_type, dict(kwargs))
        _apply_liger_kernel(config.model_type, **liger)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config, **kwargs):
        liger, kwargs = _split_kwargs(config.model_type, dict(kwargs))
        _apply_liger_kernel(config.model_type, **liger)
        return super().from_config(config, **kwargs)
