"""Draft networks beside the target (speculative decoding with `--speculative-method
draft_model` or `eagle`).

Each keeps its own KV tensors but no block table of its own: it writes and reads the slots of
the target's blocks (same block ids, same positions), so the one block manager, prefix cache
and copy-on-write serve both, and a prefix-cache hit finds the draft's KV where the target's is.
Each step the drafter runs over the step's flat batch (filling its KV for the same positions as
the target), then drafts greedily after each sampled request's last emitted token, one batched
decode per draft token, into the lookahead slots the scheduler reserved.

- `DraftModel`: any smaller checkpoint on the target's tokenizer, fed the same tokens.
- `EagleDrafter`: the EAGLE head (model/eagle_head.py), fed the target's features and the next
  token of each row, predicting the target's next feature, read by the target's own lm_head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from intaglio.attention.metadata import AttentionMetadata, decode_metadata
from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.eagle_head import EagleHead
from intaglio.model.loader import load_model


class Drafter(Protocol):
    def draft(self, step: DraftStep, num: int) -> list[list[int]]:
        """Fill the drafter's KV for the step, then up to `num` drafts per sampled request."""
        ...

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None: ...


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

    def draft(self, step: DraftStep, num: int) -> list[list[int]]:
        self.model(step.input_ids, step.positions, self.kv_caches, step.meta)

        def next_state(
            tokens: torch.Tensor, _: torch.Tensor, pos: torch.Tensor, meta: AttentionMetadata
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.model(tokens, pos, self.kv_caches, meta)
            return self.model.compute_logits(hidden).argmax(dim=-1), hidden

        last = torch.tensor([e[-1] for e in step.emitted], device=self.device)
        # The last emitted token sits len(emitted) positions after the first sampled row.
        positions = [p + len(e) for p, e in zip(step.first_positions, step.emitted)]
        return _autoregress(next_state, last, None, positions, step.tables, num, self.block_size)

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        _copy(self.kv_caches, src, dst)


class EagleDrafter:
    def __init__(
        self,
        path: str | Path,
        target: DecoderForCausalLM,
        device: torch.device,
        num_blocks: int,
        block_size: int,
    ) -> None:
        self.target = target
        self.head = EagleHead.load(path, target.cfg, target.compute_dtype, device)
        self.device = device
        self.block_size = block_size
        shape = (num_blocks, block_size, self.head.num_kv_heads, self.head.head_dim)
        kv_dtype = target.cfg.dtype
        self.kv_caches = [
            (
                torch.zeros(shape, dtype=kv_dtype, device=device),
                torch.zeros(shape, dtype=kv_dtype, device=device),
            )
        ]

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.target.model.embed_tokens(tokens).to(self.target.compute_dtype)

    def draft(self, step: DraftStep, num: int) -> list[list[int]]:
        """Row q sees the target's feature at q and the token after it: the next input token
        inside a request's rows, the emitted ones at its sampled rows (rows of rejected drafts
        get a stand-in; their K/V is rewritten before anything reads it)."""
        following = torch.roll(step.input_ids, -1)
        for row0, emitted in zip(step.sample_rows, step.emitted):
            following[row0 : row0 + len(emitted)] = torch.tensor(emitted, device=self.device)
        out = self.head(
            self._embed(following), step.hidden, step.positions, self.kv_caches[0], step.meta
        )
        if num == 0:  # the KV is filled; no request is to get drafts
            return [[] for _ in step.emitted]
        last_rows = [row0 + len(e) - 1 for row0, e in zip(step.sample_rows, step.emitted)]
        features = out[last_rows]
        first = self.target.compute_logits(features).argmax(dim=-1)

        def next_state(
            tokens: torch.Tensor, feats: torch.Tensor, pos: torch.Tensor, meta: AttentionMetadata
        ) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.head(self._embed(tokens), feats, pos, self.kv_caches[0], meta)
            return self.target.compute_logits(f).argmax(dim=-1), f

        # Draft i + 1 comes from the head at the position after the emitted tokens plus i.
        positions = [p + len(e) for p, e in zip(step.first_positions, step.emitted)]
        rest = _autoregress(
            next_state, first, features, positions, step.tables, num - 1, self.block_size
        )
        return [[int(t), *r] for t, r in zip(first.tolist(), rest)]

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        _copy(self.kv_caches, src, dst)


@dataclass
class DraftStep:
    """What a drafter sees of one executed step."""

    input_ids: torch.Tensor  # [num_tokens] the step's flat batch
    positions: torch.Tensor  # [num_tokens]
    meta: AttentionMetadata
    hidden: torch.Tensor  # [num_tokens, hidden] the target's final hidden states
    # Per sampled request: its first sampled row in the flat batch, that row's position, the
    # tokens it emitted, and its block table.
    sample_rows: list[int]
    first_positions: list[int]
    emitted: list[list[int]]
    tables: list[list[int]]


def _autoregress(
    next_state: Callable[
        [torch.Tensor, torch.Tensor, torch.Tensor, AttentionMetadata],
        tuple[torch.Tensor, torch.Tensor],
    ],
    tokens: torch.Tensor,  # [rows] each row's last token
    state: torch.Tensor | None,  # [rows, hidden] a feature per row (EAGLE) or None
    positions: list[int],  # each row's position for its first draft step
    tables: list[list[int]],
    num: int,
    block_size: int,
) -> list[list[int]]:
    """Up to `num` greedy drafts per row, one batched decode each, as far as the row's block
    table has slots: row i drafts min(num, slots - position) tokens."""
    limits = [min(num, len(t) * block_size - p) for t, p in zip(tables, positions)]
    drafts: list[list[int]] = [[] for _ in positions]
    for j in range(num):
        rows = [i for i, limit in enumerate(limits) if j < limit]
        if not rows:
            break
        index = torch.tensor(rows, device=tokens.device)
        pos = np.array([positions[i] + j for i in rows], dtype=np.int64)
        meta = decode_metadata([tables[i] for i in rows], pos, block_size, tokens.device)
        feats = state[index] if state is not None else tokens  # unused by a draft model
        nxt, new_state = next_state(
            tokens[index], feats, torch.from_numpy(pos).to(tokens.device), meta
        )
        tokens = tokens.index_copy(0, index, nxt)
        if state is not None:
            state = state.index_copy(0, index, new_state)
        for i, token in zip(rows, nxt.tolist()):
            drafts[i].append(token)
    return drafts


def _copy(
    caches: list[tuple[torch.Tensor, torch.Tensor]], src: torch.Tensor, dst: torch.Tensor
) -> None:
    for k_cache, v_cache in caches:
        k_cache.index_copy_(0, dst, k_cache.index_select(0, src))
        v_cache.index_copy_(0, dst, v_cache.index_select(0, src))
