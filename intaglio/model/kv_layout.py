"""How a model's layers divide a KV memory budget into block pools.

Full-attention layers keep every token's K/V. Chunked local attention layers (Llama 4's RoPE
layers) keep at most their current chunk plus one step's tokens per sequence, so they get a
pool of their own of max_num_seqs x that (plus a null block, engine/chunked_kv.py), and the
full-attention layers get the rest. When that bound is no saving, both pools get equal counts.
A model whose every layer is chunked keeps one pool (its layers then read only their chunk of
it, but hold the whole context). The engine's executor and the toolkit's memory plan both
size KV with this one rule.
"""

from __future__ import annotations

from intaglio.model.config import ModelConfig


def split_kv_blocks(
    cfg: ModelConfig,
    budget_bytes: int,
    block_bytes_per_layer: int,  # K and V of one block on one layer
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    num_kv_blocks: int | None = None,  # a fixed full-attention pool size overrides the budget
) -> tuple[int, int, int]:
    """(full-attention blocks, chunked-attention blocks, bytes of both pools)."""
    num_chunked = sum(cfg.uses_chunked_attention(i) for i in range(cfg.num_layers))
    num_full = cfg.num_layers - num_chunked
    if not num_chunked or not num_full:
        blocks = num_kv_blocks or max(budget_bytes, 0) // (cfg.num_layers * block_bytes_per_layer)
        return blocks, 0, blocks * cfg.num_layers * block_bytes_per_layer
    chunk = cfg.attention_chunk_size
    assert chunk is not None
    per_seq = -(-(chunk + max_num_batched_tokens) // block_size) + 1
    local = max_num_seqs * per_seq + 1
    if num_kv_blocks:
        full = num_kv_blocks
        local = min(local, full + 1)
    else:
        equal = max(budget_bytes, 0) // (cfg.num_layers * block_bytes_per_layer)
        if local >= equal:
            full = local = equal
        else:
            rest = budget_bytes - local * num_chunked * block_bytes_per_layer
            full = rest // (num_full * block_bytes_per_layer)
    return full, local, (full * num_full + local * num_chunked) * block_bytes_per_layer
