"""Tests of liger_aot.transformers: every family of the patch table, patched vs unpatched Hugging Face models.

CPU (CI): a tiny random model per family (2 layers, hidden 64, vocabulary 128, built from a config here, nothing
downloaded), in fp32, patched through the classes (before building) and through an existing instance. Logits
without labels, and the loss and every parameter's gradient with labels and left padding, must match the
unpatched model. Tolerance: the same model in float64 is the reference; the patched model's error against it may
be at most twice the unpatched fp32 model's own error, plus 16 fp32 ulps of the reference's largest magnitude
(the ops round differently from eager, in the same precision).
GPU (`gpu` marker): per family group, bf16 training of a few-layer model for 30 AdamW steps, patched vs unpatched
loss curves.
"""
import contextlib
import copy
import inspect

import pytest
import torch

transformers = pytest.importorskip("transformers")

import liger_aot.transformers as lt  # noqa: E402
from liger_aot.transformers import monkey_patch  # noqa: E402

gpu = pytest.mark.gpu
V, H, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTER = 128, 64, 2, 4, 2, 16, 128
EPS32 = 2.0**-23


def _common(**kw):
    base = dict(vocab_size=V, hidden_size=H, intermediate_size=INTER, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return base


def _config(name):
    c = transformers
    if name == "llama":
        return c.LlamaConfig(**_common())
    if name == "mistral":
        return c.MistralConfig(**_common(sliding_window=None))
    if name == "mixtral":
        return c.MixtralConfig(**_common(num_local_experts=4, num_experts_per_tok=2, output_router_logits=True,
                                         router_aux_loss_coef=0.1))
    if name == "qwen2":
        return c.Qwen2Config(**_common())
    if name == "qwen3":
        return c.Qwen3Config(**_common(head_dim=HEAD_DIM))
    if name == "qwen3_moe":
        return c.Qwen3MoeConfig(**_common(head_dim=HEAD_DIM, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[1],
                                          output_router_logits=True, router_aux_loss_coef=0.1))
    if name == "gemma":
        return c.GemmaConfig(**_common(head_dim=HEAD_DIM, hidden_act="gelu_pytorch_tanh"))
    if name == "gemma2":
        return c.Gemma2Config(**_common(head_dim=HEAD_DIM, final_logit_softcapping=3.0, attn_logit_softcapping=50.0,
                                        sliding_window=4, query_pre_attn_scalar=HEAD_DIM))
    if name == "gemma3_text":
        return c.Gemma3TextConfig(**_common(head_dim=HEAD_DIM, final_logit_softcapping=3.0, sliding_window=4,
                                            query_pre_attn_scalar=HEAD_DIM, layer_types=["sliding_attention",
                                                                                         "full_attention"]))
    if name == "phi3":
        return c.Phi3Config(**_common(partial_rotary_factor=0.5, pad_token_id=0))
    if name == "granite":
        return c.GraniteConfig(**_common(embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.2,
                                         logits_scaling=4.0))
    if name == "olmo2":
        return c.Olmo2Config(**_common())
    if name == "glm4":
        return c.Glm4Config(**_common(head_dim=HEAD_DIM, partial_rotary_factor=0.5))
    if name == "smollm3":
        return c.SmolLM3Config(**_common(no_rope_layers=[1, 0], use_sliding_window=False))
    if name in ("qwen2_vl", "qwen2_5_vl"):
        text = _common(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=H,
                      patch_size=2, temporal_patch_size=1, spatial_merge_size=1, in_channels=3)
        cls = c.Qwen2VLConfig if name == "qwen2_vl" else c.Qwen2_5_VLConfig
        return cls(text_config=text, vision_config=vision, image_token_id=V - 1, video_token_id=V - 2,
                   vision_start_token_id=V - 3, tie_word_embeddings=False)
    if name == "llama4":
        return c.Llama4TextConfig(**_common(head_dim=HEAD_DIM, intermediate_size_mlp=INTER, num_local_experts=2,
                                            num_experts_per_tok=1, interleave_moe_layer_step=2, use_qk_norm=True,
                                            no_rope_layers=[1, 1], attention_chunk_size=256, rope_scaling=None))
    if name == "ministral":
        return c.MinistralConfig(**_common(head_dim=HEAD_DIM, sliding_window=4, layer_types=["sliding_attention", "full_attention"]))
    if name == "olmo3":
        return c.Olmo3Config(**_common(sliding_window=4, layer_types=["sliding_attention", "full_attention"]))
    if name == "exaone4":
        return c.Exaone4Config(**_common(sliding_window=4, layer_types=["sliding_attention", "full_attention"]))
    if name == "hunyuan_v1_dense":
        return c.HunYuanDenseV1Config(**_common(head_dim=HEAD_DIM))
    if name == "hunyuan_v1_moe":
        return c.HunYuanMoEV1Config(**_common(head_dim=HEAD_DIM, num_experts=4, moe_topk=2))
    if name in ("deepseek_v2", "deepseek_v3"):
        cls = c.DeepseekV2Config if name == "deepseek_v2" else c.DeepseekV3Config
        return cls(**_common(num_key_value_heads=HEADS, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16,
                             n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                             first_k_dense_replace=1, n_group=1, topk_group=1))
    if name == "deepseek_v4":
        layers = transformers.DeepseekV4Config()
        return c.DeepseekV4Config(**_common(moe_intermediate_size=32, num_key_value_heads=1, head_dim=HEAD_DIM,
                                            q_lora_rank=32, num_experts_per_tok=2, n_routed_experts=4,
                                            n_shared_experts=1, o_groups=2, o_lora_rank=16, index_n_heads=2,
                                            index_head_dim=16, index_topk=4, sliding_window=4,
                                            layer_types=layers.layer_types[2:4], compress_rates=layers.compress_rates,
                                            mlp_layer_types=layers.mlp_layer_types[2:4]))
    if name == "gpt_oss":
        return c.GptOssConfig(**_common(head_dim=HEAD_DIM, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention"], output_router_logits=True,
                                        router_aux_loss_coef=0.1))
    if name in ("qwen3_next", "qwen3_5", "qwen3_5_moe"):
        linear = dict(head_dim=HEAD_DIM, linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                      linear_num_key_heads=2, linear_num_value_heads=4,
                      layer_types=["linear_attention", "full_attention"])
        moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                   shared_expert_intermediate_size=32, output_router_logits=True, router_aux_loss_coef=0.1)
        if name == "qwen3_next":
            return c.Qwen3NextConfig(**_common(**linear, **moe, decoder_sparse_step=1, mlp_only_layers=[1]))
        if name == "qwen3_5":
            return c.Qwen3_5TextConfig(**_common(**linear))
        return c.Qwen3_5MoeTextConfig(**_common(**linear, **moe))
    if name in ("qwen3_vl", "qwen3_vl_moe"):
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
        text = _common(head_dim=HEAD_DIM, rope_parameters=rope)
        vision = dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=H, patch_size=2,
                      temporal_patch_size=1, spatial_merge_size=1, in_channels=3, num_position_embeddings=16,
                      deepstack_visual_indexes=[0])
        if name == "qwen3_vl_moe":
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                        mlp_only_layers=[1])
        cls = c.Qwen3VLConfig if name == "qwen3_vl" else c.Qwen3VLMoeConfig
        return cls(text_config=text, vision_config=vision, image_token_id=V - 1, video_token_id=V - 2,
                   vision_start_token_id=V - 3, tie_word_embeddings=False)
    if name == "gemma3":
        text = _common(head_dim=HEAD_DIM, final_logit_softcapping=3.0, sliding_window=4, query_pre_attn_scalar=HEAD_DIM,
                       layer_types=["sliding_attention", "full_attention"])
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                      patch_size=4)
        return c.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=V - 1,
                              boi_token_index=V - 2, eoi_token_index=V - 3, tie_word_embeddings=False)
    if name == "nemotron":
        return c.NemotronConfig(**_common(hidden_act="relu2", head_dim=HEAD_DIM, partial_rotary_factor=0.5))
    if name in ("gemma4_text", "gemma4"):
        text = _common(head_dim=HEAD_DIM, hidden_activation="gelu_pytorch_tanh", sliding_window=4,
                       layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=3.0,
                       num_kv_shared_layers=0, enable_moe_block=True, num_experts=4, top_k_experts=2,
                       moe_intermediate_size=32)
        if name == "gemma4_text":
            return c.Gemma4TextConfig(**text)
        return c.Gemma4Config(text_config=text, vision_config=None, audio_config=None, tie_word_embeddings=False)
    if name == "mllama":
        text = {k: v for k, v in _common(cross_attention_layers=[1]).items()
                if k not in ("max_position_embeddings", "tie_word_embeddings")}
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_global_layers=1, attention_heads=2,
                      image_size=8, patch_size=4, vision_output_dim=64, intermediate_layers_indices=[0],
                      max_num_tiles=1, supported_aspect_ratios=[[1, 1]])
        return c.MllamaConfig(text_config=text, vision_config=vision, image_token_index=V - 1,
                              tie_word_embeddings=False)
    if name in ("glm4v", "glm4v_moe"):
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2], "partial_rotary_factor": 0.5}
        text = _common(head_dim=HEAD_DIM, rope_parameters=rope)
        vision = dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=H, patch_size=2,
                      temporal_patch_size=1, spatial_merge_size=1, in_channels=3, image_size=8)
        tokens = dict(image_token_id=V - 1, video_token_id=V - 2, image_start_token_id=V - 3, image_end_token_id=V - 4,
                      video_start_token_id=V - 5, video_end_token_id=V - 6, tie_word_embeddings=False)
        if name == "glm4v":
            return c.Glm4vConfig(text_config=text, vision_config=vision, **tokens)
        text.update(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32,
                    first_k_dense_replace=1, n_group=1, topk_group=1)
        return c.Glm4vMoeConfig(text_config=text, vision_config=vision, **tokens)
    if name == "falcon_h1":
        return c.FalconH1Config(**_common(head_dim=HEAD_DIM, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16,
                                          mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=1,
                                          mamba_chunk_size=8, mlp_multipliers=[0.7, 1.3], lm_head_multiplier=0.5))
    # multimodal wrappers: a small vision tower, the language model of another row
    if name == "llava":
        return c.LlavaConfig(text_config=dict(_common(), model_type="llama"),
                             vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4),
                             image_token_index=V - 1, tie_word_embeddings=False)
    if name == "paligemma":
        text = dict(_common(head_dim=HEAD_DIM, hidden_act="gelu_pytorch_tanh"), model_type="gemma")
        vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, image_size=8, patch_size=4, projection_dim=H)
        return c.PaliGemmaConfig(text_config=text, vision_config=vision, image_token_index=V - 1, projection_dim=H,
                                 tie_word_embeddings=False)
    if name == "internvl":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=[8, 8], patch_size=[4, 4])
        return c.InternVLConfig(text_config=dict(_common(), model_type="qwen2"), vision_config=vision,
                                image_token_id=V - 1, tie_word_embeddings=False)
    if name == "smolvlm":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                      patch_size=4)
        return c.SmolVLMConfig(text_config=dict(_common(), model_type="llama"), vision_config=vision,
                               image_token_id=V - 1, scale_factor=1, tie_word_embeddings=False)
    if name == "mistral3":
        vision = dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, image_size=8, patch_size=4, head_dim=16, hidden_act="silu")
        return c.Mistral3Config(text_config=dict(_common(head_dim=HEAD_DIM), model_type="mistral"),
                                vision_config=vision, image_token_index=V - 1, spatial_merge_size=1,
                                tie_word_embeddings=False)
    raise KeyError(name)


