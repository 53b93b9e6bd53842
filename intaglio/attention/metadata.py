"""AttentionMetadata: what one engine step's flat batch looks like to attention layers.

The executor lays a step out as one flat run of tokens: first every decode sequence (one query
token each), then each prefill chunk (many query tokens). K/V of the new tokens go to
`slot_mapping` in the paged cache; attention then reads each sequence's whole context from its
block table.

Chunked local attention (Llama 4's RoPE layers) sees a different view of the same step:
`chunked_local_metadata` derives it once per step for all such layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass
class PrefillChunk:
    query_start: int  # first row of this chunk in the flat batch
    query_len: int  # new tokens of this sequence this step
    context_len: int  # tokens in the KV cache once this step's are written (prefix + chunk)
    block_table: torch.Tensor  # [num_blocks_used] int64


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] int64: flat cache slot of each new token
    num_decode_tokens: int  # the first rows of the batch, one per decode sequence
    decode_block_tables: torch.Tensor | None  # [num_decodes, max_blocks] int64 (padded with 0)
    # [num_decodes, 2] int64: row i attends to the positions [lo, hi) of its block table row.
    decode_key_range: torch.Tensor | None
    prefills: list[PrefillChunk]
    # Chunked local attention: a query at position p sees only positions [p - p % C, p].
    attention_chunk_size: int | None = None


def decode_rows(
    block_tables: Sequence[Sequence[int]],  # per row, indexed by position // block_size
    positions: np.ndarray,  # [rows] int64: each row's own position
    block_size: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(decode_block_tables, decode_key_range) for rows that each see positions [0, own]."""
    lens = positions + 1
    tables = np.zeros((len(lens), -(-int(lens.max()) // block_size)), dtype=np.int64)
    for row, table in enumerate(block_tables):
        blocks = table[: tables.shape[1]]
        tables[row, : len(blocks)] = blocks
    ranges = np.stack((np.zeros_like(lens), lens), axis=1)
    return torch.from_numpy(tables).to(device), torch.from_numpy(ranges).to(device)


def decode_metadata(
    block_tables: Sequence[Sequence[int]],
    positions: np.ndarray,
    block_size: int,
    device: torch.device | str,
) -> AttentionMetadata:
    """A step of single-token rows (draft models' autoregressive steps): row i writes its K/V
    at its position's slot and attends to everything before it."""
    slots = [
        t[p // block_size] * block_size + p % block_size for t, p in zip(block_tables, positions)
    ]
    tables, key_range = decode_rows(block_tables, positions, block_size, device)
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        num_decode_tokens=len(positions),
        decode_block_tables=tables,
        decode_key_range=key_range,
        prefills=[],
    )


def chunked_local_metadata(
    meta: AttentionMetadata,
    positions: torch.Tensor,  # [num_tokens] the step's positions, decodes first
    chunk_size: int,
    block_size: int,
) -> AttentionMetadata:
    """The step as chunked local attention layers see it.

    Decode rows get block tables that start at the block holding their chunk's first token
    (at most (C - 1) // block_size + 2 blocks) and a key range of exactly that chunk, so a decode
    reads O(C) keys whatever the context length; the backend's decode path is unchanged.
    Block tables stay indexed by logical block (position // block_size), so a KV manager that
    frees the blocks before a sequence's current chunk (or keeps these layers' KV in a block
    table of their own) hands the same layout in. Prefill chunks keep their tables; the
    backend splits their queries at chunk boundaries (`attention_chunk_size`).
    """
    nd = meta.num_decode_tokens
    if not nd:
        return replace(meta, attention_chunk_size=chunk_size)
    tables = meta.decode_block_tables
    assert tables is not None
    q_pos = positions[:nd]  # [nd]: each decode's own position, context_len - 1
    chunk_start = q_pos - q_pos % chunk_size
    first_block = chunk_start // block_size
    width = min(tables.shape[1], (chunk_size - 1) // block_size + 2)
    offsets = torch.arange(width, device=tables.device)
    cols = (first_block[:, None] + offsets[None, :]).clamp(max=tables.shape[1] - 1)
    local_tables = tables.gather(1, cols)  # [nd, width]
    table_start = first_block * block_size  # the position of the local table's first slot
    key_range = torch.stack((chunk_start - table_start, q_pos + 1 - table_start), dim=1)
    return replace(
        meta,
        decode_block_tables=local_tables,
        decode_key_range=key_range,
        attention_chunk_size=chunk_size,
    )
