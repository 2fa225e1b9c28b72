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
    """An MLP class, computed by the fused swiglu/geglu op (relu_squared for "plain"). ``kind``: "gated"
    (gate_proj, up_proj, down_proj), "fused_gate_up" (gate_up_proj whose halves are gate and up), "experts"
    (transformers 5's 3-D expert weights, gate_up_proj [E, 2I, H]), "llama4_experts" (gate_up_proj [E, H, 2I]),
    "plain" (down_proj(act(up_proj(x))), Nemotron), "multiplied" (Falcon-H1: the gated MLP with the gate projection
    and the output scaled by mlp_multipliers)."""
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
    activation: str = "swiglu"             # the name of the MLP flag: "swiglu", "geglu" or "relu_squared"
    mlp_default: bool = True               # that flag's default (False where Liger-Kernel's is)
    layer_norms: Tuple[str, ...] = ()      # names bound to torch.nn.LayerNorm in the module (vision towers), or
    #                                        TORCH_LAYER_NORM: every plain torch.nn.LayerNorm of a model (model= only)
    softcap_attr: Optional[str] = None     # config attribute of the final logit soft-cap (Gemma 2/3)
    logits_scaling_attr: Optional[str] = None  # config attribute dividing the logits (Granite)
    logits_multiplier_attr: Optional[str] = None  # config attribute multiplying the logits (Falcon-H1)
    # A multimodal wrapper (LLaVA, PaliGemma, ...): its language model and vision tower are other rows' families,
    # chosen by config.text_config / vision_config .model_type; they are patched with model= (the classes of the
    # wrapper's own module otherwise), and the wrapper's function takes their flags as **kwargs.
    wraps: bool = False
    notes: str = field(default="", compare=False)