FAMILY_NAMES = [f.name for f in lt.FAMILIES if f.causal_lms]  # pixtral, a vision encoder: its own test


def _model_class(config):
    if config.model_type in transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and \
            config.model_type not in ("gemma3", "mllama"):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForImageTextToText


def _attention(name):
    return "eager" if name in ("gpt_oss", "deepseek_v4") else "sdpa"  # attention sinks: no SDPA path in HF


def _build(name, seed=0):
    config = _config(name)
    config._attn_implementation = _attention(name)
    torch.manual_seed(seed)
    model = _model_class(config).from_config(config, attn_implementation=_attention(name))
    with torch.no_grad():  # random norm weights, so that a wrong offset or a dropped weight shows
        for n, p in model.named_parameters():
            if "norm" in n and p.dim() == 1:
                p.normal_(0.0 if "gemma" in name else 1.0, 0.3)
    return model.float()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V - 4, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    labels = ids.clone()
    labels[mask == 0] = -100
    return ids, mask, labels


def _run(model, labels, **kw):
    """(logits or None, loss or None, {parameter name: gradient})."""
    dev = next(model.parameters()).device
    ids, mask, lab = (t.to(dev) for t in _inputs())
    model.zero_grad(set_to_none=True)
    if labels:
        model.train()
        out = model(input_ids=ids, attention_mask=mask, labels=lab, **kw)
        out.loss.backward()
        grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
        return None if out.logits is None else out.logits.cpu(), out.loss.detach().cpu(), grads
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, **kw)
    return out.logits.cpu(), None, {}


