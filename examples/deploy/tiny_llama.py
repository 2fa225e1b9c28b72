"""A small, self-contained Llama-style decoder that every deployment path accepts: eager, torch.compile,
CUDA graphs, torch.export / AOTInductor and TorchScript (scripted, then run from C++).

The same module runs on one of three op backends, with the same parameter names (state dicts move between them):

- ``"torch"``: Hugging Face ``LlamaForCausalLM``'s formulas in plain PyTorch (the unpatched reference);
- ``"liger_aot"``: ``torch.ops.liger.*`` through ``liger_aot.ops`` (``fused_add_rms_norm``/``rms_norm``, ``rope``,
  ``swiglu``; with ``attention="liger_flash"`` also ``flash_attn`` and, for decoding, ``flash_attn_varlen``); prefill
  and decode run q/k/v and gate/up as one matrix product each (``liger_aot.nn.LinearPack``: same parameters), and
  decode rotates q/k and writes the cache in one ``rope_kv_cache`` kernel;
- ``"liger_kernel"``: Liger-Kernel's autograd Functions (what ``liger_kernel``'s Llama patch runs; benchmark only,
  needs the ``liger_kernel`` package and a GPU, not scriptable).

``attention`` is ``"sdpa"`` (``F.scaled_dot_product_attention``) or ``"liger_flash"`` (``liger::flash_attn``; its
CUDA kernels take bf16/fp16 and head_dim 64, 96, 128 or 256, the CPU kernel is a math reference).

Two entry points:

- ``model(input_ids)`` -> logits ``[B, S, vocab]``, causal, no cache: what is exported and scripted;
- ``model.prefill(input_ids, cache)`` / ``model.decode(input_ids, position, cache)``: generation with a static
  :class:`KVCache`. ``decode`` takes the position as a 1-element int64 tensor and never reads it on the host, so
  one captured CUDA graph replays every step. ``decode`` with ``attention="liger_flash"`` needs batch 1 (it reads
  the cache as one packed sequence of ``position + 1`` keys through ``flash_attn_varlen``).

    from tiny_llama import LlamaConfig, TinyLlama
    model = TinyLlama(LlamaConfig(), backend="liger_aot")
    logits = model(torch.randint(0, 256, (2, 16)))
"""
import dataclasses
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import liger_aot

BACKENDS = ("torch", "liger_aot", "liger_kernel")
ATTENTIONS = ("sdpa", "liger_flash")


@dataclasses.dataclass
class LlamaConfig:
    vocab_size: int = 256
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 64  # 64: a head_dim the CUDA flash_attn kernels take
    max_seq_len: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @classmethod
    def llama3_1b(cls, max_seq_len: int = 2048) -> "LlamaConfig":
        """Llama-3.2-1B's shapes (random weights: nothing is downloaded)."""
        return cls(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                   num_kv_heads=8, head_dim=64, max_seq_len=max_seq_len, rope_theta=500000.0)


# ---- RMSNorm with the residual add in front: (norm(x + residual), x + residual); residual None: (norm(x), x)


