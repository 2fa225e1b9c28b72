"""``apply_liger_kernel_to_<family>`` for every row of table.py, and ``_apply_liger_kernel_to_instance``.

Two ways to patch, as in Liger-Kernel:
- ``model=None`` (before building a model): the family's norm/MLP classes are replaced, in the modeling module's
  namespace, by subclasses whose forward runs liger_aot's ops (models built afterwards use them; isinstance checks
  and parameter names are unchanged); the causal-LM class's forward is replaced in place.
- ``model=<instance>``: the forwards of that model's modules are rebound in place; parameters, buffers and hooks
  stay, so state dicts load unchanged and an optimizer built before still holds the right tensors.
RoPE (and ``cross_entropy``) replace a module-level function, which no instance owns: that patch reaches every model
of the family in the process, as in Liger-Kernel.
"""
import importlib
import inspect
import logging
from types import MethodType
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn

from . import forwards
from .causal_lm import make_lce_forward
from .table import FAMILIES, TORCH_LAYER_NORM, Family

logger = logging.getLogger(__name__)

LIGER_FLASH = "liger_flash"

# (owner, attribute, previous value or _MISSING): what _revert_patches undoes, newest last.
_MISSING = object()
_applied: List[Tuple[object, str, object]] = []


def _set(owner, name: str, value) -> None:
    _applied.append((owner, name, vars(owner).get(name, _MISSING)))
    setattr(owner, name, value)


def _revert_patches() -> None:
    """Undo every class-level and module-level patch of this process (instance patches stay: rebuild the model).
    Meant for tests that compare patched and unpatched models in one process."""
    while _applied:
        owner, name, old = _applied.pop()
        if old is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, old)


def _original(module, name: str):
    """The family's own class or function, also when the module attribute was already swapped by us."""
    value = getattr(module, name)
    return getattr(value, "__liger_original__", value)


# ---- norms -------------------------------------------------------------------------------------------------------

def _norm_attrs(family: Family) -> Dict[str, object]:
    n = family.norm
    return {"_liger_offset": n.offset, "_liger_casting_mode": n.casting_mode, "_liger_eps_attr": n.eps_attr}


def _patch_norm_classes(module, family: Family) -> None:
    for name in family.norm.classes:
        cls = _original(module, name)
        sub = type(f"Liger{cls.__name__}", (cls,), {"forward": forwards.rms_norm_forward, "__liger_original__": cls,
                                                     "__module__": cls.__module__, **_norm_attrs(family)})
        _set(module, name, sub)


def _bind(module: nn.Module, name: str, fn: Callable) -> None:
    module.__dict__[name] = MethodType(fn, module)


def _patch_norm_instance(m: nn.Module, family: Family) -> None:
    m.__dict__.update(_norm_attrs(family))
    _bind(m, "forward", forwards.rms_norm_forward)


# ---- LayerNorm (vision towers) -------------------------------------------------------------------------------------

def _patch_layer_norm_classes(module, family: Family) -> None:
    for name in family.layer_norms:
        if name == TORCH_LAYER_NORM:  # only a global patch of torch.nn.LayerNorm could reach these: model= only
            logger.info("liger_aot: layer_norm for %s: its vision LayerNorms are torch.nn.LayerNorm, patched with "
                        "model= only", family.name)
            continue
        cls = _original(module, name)
        _set(module, name, type(f"Liger{cls.__name__}", (cls,), {"forward": forwards.layer_norm_forward,
                                                                  "__liger_original__": cls,
                                                                  "__module__": cls.__module__}))


# ---- MLPs ----------------------------------------------------------------------------------------------------------

_MLP_FORWARD = {"gated": forwards.gated_mlp_forward, "fused_gate_up": forwards.fused_gate_up_mlp_forward,
                "llama4_experts": forwards.llama4_experts_forward, "plain": forwards.plain_mlp_forward,
                "multiplied": forwards.multiplied_mlp_forward}
_WANTED = {"swiglu": ("silu",), "geglu": ("tanh", "none"), "relu_squared": ("relu2",)}


def _mlp_methods(spec, base_forward) -> Dict[str, Callable]:
    if spec.kind == "experts":
        return {"forward": forwards.experts_forward, "_apply_gate": forwards.experts_apply_gate,
                "_liger_dispatch_forward": base_forward}
    return {"forward": _MLP_FORWARD[spec.kind]}