_REFS = {}


def _references(name, labels):
    """(fp32 unpatched run, float64 unpatched run, state dict) of the family, computed once per process."""
    key = (name, labels)
    if key not in _REFS:
        monkey_patch._revert_patches()
        model = _build(name)
        state = copy.deepcopy(model.state_dict())
        r32 = _run(model, labels)
        m64 = copy.deepcopy(model).double()
        if getattr(m64.config, "_experts_implementation", None) == "grouped_mm":
            m64.config._experts_implementation = "eager"  # torch._grouped_mm has no float64
        r64 = _run(m64, labels)
        _REFS[key] = (r32, r64, state)
    return _REFS[key]


# Families whose float64 reference is fp32 in places (DeepSeek-V4's hyper-connections call .float(), which narrows
# a float64 model): there the unpatched fp32 run sits on the same fp32 path and its error underestimates the
# rounding; measured, the patched run's is 4.0x it on one tensor (hc_head.hc_base), so the factor is 6.
_ERR_FACTOR = {"deepseek_v4": 6}


def _close(what, got, hf32, ref64, factor=2):
    ref64 = ref64.double()
    err_hf = (hf32.double() - ref64).abs().max().item()
    err = (got.double() - ref64).abs().max().item()
    tol = factor * err_hf + 16 * EPS32 * max(ref64.abs().max().item(), 1e-30)
    assert err <= tol, f"{what}: max error vs float64 {err:.3g} > tolerance {tol:.3g} (unpatched fp32: {err_hf:.3g})"


def _compare(got, hf32, ref64, labels, factor=2):
    logits, loss, grads = got
    if labels:
        assert logits is None, "the fused linear cross-entropy path must not return (or build) logits"
        _close("loss", loss, hf32[1], ref64[1], factor)
        assert set(grads) == set(hf32[2]), f"gradients for {set(grads) ^ set(hf32[2])} differ in presence"
        for n in grads:
            _close(f"grad {n}", grads[n], hf32[2][n], ref64[2][n], factor)
    else:
        _close("logits", logits, hf32[0], ref64[0], factor)


def _apply_kwargs(name):
    """The family's function and what turns on every patch it has (some are off by default, as in Liger-Kernel:
    GLM-4's and Qwen3-Next's RoPE, Qwen3-VL's SwiGLU, ...)."""
    fam = lt.FAMILY_BY_NAME[name]
    kw = {"rope": True} if fam.rope and not fam.rope_default else {}
    if fam.mlps and not fam.mlp_default:
        kw[fam.activation] = True
    return lt.APPLY_FUNCTIONS[f"apply_liger_kernel_to_{name}"], kw


def _patch_classes(name, config=None):
    """Class patches of the row, every flag on; for a wrapper the language model's and vision tower's classes too,
    as AutoLigerKernelForCausalLM does."""
    fn, kw = _apply_kwargs(name)
    if lt.FAMILY_BY_NAME[name].wraps:
        from liger_aot.transformers import auto_model

        assert auto_model._patch(config or _config(name), dict(kw)) == {}
    else:
        fn(**kw)


