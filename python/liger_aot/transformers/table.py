"""The patch table: for each Hugging Face model family (transformers 5.x), what liger_aot swaps.

One row per family; monkey_patch.py turns every row into ``apply_liger_kernel_to_<family>`` and applies it, either
to the classes before a model is built or to a model that exists. Names are those of the family's
``transformers.models.<x>.modeling_<x>`` module.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple


@dataclass(frozen=True)
class Norm:
    """An RMSNorm variant: ``y = x * rsqrt(mean(x**2) + eps) * (offset + weight)``, rounded as ``casting_mode``
    says (see liger_aot.ops.rms_norm), eps read from the attribute ``eps_attr`` of the module."""
    classes: Tuple[str, ...]
    offset: float = 0.0
    casting_mode: str = "llama"
    eps_attr: str = "variance_epsilon"


@dataclass(frozen=True)
class Mlp:
    """A gated MLP class, computed by the fused swiglu/geglu op. ``kind``: "gated" (gate_proj, up_proj,
    down_proj), "fused_gate_up" (gate_up_proj whose halves are gate and up), "experts" (transformers 5's 3-D
    expert weights, gate_up_proj [E, 2I, H]), "llama4_experts" (gate_up_proj [E, H, 2I])."""
    cls: str
    kind: str = "gated"
    act_attr: str = "act_fn"


@dataclass(frozen=True)
class Family:
    name: str                              # apply_liger_kernel_to_<name>
    model_types: Tuple[str, ...]           # config.model_type values it serves
    module: str                            # transformers.models.<x>.modeling_<x>
    norm: Optional[Norm]
    mlps: Tuple[Mlp, ...]
    causal_lms: Tuple[str, ...]            # classes whose forward gets the fused linear cross-entropy
    rope: Optional[Tuple[str, str]] = None  # (function in the module, adapter in forwards.py)
    rope_default: bool = True
    activation: str = "swiglu"             # the name of the MLP flag: "swiglu" or "geglu"
    layer_norms: Tuple[str, ...] = ()      # names bound to torch.nn.LayerNorm in the module (vision towers)
    softcap_attr: Optional[str] = None     # config attribute of the final logit soft-cap (Gemma 2/3)
    logits_scaling_attr: Optional[str] = None  # config attribute dividing the logits (Granite)
    notes: str = field(default="", compare=False)


_ROPE = ("apply_rotary_pos_emb", "rotary_pos_emb")


def _m(x: str) -> str:
    return f"transformers.models.{x}.modeling_{x}"


FAMILIES: Tuple[Family, ...] = (
    Family("llama", ("llama",), _m("llama"), Norm(("LlamaRMSNorm",)), (Mlp("LlamaMLP"),),
           ("LlamaForCausalLM",), _ROPE),
    Family("mistral", ("mistral",), _m("mistral"), Norm(("MistralRMSNorm",)), (Mlp("MistralMLP"),),
           ("MistralForCausalLM",), _ROPE),
    Family("mixtral", ("mixtral",), _m("mixtral"), Norm(("MixtralRMSNorm",)), (Mlp("MixtralExperts", "experts"),),
           ("MixtralForCausalLM",), _ROPE, notes="router aux loss added to the fused loss as HF does"),
    Family("qwen2", ("qwen2",), _m("qwen2"), Norm(("Qwen2RMSNorm",)), (Mlp("Qwen2MLP"),),
           ("Qwen2ForCausalLM",), _ROPE),
    Family("qwen3", ("qwen3",), _m("qwen3"), Norm(("Qwen3RMSNorm",)), (Mlp("Qwen3MLP"),),
           ("Qwen3ForCausalLM",), _ROPE, notes="q_norm/k_norm over head_dim are Qwen3RMSNorm too"),
    Family("qwen3_moe", ("qwen3_moe",), _m("qwen3_moe"), Norm(("Qwen3MoeRMSNorm",)),
           (Mlp("Qwen3MoeMLP"), Mlp("Qwen3MoeExperts", "experts")), ("Qwen3MoeForCausalLM",), _ROPE),
    # Gemma: y = norm(x) * (1 + weight), all in fp32 and rounded once.
    Family("gemma", ("gemma",), _m("gemma"), Norm(("GemmaRMSNorm",), 1.0, "gemma", "eps"), (Mlp("GemmaMLP"),),
           ("GemmaForCausalLM",), _ROPE, activation="geglu"),
    Family("gemma2", ("gemma2",), _m("gemma2"), Norm(("Gemma2RMSNorm",), 1.0, "gemma", "eps"), (Mlp("Gemma2MLP"),),
           ("Gemma2ForCausalLM",), _ROPE, activation="geglu", softcap_attr="final_logit_softcapping"),
    Family("gemma3_text", ("gemma3_text",), _m("gemma3"), Norm(("Gemma3RMSNorm",), 1.0, "gemma", "eps"),
           (Mlp("Gemma3MLP"),), ("Gemma3ForCausalLM",), _ROPE, activation="geglu",
           softcap_attr="final_logit_softcapping"),
    Family("phi3", ("phi3",), _m("phi3"), Norm(("Phi3RMSNorm",)), (Mlp("Phi3MLP", "fused_gate_up", "activation_fn"),),
           ("Phi3ForCausalLM",), _ROPE, notes="partial rotary (rotary ndims < head_dim) passes the rest through"),
    Family("granite", ("granite",), _m("granite"), Norm(("GraniteRMSNorm",)), (Mlp("GraniteMLP"),),
           ("GraniteForCausalLM",), _ROPE, logits_scaling_attr="logits_scaling",
           notes="embedding/residual/attention multipliers stay in HF code; the head's 1/logits_scaling is folded "
                 "into the fused loss's input"),
    # OLMo 2: (weight * x_normed) in fp32 then rounded: the "gemma" rounding with offset 0; norms follow the
    # attention and the MLP, and q_norm/k_norm span all heads.
    Family("olmo2", ("olmo2",), _m("olmo2"), Norm(("Olmo2RMSNorm",), 0.0, "gemma"), (Mlp("Olmo2MLP"),),
           ("Olmo2ForCausalLM",), _ROPE),
    # GLM-4: interleaved pairs on the first partial_rotary_factor * head_dim columns; Liger-Kernel has no rope for
    # it (rope=False by default, as there), liger_aot runs it on llama4_rope when asked.
    Family("glm4", ("glm4",), _m("glm4"), Norm(("Glm4RMSNorm",)), (Mlp("Glm4MLP", "fused_gate_up", "activation_fn"),),
           ("Glm4ForCausalLM",), ("apply_rotary_pos_emb", "glm4_rotary_pos_emb"), rope_default=False),
    Family("smollm3", ("smollm3",), _m("smollm3"), Norm(("SmolLM3RMSNorm",)), (Mlp("SmolLM3MLP"),),
           ("SmolLM3ForCausalLM",), _ROPE),
    # Qwen2-VL / Qwen2.5-VL: in transformers 5 the multimodal sections are folded into cos/sin by the rotary
    # embedding, so the attention calls the plain apply_rotary_pos_emb. The vision tower of Qwen2-VL uses
    # torch.nn.LayerNorm (layer_norm=True), Qwen2.5-VL's uses its RMSNorm class.
    Family("qwen2_vl", ("qwen2_vl",), _m("qwen2_vl"), Norm(("Qwen2VLRMSNorm",)), (Mlp("Qwen2MLP"),),
           ("Qwen2VLForConditionalGeneration",), _ROPE, layer_norms=("LayerNorm",)),
    Family("qwen2_5_vl", ("qwen2_5_vl",), _m("qwen2_5_vl"), Norm(("Qwen2_5_VLRMSNorm",)),
           (Mlp("Qwen2MLP"), Mlp("Qwen2_5_VLMLP")), ("Qwen2_5_VLForConditionalGeneration",), _ROPE),
    # Llama 4 text: complex RoPE on [B, S, H, D]; the weight-free L2 qk-norm is an RMSNorm without weight.
    Family("llama4", ("llama4_text", "llama4"), _m("llama4"),
           Norm(("Llama4TextRMSNorm", "Llama4TextL2Norm"), eps_attr="eps"),
           (Mlp("Llama4TextMLP", "gated", "activation_fn"), Mlp("Llama4TextExperts", "llama4_experts")),
           ("Llama4ForCausalLM",), ("apply_rotary_emb", "llama4_rotary_emb"),
           notes="text model; Llama4ForConditionalGeneration gets the layer patches but keeps its own loss"),
)

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