def _mlp_act(m: nn.Module, spec, family: Family):
    kind = forwards.activation_kind(getattr(m, spec.act_attr, None))
    return kind if kind in _WANTED[family.activation] else None


def _patch_mlp_classes(module, family: Family) -> None:
    for spec in family.mlps:
        cls = _original(module, spec.cls)
        methods = _mlp_methods(spec, cls.forward)

        def __init__(self, *args, _cls=cls, _spec=spec, _methods=methods, **kwargs):
            _cls.__init__(self, *args, **kwargs)
            act = _mlp_act(self, _spec, family)
            if act is None:  # an activation no fused op computes: keep Hugging Face's methods for this module
                for k in _methods:
                    if k != "_liger_dispatch_forward":
                        self.__dict__[k] = MethodType(getattr(_cls, k), self)
            self._liger_act = act

        _set(module, spec.cls, type(f"Liger{cls.__name__}", (cls,), {
            "__init__": __init__, "__liger_original__": cls, "__module__": cls.__module__, **methods}))


def _patch_mlp_instance(m: nn.Module, spec, family: Family) -> None:
    act = _mlp_act(m, spec, family)
    if act is None:
        logger.warning("liger_aot: %s keeps its forward: its activation %s has no fused %s op", type(m).__name__,
                       type(getattr(m, spec.act_attr, None)).__name__, family.activation)
        return
    m._liger_act = act
    for k, fn in _mlp_methods(spec, type(m).forward).items():
        _bind(m, k, fn)


# ---- attention --------------------------------------------------------------------------------------------------

def _check_liger_flash() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from .. import attention  # noqa: F401  (importing it registers "liger_flash")

    if LIGER_FLASH not in ALL_ATTENTION_FUNCTIONS:
        raise RuntimeError(
            f"flash_attention=True selects the attention implementation {LIGER_FLASH!r}, which could not be "
            "registered with transformers' AttentionInterface (liger_aot.attention.register() failed). Leave "
            "flash_attention=False to keep the model's attention (SDPA by default)")