def _patched(name, how):
    fn, kw = _apply_kwargs(name)
    _, _, state = _references(name, False)
    if how == "class":
        _patch_classes(name)
        model = _build(name, seed=123)
        model.load_state_dict(state)
    else:
        model = _build(name, seed=123)
        model.load_state_dict(state)
        params = list(model.parameters())
        fn(model=model, **kw)
        assert all(a is b for a, b in zip(params, model.parameters())), "instance patching must keep the parameters"
    return model


@pytest.fixture(autouse=True)
def _unpatch():
    yield
    monkey_patch._revert_patches()


@pytest.mark.parametrize("how", ["class", "instance"])
@pytest.mark.parametrize("labels", [False, True], ids=["logits", "loss_grads"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_patched_matches_unpatched(name, labels, how):
    hf32, ref64, _ = _references(name, labels)
    model = _patched(name, how)
    _assert_swapped(model, name, how)
    _compare(_run(model, labels), hf32, ref64, labels, _ERR_FACTOR.get(name, 2))


@gpu
@pytest.mark.parametrize("labels", [False, True], ids=["logits", "loss_grads"])
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_patched_matches_unpatched_gpu(name, labels):
    """The CPU test on the GPU's kernels: the class-patched model on CUDA in fp32 against the float64 reference
    (CPU), within twice the error of the unpatched model's fp32 run on CUDA (plus 16 fp32 ulps of the largest
    value): logits, loss and every gradient."""
    _, ref64, state = _references(name, labels)
    monkey_patch._revert_patches()
    hf = _build(name)
    hf.load_state_dict(state)
    hf32 = _run(hf.cuda(), labels)
    del hf
    model = _patched(name, "class").cuda()
    _assert_swapped(model, name, "class")
    _compare(_run(model, labels), hf32, ref64, labels, _ERR_FACTOR.get(name, 2))


def _assert_swapped(model, name, how):
    """The patch reached every module of the table's classes (a test that passes through HF code tests nothing)."""
    fams = [lt.FAMILY_BY_NAME[name]]
    if fams[0].wraps:  # the rows of its language model (and vision tower)
        fams += [monkey_patch.FAMILY_BY_MODEL_TYPE[t] for _, t in monkey_patch._sub_models(model.config)
                 if t in monkey_patch.FAMILY_BY_MODEL_TYPE]
        assert len(fams) > 1, f"{name}: its language model has no row"
    from liger_aot.transformers import forwards

    n_norm = n_mlp = 0
    norm_classes = {c for f in fams if f.norm for c in f.norm.classes}
    mlp_classes = {s.cls for f in fams for s in f.mlps}
    for m in model.modules():
        fwd = getattr(m.forward, "__func__", None)
        if type(m).__name__.removeprefix("Liger") in norm_classes:
            assert fwd is forwards.rms_norm_forward, f"{type(m).__name__} not patched"
            n_norm += 1
        if type(m).__name__.removeprefix("Liger") in mlp_classes:
            assert m._liger_act is not None and fwd is not None and fwd.__module__ == forwards.__name__
            n_mlp += 1
    import importlib

    for f in fams:  # every RoPE function the rows have is swapped (the tests turn every flag on)
        if f.rope:
            assert hasattr(getattr(importlib.import_module(f.module), f.rope[0]), "__liger_original__"), f.name
    assert n_norm >= (2 * LAYERS + 1 if norm_classes else 0), n_norm
    assert n_mlp >= (LAYERS - (name == "llama4") if mlp_classes else 0), n_mlp


@pytest.mark.parametrize("name", ["mixtral", "qwen3_moe"])
def test_experts_eager_loop(name):
    """transformers 5 runs MoE experts through grouped_mm by default (our _apply_gate); the eager loop is ours."""
    ids, mask, labels = _inputs()
    ref = _build(name)
    ref.config._experts_implementation = "eager"
    ref.train()
    want = ref(input_ids=ids, attention_mask=mask, labels=labels).loss
    want.backward()
    want_grads = {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None}
    ref.zero_grad(set_to_none=True)
    lt.APPLY_FUNCTIONS[f"apply_liger_kernel_to_{name}"](model=ref)
    got = ref(input_ids=ids, attention_mask=mask, labels=labels).loss
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for n, g in want_grads.items():  # fp32 both ways: rounding-level differences only
        torch.testing.assert_close(dict(ref.named_parameters())[n].grad, g, rtol=1e-4, atol=1e-6, msg=n)


def test_num_items_in_batch_positional_and_tuple_output():
    """HF's gradient-accumulation contract (sum / num_items_in_batch), positional labels, return_dict=False."""
    ids, mask, labels = _inputs()
    ref = _build("llama")
    ref.train()
    n = torch.tensor(37)
    want = ref(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n).loss
    lt.apply_liger_kernel_to_llama(model=ref)
    got = ref(ids, mask, None, None, None, labels, num_items_in_batch=n, return_dict=False)
    assert isinstance(got, tuple)  # (loss, cache): HF's to_tuple() drops the None logits
    assert not any(torch.is_tensor(t) and t.shape[-1:] == (V,) for t in got)
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-6)
    # skip_logits=False runs Hugging Face's loss on materialized logits
    out = ref(input_ids=ids, attention_mask=mask, labels=labels, skip_logits=False)
    assert out.logits.shape == (2, 12, V)
    torch.testing.assert_close(out.loss, ref(input_ids=ids, attention_mask=mask, labels=labels).loss,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="skip_logits=True needs labels"):
        ref(input_ids=ids, skip_logits=True)


@pytest.mark.parametrize("name", ["llama", "gemma2", "llama4", "gpt_oss", "deepseek_v3", "qwen3_next", "falcon_h1",
                                  "gemma4_text", "nemotron", "mistral3"])
def test_generate_matches(name):
    """Greedy generation with the KV cache (one-token steps through the patched RoPE, norms and MLPs)."""
    ref = _build(name).eval()
    ids = torch.randint(3, V - 4, (1, 5))
    want = ref.generate(ids, max_new_tokens=8, do_sample=False)
    fn, kw = _apply_kwargs(name)
    fn(model=ref, **kw)
    assert torch.equal(ref.generate(ids, max_new_tokens=8, do_sample=False), want)


def test_cross_entropy_flag_patches_hf_loss():
    ids, mask, labels = _inputs()
    model = _build("qwen2")
    want = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    lt.apply_liger_kernel_to_qwen2(cross_entropy=True, fused_linear_cross_entropy=False, model=model)
    from transformers.loss import loss_utils

    assert loss_utils.fixed_cross_entropy.__name__ == "fixed_cross_entropy" and hasattr(
        loss_utils.fixed_cross_entropy, "__liger_original__")
    got = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(got.loss, want, rtol=1e-5, atol=1e-6)
    assert got.logits is not None
    with pytest.raises(ValueError, match="cannot both be True"):
        lt.apply_liger_kernel_to_qwen2(cross_entropy=True, fused_linear_cross_entropy=True)


def test_signatures_follow_liger_kernel():
    sig = inspect.signature(lt.apply_liger_kernel_to_llama)
    assert list(sig.parameters) == ["rope", "cross_entropy", "fused_linear_cross_entropy", "rms_norm", "swiglu",
                                    "flash_attention", "model"]
    assert [p.default for p in sig.parameters.values()] == [True, False, True, True, True, False, None]
    assert "geglu" in inspect.signature(lt.apply_liger_kernel_to_gemma2).parameters
    assert inspect.signature(lt.apply_liger_kernel_to_glm4).parameters["rope"].default is False
    assert "layer_norm" in inspect.signature(lt.apply_liger_kernel_to_qwen2_vl).parameters
    defaults = {n: {k: p.default for k, p in inspect.signature(fn).parameters.items()}
                for n, fn in lt.APPLY_FUNCTIONS.items()}
    # Liger-Kernel 0.8.5's defaults where they differ from Llama's
    for fam in ("deepseek_v2", "deepseek_v3", "qwen3_next", "qwen3_5", "qwen3_5_moe"):
        assert defaults[f"apply_liger_kernel_to_{fam}"]["rope"] is False, fam
    assert defaults["apply_liger_kernel_to_qwen3_vl"]["swiglu"] is False
    assert defaults["apply_liger_kernel_to_gpt_oss"]["swiglu"] is False
    assert defaults["apply_liger_kernel_to_nemotron"]["relu_squared"] is True
    assert "rms_norm" not in defaults["apply_liger_kernel_to_nemotron"]  # it has no RMSNorm

    assert all(getattr(lt, n) is fn for n, fn in lt.APPLY_FUNCTIONS.items())  # every row is exported by name
    for fam in lt.FAMILIES:  # every row names classes and functions that exist in this transformers
        import importlib

        mod = importlib.import_module(fam.module)
        names = list(fam.norm.classes if fam.norm else ()) + [s.cls for s in fam.mlps] + list(fam.causal_lms)
        names += [n for n in fam.layer_norms if n != monkey_patch.TORCH_LAYER_NORM]
        names += [fam.rope[0]] if fam.rope else []
        missing = [n for n in names if not hasattr(mod, n)]
        assert not missing, f"{fam.module} lacks {missing}"
        assert all(t in lt.MODEL_TYPE_TO_APPLY_LIGER_FN for t in fam.model_types)


def test_flags_without_fused_op_warn(caplog):
    """GPT-OSS's experts (clamped SwiGLU with biases) have no fused op, nor DeepSeek-V3's RoPE: swiglu=True / rope=True
    say so and patch nothing."""
    with caplog.at_level("WARNING", logger="liger_aot.transformers.monkey_patch"):
        lt.apply_liger_kernel_to_gpt_oss(swiglu=True, rope=False, rms_norm=False, fused_linear_cross_entropy=False)
    assert "no fused op computes its MLP" in caplog.text
    assert not monkey_patch._applied
    with caplog.at_level("WARNING", logger="liger_aot.transformers.monkey_patch"):  # as Liger-Kernel: warn, skip
        lt.apply_liger_kernel_to_deepseek_v3(rope=True, rms_norm=False, swiglu=False, fused_linear_cross_entropy=False)
    assert "its RoPE has no liger_aot op" in caplog.text
    assert not monkey_patch._applied


def test_flash_attention_selects_liger_flash():
    """flash_attention=True registers "liger_flash" itself (no import of liger_aot.attention needed) and selects it;
    the patched model's CPU forward (the op's math reference) matches SDPA's."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ref = _build("llama")
    ids, mask, _ = _inputs()
    want = ref(input_ids=ids, attention_mask=mask).logits
    model = _build("llama")
    lt.apply_liger_kernel_to_llama(flash_attention=True, rope=False, rms_norm=False, swiglu=False,
                                   fused_linear_cross_entropy=False, model=model)
    assert lt.LIGER_FLASH in ALL_ATTENTION_FUNCTIONS
    assert model.config._attn_implementation == lt.LIGER_FLASH
    got = model(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()  # padded positions are not compared (SDPA and FlashAttention treat them differently)
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-4, atol=1e-4)


def test_state_dict_and_repeat_application():
    """Class patches keep parameter names (HF checkpoints load unchanged); applying twice stacks nothing."""
    ref = _build("gemma")
    lt.apply_liger_kernel_to_gemma()
    lt.apply_liger_kernel_to_gemma()
    model = _build("gemma", seed=5)
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    from transformers.models.gemma import modeling_gemma

    assert modeling_gemma.GemmaRMSNorm.__liger_original__.__name__ == "GemmaRMSNorm"
    assert not hasattr(modeling_gemma.GemmaForCausalLM.forward.__liger_original__, "__liger_original__")
    monkey_patch._revert_patches()
    assert not hasattr(modeling_gemma.GemmaRMSNorm, "__liger_original__")


def test_auto_model_and_instance_entry_points():
    config = _config("mistral")
    model = lt.AutoLigerKernelForCausalLM.from_config(config, swiglu=False)
    from transformers.models.mistral import modeling_mistral

    assert type(model.model.norm).__name__ == "LigerMistralRMSNorm"
    assert type(model.model.layers[0].mlp) is modeling_mistral.MistralMLP  # swiglu=False honoured
    assert hasattr(type(model).forward, "__liger_original__")
    monkey_patch._revert_patches()
    other = transformers.AutoModelForCausalLM.from_config(_config("qwen3"))
    lt._apply_liger_kernel_to_instance(other, swiglu=True, not_a_liger_option=1)
    assert other.model.norm.forward.__func__.__name__ == "rms_norm_forward"
    assert "forward" in other.__dict__


@pytest.mark.parametrize("how", ["class", "instance"])
def test_qwen2_vl_vision_layer_norm(how):
    """layer_norm=True reaches the vision tower's torch.nn.LayerNorm (text-only inputs never run it)."""
    ref = _build("qwen2_vl")
    px, grid = torch.randn(4, 12), torch.tensor([[1, 2, 2]])  # 4 patches of 3 x 2 x 2
    want = ref.model.visual(px, grid_thw=grid).last_hidden_state
    if how == "class":
        lt.apply_liger_kernel_to_qwen2_vl()
        model = _build("qwen2_vl", seed=9)
        model.load_state_dict(ref.state_dict())
    else:
        model = ref
        lt.apply_liger_kernel_to_qwen2_vl(model=model)
    from liger_aot.transformers import forwards

    norms = [m for m in model.model.visual.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.forward.__func__ is forwards.layer_norm_forward for m in norms)
    torch.testing.assert_close(model.model.visual(px, grid_thw=grid).last_hidden_state, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["class", "instance"])
def test_pixtral_vision_encoder(how):
    """Pixtral (the vision tower of Mistral 3 and Pixtral-12B): its RMSNorms, SwiGLU MLPs and 2-D RoPE, on images."""
    config = transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=16, patch_size=4, head_dim=16,
                                              hidden_act="silu")
    torch.manual_seed(0)
    ref = transformers.PixtralVisionModel(config).float().eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "norm" in n:
                p.normal_(1.0, 0.3)
    px = torch.randn(2, 3, 16, 12)  # two images, 4 x 4 and (cropped) 4 x 3 patches
    sizes = torch.tensor([[16, 16], [16, 12]])
    with torch.no_grad():
        want = ref(px, image_sizes=sizes).last_hidden_state
        want64 = copy.deepcopy(ref).double()(px.double(), image_sizes=sizes).last_hidden_state
    if how == "class":
        lt.apply_liger_kernel_to_pixtral()
        model = transformers.PixtralVisionModel(config).float().eval()
        model.load_state_dict(ref.state_dict())
    else:
        model = ref
        lt.apply_liger_kernel_to_pixtral(model=model)
    from liger_aot.transformers import forwards

    assert all(m.forward.__func__ is forwards.rms_norm_forward for m in model.modules()
               if type(m).__name__.endswith("PixtralRMSNorm"))
    from transformers.models.pixtral import modeling_pixtral

    assert hasattr(modeling_pixtral.apply_rotary_pos_emb, "__liger_original__")
    with torch.no_grad():
        got = model(px, image_sizes=sizes).last_hidden_state
    _close("pixtral last_hidden_state", got, want, want64)
    assert "cross_entropy" not in inspect.signature(lt.apply_liger_kernel_to_pixtral).parameters  # no LM head


