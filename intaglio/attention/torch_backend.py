"""Reference attention backend over a paged KV cache, in plain torch (CPU and GPU).

Decodes are batched into one scaled-dot-product call over each sequence's gathered context;
prefill chunks (few per step) are done one sequence at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from intaglio.attention.metadata import AttentionMetadata


class TorchAttentionBackend:
    name = "torch"

    def write_kv(
        self,
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,
        k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> None:
        k_cache.view(-1, *k.shape[1:]).index_copy_(0, meta.slot_mapping, k)
        v_cache.view(-1, *v.shape[1:]).index_copy_(0, meta.slot_mapping, v)

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [num_tokens, num_heads, head_dim]
        self.write_kv(k, v, k_cache, v_cache, meta)
        out = torch.empty_like(q)
        nd = meta.num_decode_tokens
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, meta, scale)
        for chunk in meta.prefills:
            rows = slice(chunk.query_start, chunk.query_start + chunk.query_len)
            if chunk.context_len == chunk.query_len:
                # Whole prompt in this step: attend to the fresh K/V, no cache read needed.
                ctx_k, ctx_v = k[rows], v[rows]
            else:
                ctx_k = _gather(k_cache, chunk.block_table, chunk.context_len)
                ctx_v = _gather(v_cache, chunk.block_table, chunk.context_len)
            out[rows] = _causal_attention(q[rows], ctx_k, ctx_v, scale)
        return out

    def _decode(
        self,
        q: torch.Tensor,  # [num_decodes, num_heads, head_dim]
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        assert meta.decode_block_tables is not None and meta.decode_mask is not None
        keys = _gather_blocks(k_cache, meta.decode_block_tables)
        values = _gather_blocks(v_cache, meta.decode_block_tables)
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # [n, heads, 1, d]
            keys,
            values,
            attn_mask=meta.decode_mask,
            scale=scale,
            enable_gqa=True,
        )
        return out.squeeze(2)


def _gather_blocks(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Each row's blocks, [n, num_blocks] ids -> [n, kv_heads, num_blocks * block_size, d]."""
    n, num_blocks = tables.shape
    # index_select on the flat block axis is a plain memcpy per block: faster than cache[tables].
    blocks = cache.index_select(0, tables.reshape(-1))  # [n * num_blocks, bs, kv_heads, d]
    return blocks.view(n, num_blocks * cache.shape[1], *cache.shape[2:]).transpose(1, 2)


def _gather(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` cached tokens of one sequence: [length, kv_heads, head_dim]."""
    bs = cache.shape[1]
    return cache.index_select(0, block_table[: -(-length // bs)]).flatten(0, 1)[:length]


def _causal_attention(
    q: torch.Tensor,  # [q_len, heads, d], the last q_len positions of the context
    k: torch.Tensor,  # [ctx_len, kv_heads, d]
    v: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    q_len, ctx_len = q.shape[0], k.shape[0]
    qt, kt, vt = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    if q_len == ctx_len:
        out = F.scaled_dot_product_attention(
            qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True
        )
    else:
        # Query i sits at context position ctx_len - q_len + i and sees positions up to it.
        q_pos = torch.arange(ctx_len - q_len, ctx_len, device=q.device)
        mask = q_pos[:, None] >= torch.arange(ctx_len, device=q.device)[None, :]
        out = F.scaled_dot_product_attention(
            qt, kt, vt, attn_mask=mask, scale=scale, enable_gqa=True
        )
    return out.transpose(0, 1)