def _set_attn_implementation(model, name: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name


# ---- one family ------------------------------------------------------------------------------------------------

def _apply(family: Family, *, rope: bool, cross_entropy: bool, fused_linear_cross_entropy: bool, rms_norm: bool,
           mlp: bool, layer_norm: bool, flash_attention: bool, model) -> None:
    if cross_entropy and fused_linear_cross_entropy:
        raise ValueError("cross_entropy and fused_linear_cross_entropy cannot both be True")
    if flash_attention:
        _check_liger_flash()
    module = importlib.import_module(family.module)

    if rope and family.rope is not None:
        fn_name, adapter = family.rope
        if not hasattr(getattr(module, fn_name), "__liger_original__"):
            _set(module, fn_name, _with_original(getattr(forwards, adapter), getattr(module, fn_name)))
    if cross_entropy:
        from transformers.loss import loss_utils

        if getattr(loss_utils.fixed_cross_entropy, "__liger_original__", None) is None:
            _set(loss_utils, "fixed_cross_entropy",
                 _with_original(forwards.fixed_cross_entropy, loss_utils.fixed_cross_entropy))

    if mlp and not family.mlps:
        logger.warning("liger_aot: %s=True for %s: no fused op computes its MLP, which keeps Hugging Face's forward",
                       family.activation, family.name)
    if model is None:
        if rms_norm and family.norm is not None:
            _patch_norm_classes(module, family)
        if mlp:
            _patch_mlp_classes(module, family)
        if layer_norm:
            _patch_layer_norm_classes(module, family)
        if fused_linear_cross_entropy:
            for name in family.causal_lms:
                cls = getattr(module, name)
                original = getattr(cls.forward, "__liger_original__", cls.forward)
                _set(cls, "forward", make_lce_forward(original, family))
        if flash_attention:
            logger.warning("liger_aot: flash_attention=True without model=: build the model with "
                           "attn_implementation=%r (AutoLigerKernelForCausalLM does)", LIGER_FLASH)
        return

    norm_classes = tuple(_original(module, n) for n in family.norm.classes) if family.norm else ()
    mlp_classes = {_original(module, s.cls): s for s in family.mlps}
    ln_classes = tuple(_original(module, n) for n in family.layer_norms if n != TORCH_LAYER_NORM)
    any_ln = TORCH_LAYER_NORM in family.layer_norms  # every plain torch.nn.LayerNorm (not its subclasses)
    for m in model.modules():
        if rms_norm and isinstance(m, norm_classes):
            _patch_norm_instance(m, family)
        elif mlp and isinstance(m, tuple(mlp_classes)):
            _patch_mlp_instance(m, next(s for c, s in mlp_classes.items() if isinstance(m, c)), family)
        elif layer_norm and ((ln_classes and isinstance(m, ln_classes)) or (any_ln and type(m) is nn.LayerNorm)):
            _bind(m, "forward", forwards.layer_norm_forward)
    if fused_linear_cross_entropy:
        lce_classes = tuple(getattr(module, n) for n in family.causal_lms)
        if isinstance(model, lce_classes):
            original = getattr(type(model).forward, "__liger_original__", type(model).forward)
            model.__dict__["forward"] = MethodType(make_lce_forward(original, family), model)
        else:
            logger.warning("liger_aot: %s is not one of %s: fused_linear_cross_entropy not applied",
                           type(model).__name__, ", ".join(family.causal_lms))
    if flash_attention:
        _set_attn_implementation(model, LIGER_FLASH)


def _with_original(fn: Callable, original: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__liger_original__ = fn.__name__, fn.__doc__, original
    return wrapper


# ---- the public functions, one per row -------------------------------------------------------------------------

_P = inspect.Parameter


def _signature(family: Family) -> inspect.Signature:
    """Liger-Kernel's parameters for the row: the flags of what the family has, ``model``; a wrapper's
    ``**kwargs`` reach its language model's and vision tower's functions."""
    lm = bool(family.causal_lms)
    params = [] if family.wraps else [_P("rope", _P.KEYWORD_ONLY, default=family.rope_default)]
    if lm:
        params += [_P("cross_entropy", _P.KEYWORD_ONLY, default=False),
                   _P("fused_linear_cross_entropy", _P.KEYWORD_ONLY, default=True)]
    if family.norm is not None:
        params.append(_P("rms_norm", _P.KEYWORD_ONLY, default=True))
    if not family.wraps:
        params.append(_P(family.activation, _P.KEYWORD_ONLY, default=family.mlp_default))
    if family.layer_norms:
        params.append(_P("layer_norm", _P.KEYWORD_ONLY, default=True))
    if lm:
        params.append(_P("flash_attention", _P.KEYWORD_ONLY, default=False))
    params = [p.replace(kind=_P.POSITIONAL_OR_KEYWORD) for p in params + [_P("model", _P.KEYWORD_ONLY, default=None)]]
    if family.wraps:
        params.append(_P("kwargs", _P.VAR_KEYWORD))
    return inspect.Signature(params)


def _sub_models(config) -> List[Tuple[str, str]]:
    """(config attribute, model_type) of a wrapper's language model and vision tower."""
    out = []
    for attr in ("text_config", "vision_config"):
        model_type = getattr(getattr(config, attr, None), "model_type", None)
        if model_type is not None:
            out.append((attr, model_type))
    return out


def _sub_model_patches(config, kwargs: dict) -> List[Tuple[str, str, Optional[Callable], dict]]:
    """A wrapper's language model and vision tower: (config attribute, model_type, the row's apply function or
    None, the flags among ``kwargs`` it takes). Their loss flags are off and flash_attention left out: the
    wrapper's forward computes the loss and sets the attention."""
    out = []
    for attr, model_type in _sub_models(config):
        fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
        names = inspect.signature(fn).parameters if fn is not None else {}
        sub = {k: v for k, v in kwargs.items() if k in names and k != "flash_attention"}
        sub.update({k: False for k in ("cross_entropy", "fused_linear_cross_entropy") if k in names})
        out.append((attr, model_type, fn, sub))
    return out


def _apply_to_sub_models(family: Family, model, kwargs: dict) -> None:
    """A wrapper's instance: the rows of its language model and vision tower patch their modules in it (found by
    class, wherever they sit)."""
    used = set()
    for attr, model_type, fn, sub in _sub_model_patches(model.config, kwargs):
        if fn is None:
            if attr == "text_config":
                logger.warning("liger_aot: %s's language model (model_type %r) has no patch: only the loss is fused",
                               family.name, model_type)
            continue
        used |= set(sub)
        fn(**sub, model=model)
    if set(kwargs) - used:
        logger.warning("liger_aot: apply_liger_kernel_to_%s: %s taken by neither its language model nor its vision "
                       "tower", family.name, sorted(set(kwargs) - used))


def _make_apply(family: Family) -> Callable:
    signature = _signature(family)

    def apply(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        if family.rope is None and a.get("rope"):
            logger.warning("liger_aot: rope=True for %s: its RoPE has no liger_aot op and stays Hugging Face's",
                           family.name)
        _apply(family, rope=a.get("rope", False), cross_entropy=a.get("cross_entropy", False),
               fused_linear_cross_entropy=a.get("fused_linear_cross_entropy", False),
               rms_norm=a.get("rms_norm", False), mlp=a.get(family.activation, False),
               layer_norm=a.get("layer_norm", False), flash_attention=a.get("flash_attention", False),
               model=a["model"])
        if family.wraps and a["model"] is not None:
            _apply_to_sub_models(family, a["model"], a.get("kwargs", {}))
        elif family.wraps and a.get("kwargs"):
            logger.info("liger_aot: apply_liger_kernel_to_%s without model=: %s not applied (the language model's "
                        "family is known from a model's config; AutoLigerKernelForCausalLM patches it)",
                        family.name, sorted(a["kwargs"]))

    apply.__name__ = apply.__qualname__ = f"apply_liger_kernel_to_{family.name}"
    apply.__signature__ = signature
    if family.wraps:
        apply.__doc__ = (
            f"Patch a {family.name} model (table.py's row {family.name!r}): fused_linear_cross_entropy replaces the "
            "forward of " + ", ".join(family.causal_lms) + " (the loss without logits when training with labels); "
            "with model=, the language model's and the vision tower's families (from the config's text_config and "
            "vision_config) patch their modules, taking the flags in **kwargs (rope, rms_norm, swiglu, ...); "
            f"flash_attention: attention implementation {LIGER_FLASH!r}.\n")
        return apply
    lm = bool(family.causal_lms)
    apply.__doc__ = (
        f"Swap Hugging Face's {family.name} modules for liger_aot's (table.py's row {family.name!r}).\n\n"
        f"rope: RoPE ({family.rope[0] if family.rope else 'none'}); "
        + ("cross_entropy: liger cross-entropy in HF's loss; fused_linear_cross_entropy: the causal-LM forward "
           "computes the loss without logits when training with labels (not with cross_entropy); " if lm else "")
        + (f"rms_norm: {', '.join(family.norm.classes)}; " if family.norm else "")
        + f"{family.activation}: {', '.join(s.cls for s in family.mlps) or 'none (no fused op for this MLP)'}"
        + ("; layer_norm: the vision tower's LayerNorm" if family.layer_norms else "")
        + (f"; flash_attention: attention implementation {LIGER_FLASH!r}" if lm else "")
        + "; model: patch this instance in place instead of the classes.\n"
        + (f"\nNote: {family.notes}.\n" if family.notes else ""))
    return apply


APPLY_FUNCTIONS: Dict[str, Callable] = {f"apply_liger_kernel_to_{f.name}": _make_apply(f) for f in FAMILIES}
MODEL_TYPE_TO_APPLY_LIGER_FN: Dict[str, Callable] = {
    t: APPLY_FUNCTIONS[f"apply_liger_kernel_to_{f.name}"] for f in FAMILIES for t in f.model_types}
FAMILY_BY_MODEL_TYPE: Dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def _filter_kwargs(fn: Callable, kwargs: dict) -> dict:
    params = inspect.signature(fn).parameters
    if any(p.kind is _P.VAR_KEYWORD for p in params.values()):  # a wrapper: it passes the rest on
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _apply_liger_kernel(model_type: str, **kwargs) -> None:
    """Patch the classes of ``model_type``'s family (before a model is built); unknown types are left alone."""
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        logger.warning("liger_aot: no patch for model_type %r; supported: %s", model_type,
                       ", ".join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN)))
        return
    fn(**_filter_kwargs(fn, {k: v for k, v in kwargs.items() if k != "model"}))


def _apply_liger_kernel_to_instance(model, **kwargs) -> None:
    """Patch an existing model in place, choosing the family by ``model.config.model_type`` (Liger-Kernel's entry
    point for trainers); keyword arguments that the family's function does not take are ignored."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        logger.warning("liger_aot: no patch for model_type %r; supported: %s", model_type,
                       ", ".join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN)))
        return
    fn(**_filter_kwargs(fn, kwargs), model=model)
