"""AttentionMetadata: what one engine step's flat batch looks like to attention layers.

The executor lays a step out as one flat run of tokens: first every decode sequence (one query
token each), then each prefill chunk (many query tokens). K/V of the new tokens go to
`slot_mapping` in the paged cache; attention then reads each sequence's whole context from its
block table.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    decode_mask: torch.Tensor | None  # [num_decodes, 1, 1, padded_context] bool: True = attend
    prefills: list[PrefillChunk]