class TorchAddRMSNorm(nn.Module):
    def __init__(self, hidden: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if residual is not None:
            x = x + residual
        # Hugging Face LlamaRMSNorm
        variance = x.float().pow(2).mean(-1, keepdim=True)
        y = x.float() * torch.rsqrt(variance + self.eps)
        return self.weight * y.to(x.dtype), x


class LigerAddRMSNorm(TorchAddRMSNorm):
    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            return liger_aot.ops.rms_norm(x, self.weight, self.eps), x
        return liger_aot.ops.fused_add_rms_norm(x, residual, self.weight, self.eps)


class LigerKernelAddRMSNorm(TorchAddRMSNorm):
    def forward(self, x, residual):
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction

        if residual is not None:
            x = x + residual
        # what Liger-Kernel's LigerRMSNorm.forward calls (offset 0, "llama", in_place=True, row_mode None)
        return LigerRMSNormFunction.apply(x, self.weight, self.eps, 0.0, "llama", True, None), x


# ---- rotary embeddings on q [B, S, Hq, D], k [B, S, Hk, D]; cos/sin [1 or B, S, D] in fp32


class TorchRoPE(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Hugging Face apply_rotary_pos_emb (cos/sin cast to q's dtype, as LlamaRotaryEmbedding returns them)
        cos = cos.to(q.dtype).unsqueeze(2)
        sin = sin.to(q.dtype).unsqueeze(2)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LigerRoPE(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return liger_aot.ops.rope(q, k, cos, sin, 2)


class LigerKernelRoPE(nn.Module):
    def forward(self, q, k, cos, sin):
        from liger_kernel.ops.rope import LigerRopeFunction

        # Liger-Kernel's rope takes HF's [B, H, S, D] layout and cos/sin of q's dtype
        q, k = LigerRopeFunction.apply(q.transpose(1, 2), k.transpose(1, 2), cos.to(q.dtype), sin.to(q.dtype))
        return q.transpose(1, 2), k.transpose(1, 2)


# ---- gated MLP: down(silu(gate(x)) * up(x))


class TorchMLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    @torch.jit.unused
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """forward, for prefill / decode (the liger_aot backend packs gate and up there)."""
        return self(x)


class LigerMLP(TorchMLP):
    def __init__(self, hidden: int, inter: int):
        super().__init__(hidden, inter)
        # gate and up as one matrix product when autograd does not record (decoding): fewer launches per token
        self.gate_up = liger_aot.nn.LinearPack(self, ("gate_proj", "up_proj"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(liger_aot.ops.swiglu(self.gate_proj(x), self.up_proj(x)))

    @torch.jit.unused
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x)
        return self.down_proj(liger_aot.ops.swiglu(gate, up))


class LigerKernelMLP(TorchMLP):
    def forward(self, x):
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction

        return self.down_proj(LigerSiLUMulFunction.apply(self.gate_proj(x), self.up_proj(x)))


# ---- attention over q [B, S, Hq, D], k/v [B, S or max_seq_len, Hk, D] (GQA: Hq a multiple of Hk)


class SDPAttention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=True, enable_gqa=True).transpose(1, 2)

    @torch.jit.unused
    def decode(self, q, k_cache, v_cache, seen):
        """q [B, 1, Hq, D] against the whole cache; seen: bool [1, max_seq_len], the positions it may attend to."""
        return F.scaled_dot_product_attention(q.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2),
                                              attn_mask=seen, enable_gqa=True).transpose(1, 2)


class LigerFlashAttention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return liger_aot.ops.flash_attn(q, k, v, True)

    @torch.jit.unused
    def decode(self, q, k_cache, v_cache, seen):
        """Batch 1: the cache's rows 0..position as one packed sequence; seen: (cu_seqlens_q, cu_seqlens_k)."""
        cu_q, cu_k = seen
        hk, d = k_cache.shape[-2], k_cache.shape[-1]
        o = liger_aot.ops.flash_attn_varlen(q.view(1, -1, d), k_cache.view(-1, hk, d), v_cache.view(-1, hk, d), cu_q,
                                            cu_k, 1, k_cache.shape[1], False)
        return o.unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, rope: nn.Module, attention: str):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, d
        self.q_proj = nn.Linear(h, config.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, config.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, config.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(config.num_heads * d, h, bias=False)
        self.rope = rope
        self.attend = LigerFlashAttention() if attention == "liger_flash" else SDPAttention()
        self.qkv_pack = None  # the liger_aot backend's liger_aot.nn.LinearPack of q/k/v, for prefill / decode

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor,
             sin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s = x.shape[0], x.shape[1]
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim)
        q, k = self.rope(q, k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, cos, sin)
        return self.o_proj(self.attend(q, k, v).flatten(2))

    @torch.jit.unused
    def _qkv_infer(self, x, cos, sin):
        if self.qkv_pack is None:
            return self._qkv(x, cos, sin)
        b, s = x.shape[0], x.shape[1]
        q, k, v = self.qkv_pack(x)
        q, k = self.rope(q.view(b, s, self.num_heads, self.head_dim), k.view(b, s, self.num_kv_heads, self.head_dim),
                         cos, sin)
        return q, k, v.view(b, s, self.num_kv_heads, self.head_dim)

    @torch.jit.unused
    def prefill(self, x, cos, sin, k_cache, v_cache):
        q, k, v = self._qkv_infer(x, cos, sin)
        k_cache[:, :x.shape[1]].copy_(k)
        v_cache[:, :x.shape[1]].copy_(v)
        return self.o_proj(self.attend(q, k, v).flatten(2))

    @torch.jit.unused
    def decode(self, x, cos, sin, k_cache, v_cache, position, seen):
        """One new token per row at `position` (int64 [1]); `seen`: the keys it attends to (see TinyLlama.decode)."""
        if self.qkv_pack is not None:
            # liger_aot: one matrix product for q/k/v, one kernel for RoPE and the cache write (no index_copy_)
            b, s = x.shape[0], x.shape[1]
            q, k, v = self.qkv_pack(x)
            q = liger_aot.ops.rope_kv_cache(q.view(b, s, self.num_heads, self.head_dim),
                                            k.view(b, s, self.num_kv_heads, self.head_dim),
                                            v.view(b, s, self.num_kv_heads, self.head_dim), cos, sin, k_cache, v_cache,
                                            position)
        else:
            q, k, v = self._qkv(x, cos, sin)
            k_cache.index_copy_(1, position, k)
            v_cache.index_copy_(1, position, v)
        return self.o_proj(self.attend.decode(q, k_cache, v_cache, seen).flatten(2))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, backend: str, attention: str):
        super().__init__()
        norm, rope, mlp = _BACKEND_MODULES[backend]
        self.input_layernorm = norm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, rope(), attention)
        self.post_attention_layernorm = norm(config.hidden_size, config.rms_norm_eps)
        self.mlp = mlp(config.hidden_size, config.intermediate_size)
        if backend == "liger_aot":
            self.self_attn.qkv_pack = liger_aot.nn.LinearPack(self.self_attn, ("q_proj", "k_proj", "v_proj"))


