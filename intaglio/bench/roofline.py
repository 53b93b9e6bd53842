"""Roofline of a decoder on measured machine limits: the fastest a workload could run.

A decode step of batch B at context c reads every weight once plus each sequence's KV cache,
and does 2 FLOPs per weight per sequence plus the attention's dot products; its time is at
least max(bytes / bandwidth, FLOPs / matmul throughput). Prefill is taken as compute bound.
The embedding table is a gather of B rows, so it is left out of both weights and FLOPs.
Mixture-of-experts layers count the routed experts' FLOPs and the bytes of every expert the
batch touches; chunked-attention layers read at most a chunk of KV.
Bytes are counted at the model's dtype (weights and KV cache); the matmul throughput passed in
is the caller's choice of ceiling (the bench takes the faster of the model dtype and fp32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from intaglio.bench.machine import MachineLimits
from intaglio.model.config import ModelConfig


@dataclass(frozen=True)
class ModelCost:
    num_params: int  # every parameter, the embedding table included
    matmul_params: int  # parameters a token's forward multiplies by (layers and lm_head)
    bytes_per_param: int
    kv_bytes_per_token: int  # K and V of one token over all layers
    attn_flops_per_token_per_ctx: int  # QK^T and PV FLOPs of one query per context token
    # Mixture of experts: matmul_params counts the experts a token is routed to; a batch reads
    # every expert that any of its tokens is routed to.
    expert_params: int = 0  # one expert in every MoE layer
    num_experts: int = 0
    experts_per_token: int = 0
    # Chunked local attention (Llama 4): these layers attend to at most a chunk of context.
    chunked_layer_fraction: float = 0.0
    attention_chunk_size: int = 0

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelCost:
        h, q, kv, inter = cfg.hidden_size, cfg.q_size, cfg.kv_size, cfg.intermediate_size
        attn = h * (q + 2 * kv) + q * h + 2 * h  # + the two norms
        num_moe = len(cfg.moe_layers)
        # MoE layers: the router and the shared expert are dense; the experts are routed.
        moe_dense = h * cfg.num_experts + 3 * h * cfg.shared_expert_intermediate_size
        expert = 3 * h * cfg.moe_intermediate_size
        embed = cfg.vocab_size * h
        lm_head = cfg.vocab_size * h
        layers = (
            cfg.num_layers * attn
            + (cfg.num_layers - num_moe) * 3 * h * inter
            + num_moe * moe_dense
            + h  # the final norm
        )
        elem = _element_size(cfg)
        return cls(
            num_params=embed
            + layers
            + num_moe * cfg.num_experts * expert
            + (0 if cfg.tie_word_embeddings else lm_head),
            matmul_params=layers + lm_head + num_moe * cfg.num_experts_per_tok * expert,
            bytes_per_param=elem,
            kv_bytes_per_token=2 * cfg.num_layers * kv * elem,
            attn_flops_per_token_per_ctx=4 * cfg.num_layers * q,
            expert_params=num_moe * expert,
            num_experts=cfg.num_experts,
            experts_per_token=cfg.num_experts_per_tok,
            chunked_layer_fraction=sum(cfg.uses_chunked_attention(i) for i in range(cfg.num_layers))
            / cfg.num_layers,
            attention_chunk_size=cfg.attention_chunk_size or 0,
        )

    def attended_context(self, context: float) -> float:
        """Mean context per layer that attention reads (chunked layers: at most a chunk)."""
        if not self.attention_chunk_size:
            return context
        local = min(context, self.attention_chunk_size)
        return (1 - self.chunked_layer_fraction) * context + self.chunked_layer_fraction * local

    def weight_bytes(self, batch: int) -> float:
        """Bytes of weights one decode step of `batch` tokens reads, with routing uniform:
        each expert is missed by all of them with probability (1 - k / E) ** batch."""
        params = float(self.matmul_params)
        if self.num_experts:
            hit = self.num_experts * (1 - (1 - self.experts_per_token / self.num_experts) ** batch)
            params += (hit - self.experts_per_token) * self.expert_params
        return params * self.bytes_per_param


def _element_size(cfg: ModelConfig) -> int:
    import torch

    return torch.empty(0, dtype=cfg.dtype).element_size()


@dataclass(frozen=True)
class DecodeRoofline:
    batch: int
    context: float  # mean context length the step attends over
    weight_bytes: float
    kv_bytes: float
    flops: float
    memory_time_s: float
    compute_time_s: float
    bound: str  # "memory" or "compute"
    tokens_per_s: float  # batch / max(memory_time_s, compute_time_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decode_roofline(
    cost: ModelCost, limits: MachineLimits, dtype_tflops: float, batch: int, context: float
) -> DecodeRoofline:
    weight_bytes = cost.weight_bytes(batch)
    attended = cost.attended_context(context)
    kv_bytes = batch * attended * cost.kv_bytes_per_token
    flops = batch * (2 * cost.matmul_params + cost.attn_flops_per_token_per_ctx * attended)
    t_mem = (weight_bytes + kv_bytes) / (limits.read_bandwidth_gbs * 1e9)
    t_compute = flops / (dtype_tflops * 1e12)
    return DecodeRoofline(
        batch=batch,
        context=context,
        weight_bytes=weight_bytes,
        kv_bytes=kv_bytes,
        flops=flops,
        memory_time_s=t_mem,
        compute_time_s=t_compute,
        bound="memory" if t_mem >= t_compute else "compute",
        tokens_per_s=batch / max(t_mem, t_compute),
    )


def prefill_floor_s(cost: ModelCost, dtype_tflops: float, prompt_lens: list[int]) -> float:
    """Compute-bound time to prefill every prompt (causal attention: half the square)."""
    flops = sum(
        2 * cost.matmul_params * n + cost.attn_flops_per_token_per_ctx * n * (n + 1) / 2
        for n in prompt_lens
    )
    return flops / (dtype_tflops * 1e12)