_ROPE = ("apply_rotary_pos_emb", "rotary_pos_emb")
# Vision towers built from torch.nn.LayerNorm itself (SigLIP, Mllama's, InternVL's, SmolVLM's): their modules are
# patched on a model (model=); patching the class would mean patching torch.nn.LayerNorm for the whole process.
TORCH_LAYER_NORM = "torch.nn.LayerNorm"
_VISION_LN = (TORCH_LAYER_NORM,)
_GEMMA_NORM = dict(offset=1.0, casting_mode="gemma", eps_attr="eps")  # (1 + weight), all in fp32, rounded once


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
    Family("qwen2_vl", ("qwen2_vl", "qwen2_vl_text"), _m("qwen2_vl"), Norm(("Qwen2VLRMSNorm",)), (Mlp("Qwen2MLP"),),
           ("Qwen2VLForConditionalGeneration",), _ROPE, layer_norms=("LayerNorm",)),
    Family("qwen2_5_vl", ("qwen2_5_vl", "qwen2_5_vl_text"), _m("qwen2_5_vl"), Norm(("Qwen2_5_VLRMSNorm",)),
           (Mlp("Qwen2MLP"), Mlp("Qwen2_5_VLMLP")), ("Qwen2_5_VLForConditionalGeneration",), _ROPE),
    # Llama 4 text: complex RoPE on [B, S, H, D]; the weight-free L2 qk-norm is an RMSNorm without weight.
    Family("llama4", ("llama4_text", "llama4"), _m("llama4"),
           Norm(("Llama4TextRMSNorm", "Llama4TextL2Norm"), eps_attr="eps"),
           (Mlp("Llama4TextMLP", "gated", "activation_fn"), Mlp("Llama4TextExperts", "llama4_experts")),
           ("Llama4ForCausalLM",), ("apply_rotary_emb", "llama4_rotary_emb"),
           notes="text model; Llama4ForConditionalGeneration gets the layer patches but keeps its own loss"),

    # ---- beyond issue 7's list: the rest of Liger-Kernel 0.8.5's table (but muse_glimmer), as transformers 5 has it
    Family("ministral", ("ministral",), _m("ministral"), Norm(("MinistralRMSNorm",)), (Mlp("MinistralMLP"),),
           ("MinistralForCausalLM",), _ROPE),
    # OLMo 3: OLMo 2's layer (norms after attention and MLP, "gemma" rounding without offset), sliding windows.
    Family("olmo3", ("olmo3",), _m("olmo3"), Norm(("Olmo3RMSNorm",), 0.0, "gemma"), (Mlp("Olmo3MLP"),),
           ("Olmo3ForCausalLM",), _ROPE),
    Family("exaone4", ("exaone4",), _m("exaone4"), Norm(("Exaone4RMSNorm",)), (Mlp("Exaone4MLP"),),
           ("Exaone4ForCausalLM",), _ROPE, notes="its q/k norms are Exaone4RMSNorm too"),
    Family("hunyuan_v1_dense", ("hunyuan_v1_dense",), _m("hunyuan_v1_dense"), Norm(("HunYuanDenseV1RMSNorm",)),
           (Mlp("HunYuanDenseV1MLP"),), ("HunYuanDenseV1ForCausalLM",), _ROPE),
    Family("hunyuan_v1_moe", ("hunyuan_v1_moe",), _m("hunyuan_v1_moe"), Norm(("HunYuanMoEV1RMSNorm",)),
           (Mlp("HunYuanMoEV1MLP"), Mlp("HunYuanMoEV1Experts", "experts")), ("HunYuanMoEV1ForCausalLM",), _ROPE),
    # DeepSeek V2/V3: MLA attention; its RoPE (complex for V2, de-interleaved for V3) stays Hugging Face's, as in
    # Liger-Kernel (rope=False); the first_k_dense_replace layers use the dense MLP, the others experts + a
    # shared MLP.
    Family("deepseek_v2", ("deepseek_v2",), _m("deepseek_v2"), Norm(("DeepseekV2RMSNorm",)),
           (Mlp("DeepseekV2MLP"), Mlp("DeepseekV2Experts", "experts")), ("DeepseekV2ForCausalLM",),
           rope_default=False),
    Family("deepseek_v3", ("deepseek_v3",), _m("deepseek_v3"), Norm(("DeepseekV3RMSNorm",)),
           (Mlp("DeepseekV3MLP"), Mlp("DeepseekV3Experts", "experts")), ("DeepseekV3ForCausalLM",),
           rope_default=False),
    # DeepSeek-V4: its weighted RMSNorms and the loss; the unweighted norms (rstd rounded before the product), the
    # interleaved partial RoPE and the clamped SwiGLU experts stay Hugging Face's, as in Liger-Kernel.
    Family("deepseek_v4", ("deepseek_v4",), _m("deepseek_v4"), Norm(("DeepseekV4RMSNorm",)), (),
           ("DeepseekV4ForCausalLM",), rope_default=False, mlp_default=False,
           notes="router aux loss added to the fused loss as HF does"),
    # GPT-OSS: (weight * x_normed) in fp32 then rounded; cos/sin of half the head dimension; its experts' clamped
    # SwiGLU with biases has no fused op (swiglu=False, as in Liger-Kernel; True warns and changes nothing).
    Family("gpt_oss", ("gpt_oss",), _m("gpt_oss"), Norm(("GptOssRMSNorm",), 0.0, "gemma"), (),
           ("GptOssForCausalLM",), ("apply_rotary_pos_emb", "half_cos_rotary_pos_emb"), mlp_default=False,
           notes="router aux loss added to the fused loss as HF does"),
    # Qwen3-Next / Qwen 3.5: hybrid Gated DeltaNet + attention layers; (1 + weight) norms (the gated norm of the
    # linear attention stays Hugging Face's); partial rotary. RoPE off by default, as in Liger-Kernel.
    Family("qwen3_next", ("qwen3_next",), _m("qwen3_next"), Norm(("Qwen3NextRMSNorm",), **_GEMMA_NORM),
           (Mlp("Qwen3NextMLP"), Mlp("Qwen3NextExperts", "experts")), ("Qwen3NextForCausalLM",), _ROPE,
           rope_default=False),
    Family("qwen3_5", ("qwen3_5", "qwen3_5_text"), _m("qwen3_5"), Norm(("Qwen3_5RMSNorm",), **_GEMMA_NORM),
           (Mlp("Qwen3_5MLP"),), ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"), _ROPE,
           rope_default=False),
    Family("qwen3_5_moe", ("qwen3_5_moe", "qwen3_5_moe_text"), _m("qwen3_5_moe"),
           Norm(("Qwen3_5MoeRMSNorm",), **_GEMMA_NORM), (Mlp("Qwen3_5MoeMLP"), Mlp("Qwen3_5MoeExperts", "experts")),
           ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration"), _ROPE, rope_default=False),
    # Qwen3-VL: the interleaved multimodal sections are folded into cos/sin; swiglu off by default for the dense
    # model, as in Liger-Kernel.
    Family("qwen3_vl", ("qwen3_vl", "qwen3_vl_text"), _m("qwen3_vl"), Norm(("Qwen3VLTextRMSNorm",)),
           (Mlp("Qwen3VLTextMLP"),), ("Qwen3VLForConditionalGeneration",), _ROPE, mlp_default=False),
    Family("qwen3_vl_moe", ("qwen3_vl_moe", "qwen3_vl_moe_text"), _m("qwen3_vl_moe"),
           Norm(("Qwen3VLMoeTextRMSNorm",)), (Mlp("Qwen3VLMoeTextMLP"), Mlp("Qwen3VLMoeTextExperts", "experts")),
           ("Qwen3VLMoeForConditionalGeneration",), _ROPE),
    # Gemma 3 with its SigLIP vision tower: the text layers as gemma3_text, the tower's LayerNorms with model=. Its
    # ForConditionalGeneration applies no final logit soft-cap (Gemma3ForCausalLM does), so the fused loss has none.
    Family("gemma3", ("gemma3",), _m("gemma3"), Norm(("Gemma3RMSNorm",), **_GEMMA_NORM), (Mlp("Gemma3MLP"),),
           ("Gemma3ForConditionalGeneration",), _ROPE, activation="geglu", layer_norms=_VISION_LN),
    # Gemma 4: (weight * x_normed) in fp32, rounded once (some norms have no weight); GeGLU MLPs and experts; its
    # one-tensor RoPE stays Hugging Face's (rope=False, as in Liger-Kernel); both LM forwards soft-cap the logits.
    Family("gemma4_text", ("gemma4_text",), _m("gemma4"), Norm(("Gemma4RMSNorm",), 0.0, "gemma", "eps"),
           (Mlp("Gemma4TextMLP"), Mlp("Gemma4TextExperts", "experts")), ("Gemma4ForCausalLM",), rope_default=False,
           activation="geglu", softcap_attr="final_logit_softcapping"),
    Family("gemma4", ("gemma4",), _m("gemma4"), Norm(("Gemma4RMSNorm",), 0.0, "gemma", "eps"),
           (Mlp("Gemma4TextMLP"), Mlp("Gemma4TextExperts", "experts")), ("Gemma4ForConditionalGeneration",),
           rope_default=False, activation="geglu", softcap_attr="final_logit_softcapping"),
    # Mllama (Llama 3.2 Vision): the text decoder (its cross-attention layers included); the vision tower's
    # LayerNorms with model=.
    Family("mllama", ("mllama", "mllama_text_model"), _m("mllama"), Norm(("MllamaTextRMSNorm",)),
           (Mlp("MllamaTextMLP"),), ("MllamaForCausalLM", "MllamaForConditionalGeneration"), _ROPE,
           layer_norms=_VISION_LN),
    # GLM-4.1V: GLM's interleaved multimodal RoPE stays Hugging Face's (rope=False, as in Liger-Kernel); one
    # RMSNorm class for the text decoder and the vision tower.
    Family("glm4v", ("glm4v", "glm4v_text"), _m("glm4v"), Norm(("Glm4vRMSNorm",)),
           (Mlp("Glm4vTextMLP", "fused_gate_up", "activation_fn"),), ("Glm4vForConditionalGeneration",),
           rope_default=False),
    Family("glm4v_moe", ("glm4v_moe", "glm4v_moe_text"), _m("glm4v_moe"),
           Norm(("Glm4vMoeTextRMSNorm", "Glm4vMoeRMSNorm")),
           (Mlp("Glm4vMoeTextMLP"), Mlp("Glm4vMoeTextExperts", "experts")), ("Glm4vMoeForConditionalGeneration",),
           _ROPE, rope_default=False),
    # Pixtral: the vision encoder of Pixtral-12B and Mistral 3 (2-D RoPE folded into cos/sin); no LM head.
    Family("pixtral", ("pixtral",), _m("pixtral"), Norm(("PixtralRMSNorm",)), (Mlp("PixtralMLP"),), (), _ROPE),
    # Falcon-H1: hybrid Mamba-2 + attention; its MLP scales the gate projection and the output by the config's
    # mlp_multipliers (the gated norm of the Mamba mixer stays Hugging Face's).
    Family("falcon_h1", ("falcon_h1",), _m("falcon_h1"), Norm(("FalconH1RMSNorm",)),
           (Mlp("FalconH1MLP", "multiplied"),), ("FalconH1ForCausalLM",), _ROPE,
           logits_multiplier_attr="lm_head_multiplier"),
    # Multimodal wrappers.
    Family("llava", ("llava",), _m("llava"), None, (), ("LlavaForConditionalGeneration",), wraps=True),
    Family("paligemma", ("paligemma",), _m("paligemma"), None, (), ("PaliGemmaForConditionalGeneration",),
           layer_norms=_VISION_LN, wraps=True),
    Family("internvl", ("internvl",), _m("internvl"), None, (), ("InternVLForConditionalGeneration",),
           layer_norms=_VISION_LN, wraps=True),
    Family("smolvlm", ("smolvlm",), _m("smolvlm"), None, (), ("SmolVLMForConditionalGeneration",),
           layer_norms=_VISION_LN, wraps=True),
    Family("mistral3", ("mistral3",), _m("mistral3"), None, (), ("Mistral3ForConditionalGeneration",), wraps=True),
    # Nemotron: no RMSNorm (LayerNorm1P stays); the MLP is down_proj(relu(up_proj(x))**2).
    Family("nemotron", ("nemotron",), _m("nemotron"), None, (Mlp("NemotronMLP", "plain"),),
           ("NemotronForCausalLM",), _ROPE, rope_default=False, activation="relu_squared"),
)

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