_BACKEND_MODULES = {
    "torch": (TorchAddRMSNorm, TorchRoPE, TorchMLP),
    "liger_aot": (LigerAddRMSNorm, LigerRoPE, LigerMLP),
    "liger_kernel": (LigerKernelAddRMSNorm, LigerKernelRoPE, LigerKernelMLP),
}


class KVCache:
    """Static cache: k and v of every layer, ``[layers, batch, max_seq_len, kv_heads, head_dim]``."""

    def __init__(self, config: LlamaConfig, batch: int, device=None, dtype=None):
        shape = (config.num_layers, batch, config.max_seq_len, config.num_kv_heads, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.k_layers, self.v_layers = self.k.unbind(0), self.v.unbind(0)  # per-layer views, made once
        if hasattr(torch, "_dynamo"):  # torch.compile: fixed addresses, so CUDA graphs may keep them
            torch._dynamo.mark_static_address(self.k)
            torch._dynamo.mark_static_address(self.v)


class TinyLlama(nn.Module):
    def __init__(self, config: LlamaConfig, backend: str = "liger_aot", attention: str = "sdpa"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.config, self.backend, self.attention = config, backend, attention
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, backend, attention) for _ in range(config.num_layers))
        self.norm = _BACKEND_MODULES[backend][0](config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim)
        angles = torch.outer(torch.arange(config.max_seq_len, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        # fp32 tables that .to(dtype) leaves alone: see _apply
        self.register_buffer("rope_cos", angles.cos().float(), persistent=False)
        self.register_buffer("rope_sin", angles.sin().float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, seed: int = 0) -> None:
        """Random weights of a realistic scale; norm weights away from 1 so that a dropped weight shows."""
        generators = {}
        with torch.no_grad():
            for p in self.parameters():  # drawn where the parameter lives: a 1B model initialises on the GPU
                g = generators.setdefault(p.device, torch.Generator(p.device).manual_seed(seed))
                noise = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
                p.copy_(1.0 + 0.2 * noise if p.dim() == 1 else noise / math.sqrt(p.shape[-1]))

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) would round the rope tables; keep them fp32 (as HF computes cos/sin in fp32).
        cos, sin = self.rope_cos, self.rope_sin
        out = super()._apply(fn, recurse)
        self.rope_cos = cos.to(self.rope_cos.device)
        self.rope_sin = sin.to(self.rope_sin.device)
        return out

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        cos, sin = self.rope_cos[:s].unsqueeze(0), self.rope_sin[:s].unsqueeze(0)
        h = self.embed_tokens(input_ids)
        residual: Optional[torch.Tensor] = None
        for layer in self.layers:
            x, residual = layer.input_layernorm(h, residual)
            h = layer.self_attn(x, cos, sin)
            x, residual = layer.post_attention_layernorm(h, residual)
            h = layer.mlp(x)
        h, _ = self.norm(h, residual)
        return self.lm_head(h)

    @torch.jit.unused
    def new_cache(self, batch: int) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch, p.device, p.dtype)

    @torch.jit.unused
    def prefill(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits of the prompt ``[B, S, vocab]``; its keys and values fill positions 0..S-1 of ``cache``."""
        s = input_ids.shape[1]
        cos, sin = self.rope_cos[:s].unsqueeze(0), self.rope_sin[:s].unsqueeze(0)
        return self._layers(input_ids, lambda i, layer, x: layer.self_attn.prefill(x, cos, sin, cache.k_layers[i],
                                                                                   cache.v_layers[i]))

    @torch.jit.unused
    def decode(self, input_ids: torch.Tensor, position: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits ``[B, 1, vocab]`` of one new token per row (``input_ids [B, 1]``) at ``position`` (int64 ``[1]``,
        on the model's device), attending to the cache's positions ``0..position``; writes its k/v there."""
        cos = self.rope_cos.index_select(0, position).unsqueeze(0)
        sin = self.rope_sin.index_select(0, position).unsqueeze(0)
        if self.attention == "liger_flash":
            if input_ids.shape[0] != 1:
                raise ValueError("TinyLlama.decode with attention='liger_flash' takes batch 1 "
                                 f"(the cache is read as one packed sequence), got batch {input_ids.shape[0]}")
            # device ops only (no host-to-device copy), so that the step can be captured in a CUDA graph
            cu_q = torch.arange(2, dtype=torch.int32, device=position.device)
            seen = (cu_q, F.pad((position + 1).to(torch.int32), (1, 0)))
        else:
            seen = (torch.arange(self.config.max_seq_len, device=position.device) <= position).view(1, -1)
        return self._layers(input_ids, lambda i, layer, x: layer.self_attn.decode(x, cos, sin, cache.k_layers[i],
                                                                                  cache.v_layers[i], position, seen))

    def _layers(self, input_ids, attend) -> torch.Tensor:
        # forward's loop with the attention call passed in (forward keeps its own copy: TorchScript takes no callables)
        h = self.embed_tokens(input_ids)
        residual = None
        for i, layer in enumerate(self.layers):
            x, residual = layer.input_layernorm(h, residual)
            h = attend(i, layer, x)
            x, residual = layer.post_attention_layernorm(h, residual)
            h = layer.mlp.infer(x)
        h, _ = self.norm(h, residual)
        return self.lm_head(h)


def same_weights(model: TinyLlama, backend: str, attention: Optional[str] = None, dtype=None) -> TinyLlama:
    """A copy of ``model`` on another backend/attention (and dtype), with the same weights."""
    weight = model.lm_head.weight
    with torch.device(weight.device):
        other = TinyLlama(model.config, backend, attention or model.attention)
    other.load_state_dict(model.state_dict())
    return other.to(dtype=dtype or weight.dtype)


def liger_ops_in(graph_text: str) -> List[str]:
    """The distinct ``liger::`` operators named in a printed graph (FX, TorchScript or exported)."""
    import re

    return sorted(set(re.findall(r"liger[:.]+(\w+)", graph_text)))
