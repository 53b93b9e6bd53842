"""Reference attention backend over a paged KV cache, in plain torch (CPU and GPU).

Decodes are batched into one scaled-dot-product call over each sequence's gathered context
(on CPUs with AVX-512, our kernel reads the context in place instead: ops/cpu_kernels.py);
prefill chunks (few per step) are done one sequence at a time. Under chunked local attention
(`meta.attention_chunk_size`) a prefill's queries are split at chunk boundaries and each piece
attends causally within its own chunk; decodes arrive with chunk-local tables and key ranges.

The cache may hold a narrower dtype than the computation (bf16 K/V under fp32 compute on CPUs
without bf16 units): K/V are rounded to it on the way in and widened on the way out, and a
prompt attending to its own fresh K/V sees them rounded the same way.

In the batch-invariant mode (model/batch_invariant.py) every query row, decode or prefill, goes
through the decode kernel over its own causal context, so its order of summation depends on its
position alone, not on how the step was batched or its prompt chunked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from intaglio.attention.metadata import AttentionMetadata
from intaglio.ops.cpu_kernels import DECODE_ATTENTION_HEAD_DIMS, cpu_kernels


class TorchAttentionBackend:
    name = "torch"

    def __init__(self) -> None:
        self.batch_invariant = False  # set by model/batch_invariant.py

    def write_kv(
        self,
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,
        k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> None:
        k_cache.view(-1, *k.shape[1:]).index_copy_(0, meta.slot_mapping, k.to(k_cache.dtype))
        v_cache.view(-1, *v.shape[1:]).index_copy_(0, meta.slot_mapping, v.to(v_cache.dtype))

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
        if self.batch_invariant:
            return _rows_as_decodes(q, k_cache, v_cache, meta, scale)
        out = torch.empty_like(q)
        nd = meta.num_decode_tokens
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, meta, scale)
        window = meta.attention_chunk_size
        for chunk in meta.prefills:
            rows = slice(chunk.query_start, chunk.query_start + chunk.query_len)
            first = chunk.context_len - chunk.query_len  # position of the first query
            # The earliest key any query here sees: 0, or its chunk's start.
            start = 0 if window is None else first - first % window
            if first == 0:
                # Whole prompt in this step: attend to the fresh K/V (as the cache holds them),
                # no cache read needed.
                ctx_k, ctx_v = _as_cached(k[rows], k_cache), _as_cached(v[rows], v_cache)
            else:
                ctx_k = _gather(k_cache, chunk.block_table, start, chunk.context_len).to(q.dtype)
                ctx_v = _gather(v_cache, chunk.block_table, start, chunk.context_len).to(q.dtype)
            if window is None:
                out[rows] = _causal_attention(q[rows], ctx_k, ctx_v, scale)
                continue
            q_rows, out_rows = q[rows], out[rows]  # views: writes land in `out`
            for w0 in range(start, chunk.context_len, window):  # each local chunk reached
                w1 = min(w0 + window, chunk.context_len)
                q0 = max(w0, first)
                out_rows[q0 - first : w1 - first] = _causal_attention(
                    q_rows[q0 - first : w1 - first],
                    ctx_k[w0 - start : w1 - start],
                    ctx_v[w0 - start : w1 - start],
                    scale,
                )
        return out

    def _decode(
        self,
        q: torch.Tensor,  # [num_decodes, num_heads, head_dim]
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        tables, key_range = meta.decode_block_tables, meta.decode_key_range
        assert tables is not None and key_range is not None
        kernels = cpu_kernels() if q.device.type == "cpu" else None
        if (
            kernels is not None
            and q.dtype == torch.float32
            and q.shape[-1] in DECODE_ATTENTION_HEAD_DIMS
        ):
            return kernels.paged_decode_attention(q, k_cache, v_cache, tables, key_range, scale)
        keys = _gather_blocks(k_cache, tables).to(q.dtype)
        values = _gather_blocks(v_cache, tables).to(q.dtype)
        key_pos = torch.arange(keys.shape[2], device=q.device)
        mask = (key_pos >= key_range[:, :1]) & (key_pos < key_range[:, 1:])
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # [n, heads, 1, d]
            keys,
            values,
            attn_mask=mask[:, None, None, :],
            scale=scale,
            enable_gqa=True,
        )
        return out.squeeze(2)


def _rows_as_decodes(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Every row through the paged decode kernel: prefill rows become decode rows on their
    chunk's block table, each seeing the positions up to its own (or its local chunk's)."""
    kernels = cpu_kernels()
    assert kernels is not None, "the batch-invariant mode checked for the kernels"
    tables, ranges = [], []
    if meta.num_decode_tokens:
        assert meta.decode_block_tables is not None and meta.decode_key_range is not None
        tables.append(meta.decode_block_tables)
        ranges.append(meta.decode_key_range)
    window = meta.attention_chunk_size
    for chunk in meta.prefills:
        pos = torch.arange(chunk.context_len - chunk.query_len, chunk.context_len, device=q.device)
        lo = torch.zeros_like(pos) if window is None else pos - pos % window
        ranges.append(torch.stack((lo, pos + 1), dim=1))
        tables.append(chunk.block_table.expand(chunk.query_len, -1))
    width = max(t.shape[1] for t in tables)
    table = torch.cat([F.pad(t, (0, width - t.shape[1])) for t in tables])
    return kernels.paged_decode_attention(q, k_cache, v_cache, table, torch.cat(ranges), scale)


def _as_cached(x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """x rounded to the cache's dtype (a bf16 cache under fp32 compute), in x's dtype."""
    return x if x.dtype == cache.dtype else x.to(cache.dtype).to(x.dtype)


def _gather_blocks(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Each row's blocks, [n, num_blocks] ids -> [n, kv_heads, num_blocks * block_size, d]."""
    n, num_blocks = tables.shape
    # index_select on the flat block axis is a plain memcpy per block: faster than cache[tables].
    blocks = cache.index_select(0, tables.reshape(-1))  # [n * num_blocks, bs, kv_heads, d]
    return blocks.view(n, num_blocks * cache.shape[1], *cache.shape[2:]).transpose(1, 2)


def _gather(cache: torch.Tensor, block_table: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Cached positions [start, end) of one sequence: [end - start, kv_heads, head_dim]."""
    bs = cache.shape[1]
    first_block = start // bs
    blocks = cache.index_select(0, block_table[first_block : -(-end // bs)]).flatten(0, 1)
    return blocks[start - first_block * bs : end - first_block * bs]


def _causal_attention(
    q: torch.Tensor,  # [q_len, heads, d], the last q_len positions of the context
    k: torch.Tensor,  # [ctx_len, kv_heads, d]
    v: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    q_len, ctx_len = q.shape[0], k.shape[0]
    # [1, heads, len, d]: with a batch axis torch picks its fused CPU kernel over the math path.
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
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
    return out.squeeze(0).transpose(0, 1)
