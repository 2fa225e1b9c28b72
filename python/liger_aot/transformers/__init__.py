"""Hugging Face integration: ``apply_liger_kernel_to_<family>(...)``, ``AutoLigerKernelForCausalLM`` and
``_apply_liger_kernel_to_instance(model, ...)``, with Liger-Kernel's names and defaults.

One table (table.py) says what each family swaps: its RMSNorm class (with Gemma's ``1 + weight`` offset and
casting), its MLP (SwiGLU/GeGLU, fused gate/up, MoE experts, Nemotron's ReLU²), its RoPE function, vision LayerNorms, and the
causal-LM forward, which with labels computes the fused linear cross-entropy without materializing logits::

    from liger_aot.transformers import apply_liger_kernel_to_llama
    apply_liger_kernel_to_llama()                 # before building: patches the classes
    model = transformers.AutoModelForCausalLM.from_pretrained(...)
    apply_liger_kernel_to_llama(model=model)      # or: an existing model, in place

Needs transformers >= 5 (imported when this package is).
"""
from .auto_model import AutoLigerKernelForCausalLM, AutoLigerKernelForImageTextToText
from .causal_lm import causal_lm_loss
from .monkey_patch import (APPLY_FUNCTIONS, LIGER_FLASH, MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel,
                           _apply_liger_kernel_to_instance)
from .table import FAMILIES, FAMILY_BY_NAME

# One function per row of the table (Liger-Kernel's names), spelled out so that readers and tools find them.
apply_liger_kernel_to_llama = APPLY_FUNCTIONS["apply_liger_kernel_to_llama"]
apply_liger_kernel_to_mistral = APPLY_FUNCTIONS["apply_liger_kernel_to_mistral"]
apply_liger_kernel_to_mixtral = APPLY_FUNCTIONS["apply_liger_kernel_to_mixtral"]
apply_liger_kernel_to_qwen2 = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen2"]
apply_liger_kernel_to_qwen3 = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3"]
apply_liger_kernel_to_qwen3_moe = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_moe"]
apply_liger_kernel_to_gemma = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma"]
apply_liger_kernel_to_gemma2 = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma2"]
apply_liger_kernel_to_gemma3_text = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma3_text"]
apply_liger_kernel_to_phi3 = APPLY_FUNCTIONS["apply_liger_kernel_to_phi3"]
apply_liger_kernel_to_granite = APPLY_FUNCTIONS["apply_liger_kernel_to_granite"]
apply_liger_kernel_to_olmo2 = APPLY_FUNCTIONS["apply_liger_kernel_to_olmo2"]
apply_liger_kernel_to_glm4 = APPLY_FUNCTIONS["apply_liger_kernel_to_glm4"]
apply_liger_kernel_to_smollm3 = APPLY_FUNCTIONS["apply_liger_kernel_to_smollm3"]
apply_liger_kernel_to_qwen2_vl = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen2_vl"]
apply_liger_kernel_to_qwen2_5_vl = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen2_5_vl"]
apply_liger_kernel_to_llama4 = APPLY_FUNCTIONS["apply_liger_kernel_to_llama4"]
apply_liger_kernel_to_ministral = APPLY_FUNCTIONS["apply_liger_kernel_to_ministral"]
apply_liger_kernel_to_olmo3 = APPLY_FUNCTIONS["apply_liger_kernel_to_olmo3"]
apply_liger_kernel_to_exaone4 = APPLY_FUNCTIONS["apply_liger_kernel_to_exaone4"]
apply_liger_kernel_to_hunyuan_v1_dense = APPLY_FUNCTIONS["apply_liger_kernel_to_hunyuan_v1_dense"]
apply_liger_kernel_to_hunyuan_v1_moe = APPLY_FUNCTIONS["apply_liger_kernel_to_hunyuan_v1_moe"]
apply_liger_kernel_to_deepseek_v2 = APPLY_FUNCTIONS["apply_liger_kernel_to_deepseek_v2"]
apply_liger_kernel_to_deepseek_v3 = APPLY_FUNCTIONS["apply_liger_kernel_to_deepseek_v3"]
apply_liger_kernel_to_deepseek_v4 = APPLY_FUNCTIONS["apply_liger_kernel_to_deepseek_v4"]
apply_liger_kernel_to_gpt_oss = APPLY_FUNCTIONS["apply_liger_kernel_to_gpt_oss"]
apply_liger_kernel_to_qwen3_next = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_next"]
apply_liger_kernel_to_qwen3_5 = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_5"]
apply_liger_kernel_to_qwen3_5_moe = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_5_moe"]
apply_liger_kernel_to_qwen3_vl = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_vl"]
apply_liger_kernel_to_qwen3_vl_moe = APPLY_FUNCTIONS["apply_liger_kernel_to_qwen3_vl_moe"]
apply_liger_kernel_to_gemma3 = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma3"]
apply_liger_kernel_to_nemotron = APPLY_FUNCTIONS["apply_liger_kernel_to_nemotron"]
apply_liger_kernel_to_gemma4_text = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma4_text"]
apply_liger_kernel_to_gemma4 = APPLY_FUNCTIONS["apply_liger_kernel_to_gemma4"]
apply_liger_kernel_to_mllama = APPLY_FUNCTIONS["apply_liger_kernel_to_mllama"]
apply_liger_kernel_to_glm4v = APPLY_FUNCTIONS["apply_liger_kernel_to_glm4v"]
apply_liger_kernel_to_glm4v_moe = APPLY_FUNCTIONS["apply_liger_kernel_to_glm4v_moe"]
apply_liger_kernel_to_pixtral = APPLY_FUNCTIONS["apply_liger_kernel_to_pixtral"]
apply_liger_kernel_to_falcon_h1 = APPLY_FUNCTIONS["apply_liger_kernel_to_falcon_h1"]
apply_liger_kernel_to_llava = APPLY_FUNCTIONS["apply_liger_kernel_to_llava"]
apply_liger_kernel_to_paligemma = APPLY_FUNCTIONS["apply_liger_kernel_to_paligemma"]
apply_liger_kernel_to_internvl = APPLY_FUNCTIONS["apply_liger_kernel_to_internvl"]
apply_liger_kernel_to_smolvlm = APPLY_FUNCTIONS["apply_liger_kernel_to_smolvlm"]
apply_liger_kernel_to_mistral3 = APPLY_FUNCTIONS["apply_liger_kernel_to_mistral3"]

__all__ = sorted(APPLY_FUNCTIONS) + ["AutoLigerKernelForCausalLM", "AutoLigerKernelForImageTextToText", "FAMILIES", "FAMILY_BY_NAME", "LIGER_FLASH",
                                     "MODEL_TYPE_TO_APPLY_LIGER_FN", "_apply_liger_kernel",
                                     "_apply_liger_kernel_to_instance", "causal_lm_loss"]