def test_wrapper_passes_flags_to_its_language_model(caplog):
    """apply_liger_kernel_to_llava(model=..., **kw): the language model's row takes kw (swiglu=False honoured);
    flags that no sub-model takes are reported."""
    model = _build("llava")
    with caplog.at_level("WARNING", logger="liger_aot.transformers.monkey_patch"):
        lt.apply_liger_kernel_to_llava(model=model, swiglu=False, geglu=True)
    lm = model.model.language_model
    assert lm.norm.forward.__func__.__name__ == "rms_norm_forward"
    assert "forward" not in lm.layers[0].mlp.__dict__  # swiglu=False: Hugging Face's MLP
    assert "forward" in model.__dict__  # the fused loss on the wrapper
    assert "['geglu'] taken by neither" in caplog.text
    sig = inspect.signature(lt.apply_liger_kernel_to_llava)
    assert list(sig.parameters) == ["cross_entropy", "fused_linear_cross_entropy", "flash_attention", "model",
                                    "kwargs"]


@pytest.mark.parametrize("name", ["llava", "qwen2_5_vl"])
def test_auto_image_text_to_text(name):
    """AutoLigerKernelForImageTextToText: the row of the config and, for a wrapper, of its language model, on the
    classes before building; the liger flags are taken out of the transformers kwargs."""
    model = lt.AutoLigerKernelForImageTextToText.from_config(_config(name), rope=True, attn_implementation="sdpa")
    lm = model.model.language_model
    assert type(lm.norm).__name__.startswith("Liger") and type(lm.layers[0].mlp).__name__.startswith("Liger")
    assert hasattr(type(model).forward, "__liger_original__")
    ids, mask, labels = _inputs()
    model.train()
    assert model(input_ids=ids, attention_mask=mask, labels=labels).logits is None


