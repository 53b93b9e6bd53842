"""A draft model beside the target (speculative decoding with `--speculative-method
draft_model`): any smaller checkpoint on the target's tokenizer.

It keeps its own KV tensors but no block table of its own: it writes and reads the slots of the
target's blocks (same block ids, same positions), so the one block manager, prefix cache and
copy-on-write serve both, and a prefix-cache hit finds the draft's KV where the target's is.
Each step it runs over the step's flat batch (the same tokens and positions as the target,
filling its KV), then drafts greedily from each sampled request's last emitted token, one
batched decode per draft token, into the lookahead slots the scheduler reserved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from intaglio.attention.metadata import AttentionMetadata, decode_metadata
from intaglio.model.loader import load_model


class DraftModel:
    def __init__(
        self,
        path: str | Path,
        dtype: str,
        device: torch.device,
        num_blocks: int,
        block_size: int,
        target_vocab_size: int,
    ) -> None:
        self.model = load_model(path, dtype, str(device))
        cfg = self.model.cfg
        if cfg.vocab_size != target_vocab_size:
            raise ValueError(
                f"the draft model's vocabulary ({cfg.vocab_size} tokens) differs from the "
                f"target's ({target_vocab_size}); a draft must share the target's tokenizer"
            )
        if cfg.attention_chunk_size is not None:
            raise ValueError("a draft model with chunked local attention is not supported")
        self.device = device
        self.block_size = block_size
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv_caches = [
            (
                torch.zeros(shape, dtype=cfg.dtype, device=device),
                torch.zeros(shape, dtype=cfg.dtype, device=device),
            )
            for _ in range(cfg.num_layers)
        ]

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> None:
        """Fill the draft's KV for the step's tokens (the target's flat batch)."""
        self.model(input_ids, positions, self.kv_caches, meta)

    def propose(
        self, last_tokens: list[int], positions: list[int], tables: list[list[int]], num: int
    ) -> list[list[int]]:
        """Up to `num` greedy drafts after each row's last token (at its position), as far as
        its block table has slots: row i gets min(num, slots - position) drafts."""
        bs = self.block_size
        limits = [min(num, len(t) * bs - p) for t, p in zip(tables, positions)]
        drafts: list[list[int]] = [[] for _ in last_tokens]
        rows = [i for i, limit in enumerate(limits) if limit > 0]
        tokens = [last_tokens[i] for i in rows]
        for j in range(num):
            rows_now = [k for k, i in enumerate(rows) if j < limits[i]]
            if not rows_now:
                break
            pos = np.array([positions[rows[k]] + j for k in rows_now], dtype=np.int64)
            meta = decode_metadata([tables[rows[k]] for k in rows_now], pos, bs, self.device)
            ids = torch.tensor([tokens[k] for k in rows_now], device=self.device)
            hidden = self.model(ids, torch.from_numpy(pos).to(self.device), self.kv_caches, meta)
            nxt = self.model.compute_logits(hidden).argmax(dim=-1).tolist()
            for k, token in zip(rows_now, nxt):
                drafts[rows[k]].append(token)
                tokens[k] = token
        return drafts

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        for k_cache, v_cache in self.kv_caches:
            k_cache.index_copy_(0, dst, k_cache.index_select(0, src))
            v_cache.index_copy_(0, dst, v_cache.index_select(0, src))
