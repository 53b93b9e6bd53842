"""The decoder-only transformer behind Llama, Mistral, Qwen2/3, Mixtral, Qwen3-MoE and Llama 4.

The families differ only in flags of ModelConfig: q/k/v bias (Qwen2), per-head q/k RMSNorm
(Qwen3), explicit head_dim, rope scaling, tied embeddings, which layers are mixtures of experts
(model/moe.py), and Llama 4's per-layer attention: RoPE layers use interleaved RoPE, a
weightless q/k norm and chunked local attention; NoPE layers attend to the whole context with
a position-dependent query temperature. q/k/v and gate/up are stored fused so each costs one
matmul; the loader splices HF's separate tensors into them.
"""

from __future__ import annotations

import torch
from torch import nn

from intaglio.attention.metadata import AttentionMetadata, chunked_local_metadata
from intaglio.attention.torch_backend import TorchAttentionBackend
from intaglio.model.config import ModelConfig
from intaglio.model.layers import GatedMLP, RMSNorm, RotaryEmbedding, l2_norm
from intaglio.model.moe import MoE
from intaglio.ops.linear import Linear


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_rope = cfg.uses_rope(layer)
        self.qk_l2_norm = cfg.qk_l2_norm and self.use_rope
        self.temperature_tuning = cfg.attn_temperature_tuning and not self.use_rope
        self.qkv_proj = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=cfg.qkv_bias)
        self.o_proj = Linear(cfg.q_size, cfg.hidden_size, bias=cfg.o_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.rotary = rotary
        self.scale = cfg.head_dim**-0.5

    def forward(
        self,
        positions: torch.Tensor,  # [num_tokens]
        x: torch.Tensor,  # [num_tokens, hidden]
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        backend: TorchAttentionBackend,
    ) -> torch.Tensor:
        cfg = self.cfg
        n = x.shape[0]
        q, k, v = self.qkv_proj(x).split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=-1)
        q = q.view(n, cfg.num_heads, cfg.head_dim)
        k = k.view(n, cfg.num_kv_heads, cfg.head_dim)
        v = v.view(n, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = self.rotary(positions, q, k)
        if self.qk_l2_norm:
            q, k = l2_norm(q, cfg.rms_norm_eps), l2_norm(k, cfg.rms_norm_eps)
        if self.temperature_tuning:
            # Sharpen attention with distance on the layers that see the whole context.
            steps = torch.floor((positions.float() + 1.0) / cfg.floor_scale)
            q = (q * (torch.log1p(steps) * cfg.attn_scale + 1.0)[:, None, None]).to(q.dtype)
        out = backend.forward(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale)
        return self.o_proj(out.reshape(n, cfg.q_size))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, rotary, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.chunked_attention = cfg.uses_chunked_attention(layer)
        self.mlp: nn.Module
        if layer in cfg.moe_layers:
            self.mlp = MoE(
                cfg.hidden_size,
                cfg.moe_intermediate_size,
                cfg.num_experts,
                cfg.num_experts_per_tok,
                cfg.router,
                cfg.norm_topk_prob,
                cfg.shared_expert_intermediate_size,
            )
        else:
            self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        backend: TorchAttentionBackend,
    ) -> torch.Tensor:
        x = x + self.self_attn(positions, self.input_layernorm(x), kv_cache, meta, backend)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        rotary = RotaryEmbedding(
            cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, interleaved=cfg.rope_interleaved
        )
        self.layers = nn.ModuleList(DecoderLayer(cfg, rotary, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DecoderForCausalLM(nn.Module):
    """Flat batch of tokens in, hidden states out; logits only for the rows that need them."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DecoderModel(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        self.backend = TorchAttentionBackend()
        # Activations and KV cache dtype; fp32 over half weights on CPUs without half units.
        self.compute_dtype = cfg.dtype

    def tie_weights(self) -> None:
        """Share the embedding with the output head (again after `to_empty`, which unties)."""
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # [num_tokens]
        positions: torch.Tensor,  # [num_tokens]
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],  # per layer (k_cache, v_cache)
        meta: AttentionMetadata,
        chunked_meta: AttentionMetadata | None = None,
    ) -> torch.Tensor:  # [num_tokens, hidden]
        """`chunked_meta`: the step over the chunked-attention layers' own block tables, when
        their KV lives apart (engine/chunked_kv.py); without it they read `meta`'s tables."""
        x = self.model.embed_tokens(input_ids).to(self.compute_dtype)
        local_meta = meta
        if self.cfg.attention_chunk_size is not None:
            # One view of the step for every chunked-attention layer (Llama 4's RoPE layers).
            block_size = kv_caches[0][0].shape[1]
            local_meta = chunked_local_metadata(
                chunked_meta or meta, positions, self.cfg.attention_chunk_size, block_size
            )
        for layer, kv_cache in zip(self.model.layers, kv_caches):
            layer_meta = local_meta if layer.chunked_attention else meta
            x = layer(positions, x, kv_cache, layer_meta, self.backend)
        return self.model.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [rows, vocab] fp32
        return self.lm_head(hidden).float()