@pytest.mark.parametrize("name", ["gemma3", "paligemma"])
def test_vision_tower_layer_norms(name):
    """layer_norm=True on a model reaches the SigLIP tower's torch.nn.LayerNorms (text-only inputs never run it);
    on the classes it changes nothing (that would mean patching torch.nn.LayerNorm)."""
    from liger_aot.transformers import forwards

    lt.APPLY_FUNCTIONS[f"apply_liger_kernel_to_{name}"](layer_norm=True)
    assert torch.nn.LayerNorm.forward is not forwards.layer_norm_forward
    ref = _build(name)
    tower = ref.model.vision_tower
    px = torch.randn(2, 3, 8, 8)
    want = tower(pixel_values=px).last_hidden_state
    lt.APPLY_FUNCTIONS[f"apply_liger_kernel_to_{name}"](model=ref, layer_norm=True)
    norms = [m for m in tower.modules() if type(m) is torch.nn.LayerNorm]
    assert norms and all(m.forward.__func__ is forwards.layer_norm_forward for m in norms)
    torch.testing.assert_close(tower(pixel_values=px).last_hidden_state, want, rtol=1e-5, atol=1e-5)
    assert "layer_norm" in inspect.signature(lt.APPLY_FUNCTIONS[f"apply_liger_kernel_to_{name}"]).parameters


def test_auto_model_from_pretrained(tmp_path):
    """AutoLigerKernelForCausalLM.from_pretrained reads model_type from the checkpoint's config and patches first."""
    ref = _build("smollm3")
    ref.save_pretrained(tmp_path)
    ids, mask, labels = _inputs()
    ref.train()
    want = ref(input_ids=ids, attention_mask=mask, labels=labels).loss  # before the patch (class-wide forward)
    model = lt.AutoLigerKernelForCausalLM.from_pretrained(tmp_path, rms_norm=False)
    assert type(model.model.norm).__name__ == "SmolLM3RMSNorm"  # rms_norm=False honoured
    assert type(model.model.layers[0].mlp).__name__ == "LigerSmolLM3MLP"
    model.train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits is None
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-6)


# ---- GPU: bf16 convergence, patched vs unpatched --------------------------------------------------------------

GROUPS = {"llama-like": ["llama", "mistral", "qwen2", "qwen3", "smollm3", "granite", "olmo2"],
          "llama-like-2": ["ministral", "olmo3", "exaone4", "hunyuan_v1_dense", "nemotron"],
          "fused-gate-up": ["phi3", "glm4"],
          "gemma": ["gemma", "gemma2", "gemma3_text", "gemma3", "gemma4_text", "gemma4"],
          "moe": ["mixtral", "qwen3_moe", "llama4"],
          "moe-2": ["hunyuan_v1_moe", "deepseek_v2", "deepseek_v3", "deepseek_v4", "gpt_oss"],
          "hybrid": ["qwen3_next", "qwen3_5", "qwen3_5_moe", "falcon_h1"],
          "vl": ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "mllama", "glm4v", "glm4v_moe"],
          "wrappers": ["llava", "paligemma", "internvl", "smolvlm", "mistral3"]}


LR = 2e-3  # 3e-3 made bf16 runs chaotic (curves 10 % apart after 30 steps, measured on the CPU)
# Nemotron's ReLU² model is chaotic at 2e-3 already: rounding alone (SDPA's math backend, nothing patched) moves its
# curve 9.6 % on the CPU; at 1e-3 0.06 % (patched 0.04 %), and its loss still falls from 4.87 to 2.24.
FAMILY_LR = {"nemotron": 1e-3}


def _train(model, steps, batches, lr=LR):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        ids, mask, labels = batches[step % len(batches)]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return torch.tensor(losses)


@gpu
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_convergence_bf16(group):
    """30 AdamW steps (lr 2e-3) in bf16 on a 4-layer model of each family of the group, patched (classes) and
    unpatched from the same weights over the same learnable batches (the unpatched loss must drop by > 15 %).
    Tolerances, from the same test run on the CPU reference of the ops in bf16 (scripts/convergence_cpu.py; the
    first 17 families): the first
    loss (same weights, same batch: forward rounding only) differed by <= 0.3 %, the curves by <= 4.1 % at any step
    (Qwen2.5-VL; <= 1.8 % for the others) and <= 1.3 % on the mean of the last 10 steps, as the rounding differences
    compound through training; for the 27 families added later <= 0.31 %, <= 4.9 % and <= 2.6 % (both InternVL's,
    whose patched run learned faster). Bounds 1 %, 8 % and 4 % leave room for the GPU kernels' own rounding; a
    wrong variant or gradient moves the first loss or stops the patched run from learning.
    A family whose training is that sensitive to rounding alone would fail them without a fault: Nemotron's
    unpatched curve run again with SDPA's math backend (nothing patched) ended 9.6 % away on the CPU at lr 2e-3, and
    its patched curve 9.0 % on the GPU (f35ddd2); it trains at 1e-3 (FAMILY_LR). As a guard for the others, each
    unpatched run is repeated with SDPA's math backend and the bounds on the curves are at least 1.5 times that
    run's distance (attention that is not SDPA: no change). scripts/convergence_cpu.py --noise --each prints these
    distances and each patch's own."""
    for name in GROUPS[group]:
        base, (got, noise) = _convergence(name, "cuda", torch.bfloat16, 30,
                                          runs=((None, contextlib.nullcontext), (_no_patch, _sdpa_math)))
        assert base[-1] < 0.85 * base[0], f"{name}: the unpatched run did not learn ({base[0]:.3f} -> {base[-1]:.3f})"
        rel = (got - base).abs() / base
        assert rel[0] < 0.01, f"{name}: first loss {got[0]:.4f} vs {base[0]:.4f}"
        noise_rel = (noise - base).abs() / base
        bound = max(0.08, 1.5 * noise_rel.max().item())
        assert rel.max() < bound, (f"{name}: loss curves differ by {rel.max():.3f} (relative) at step {rel.argmax()}; "
                                   f"rounding alone (SDPA math): {noise_rel.max():.3f}")
        tail = abs(got[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
        noise_tail = abs(noise[-10:].mean() - base[-10:].mean()) / base[-10:].mean()
        assert tail < max(0.04, 1.5 * noise_tail), (f"{name}: mean loss of the last 10 steps differs by {tail:.4f} "
                                                   f"(relative); rounding alone (SDPA math): {noise_tail:.4f}")


def _no_patch(name, config):
    pass


def _sdpa_math():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.MATH)


def _convergence(name, dev, dtype, steps, runs=((None, contextlib.nullcontext),)):
    """The unpatched loss curve of ``steps`` AdamW steps of a 4-layer ``name`` model and, for each ``(patch,
    context)`` of ``runs``, the curve from the same weights and batches with the classes patched by ``patch(name,
    config)`` (None: every flag on) and the steps run inside ``context()``."""
    monkey_patch._revert_patches()
    config = _config(name)
    tc = config.get_text_config()
    tc.num_hidden_layers = 4
    for attr in ("layer_types", "no_rope_layers", "mlp_only_layers", "mlp_layer_types"):
        if isinstance(getattr(tc, attr, None), list) and len(getattr(tc, attr)) == LAYERS:
            setattr(tc, attr, getattr(tc, attr) * 2)
    if hasattr(tc, "per_layer_config"):  # Gemma 4 derives it from layer_types when built: build the config again
        d = config.to_dict()
        d.get("text_config", d).pop("per_layer_config", None)
        config = type(config).from_dict(d)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):  # rows count up by a random stride modulo 37: learnable in 30 steps
        start, stride = torch.randint(0, 37, (4, 1), generator=g), torch.randint(1, 6, (4, 1), generator=g)
        ids = 3 + (start + stride * torch.arange(64)) % 37
        mask = torch.ones_like(ids)
        # 8 ignored labels, no padding: a padded query row that sees no key (left padding; right padding under
        # Gemma 2's sliding window) is NaN in CUDA SDPA, unpatched (GPU run of 039e22b). Padding is tested on the CPU.
        labels = ids.clone()
        labels[0, -8:] = -100
        batches.append((ids.to(dev), mask.to(dev), labels.to(dev)))
    torch.manual_seed(0)
    ref = _model_class(config).from_config(config, attn_implementation=_attention(name)).to(dev, dtype)
    state = copy.deepcopy(ref.state_dict())
    base = _train(ref, steps, batches, FAMILY_LR.get(name, LR))
    del ref
    curves = []
    for patch, context in runs:
        (patch or _patch_classes)(name, config)
        try:
            torch.manual_seed(0)
            model = _model_class(config).from_config(config, attn_implementation=_attention(name)).to(dev, dtype)
            model.load_state_dict(state)
            with context():
                curves.append(_train(model, steps, batches, FAMILY_LR.get(name, LR)))
            del model
        finally:
            monkey_patch._revert_patches()
    return base, curves


@gpu
def test_fused_loss_never_builds_logits_gpu():
    """Training step of a 2-layer Llama with a 32 k vocabulary at 2 x 4096 tokens in bf16: HF holds the bf16 logits
    and their fp32 copy (6 bytes per logit, 1.5 GiB here); the patched step's peak must be lower by at least the
    bf16 logits (the fused loss's chunk buffer is bounded at 128 MiB)."""
    config = transformers.LlamaConfig(**_common(vocab_size=32000, hidden_size=512, intermediate_size=1024,
                                                max_position_embeddings=8192))
    ids = torch.randint(0, 32000, (2, 4096), device="cuda")

    def peak(model):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()  # warm-up: gradients allocated
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, out

    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16)
    hf_peak, hf_out = peak(ref)
    state = ref.state_dict()
    del ref, hf_out
    lt.apply_liger_kernel_to_llama()
    model = transformers.AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16)
    model.load_state_dict(state)
    ours, out = peak(model)
    assert out.logits is None
    logits_bytes = ids.numel() * 32000 * 2
    assert ours < hf_peak - logits_bytes, f"peak {ours / 2**30:.2f} GiB vs HF {hf_peak / 2**30:.2f} GiB"
