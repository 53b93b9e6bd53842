"""DRY ("don't repeat yourself"), with llama.cpp's definition, batched over rows.

For a history h (prompt and output, the last `dry_penalty_last_n` tokens), let L(j) be the length
of the longest common suffix of h[:j+1] and h (overlaps allowed), capped at `rep_limit`: the
number of tokens after the last sequence breaker. Emitting h[j+1] would extend that repeat, so
token t is penalized by multiplier * base ** (max L(j) over j with h[j+1] = t, minus
allowed_length) where that maximum is >= allowed_length. Single-token breakers are never
penalized, and the exponent is clamped so the penalty stays finite in float32.

Sequence breakers, as in llama.cpp, are strings: every token whose text contains one is a
single-token breaker, and a breaker that the tokenizer splits into several tokens also breaks
where that token sequence occurs. (llama.cpp also matches tokens that end with a breaker's
prefix; that refinement is left out.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from intaglio.sampling.penalties import history_slots, per_token

# Largest x with exp(x) finite in float32: the exponent is clamped to stay below it.
_FLOAT_MAX_LOG = 88.7228391


@dataclass(frozen=True)
class DryBreakers:
    """A request's sequence breakers as token ids, resolved once per breaker list."""

    single: tuple[int, ...]  # tokens whose text contains a breaker
    sequences: tuple[tuple[int, ...], ...]  # breakers the tokenizer splits into several tokens


@dataclass
class DryRows:
    """The DRY settings of the rows that use it, gathered for one step."""

    rows: list[int]  # batch rows with dry_multiplier > 0
    history: torch.Tensor  # [R, N] int64, right-aligned, padded with -1 on the left
    multiplier: torch.Tensor  # [R] float32
    base: torch.Tensor  # [R] float32
    allowed_length: torch.Tensor  # [R] int64
    breakers: list[DryBreakers]  # per row

    @classmethod
    def build(
        cls,
        rows: list[int],
        histories: Sequence[Sequence[int] | np.ndarray],
        multiplier: list[float],
        base: list[float],
        allowed_length: list[int],
        breakers: list[DryBreakers],
        device: torch.device | str,
    ) -> DryRows:
        width = max((len(h) for h in histories), default=0)
        history = np.full((len(histories), width), -1, dtype=np.int64)
        for i, h in enumerate(histories):
            if len(h):
                history[i, width - len(h) :] = h
        return cls(
            rows,
            torch.from_numpy(history).to(device),
            torch.tensor(multiplier, dtype=torch.float32, device=device),
            torch.tensor(base, dtype=torch.float32, device=device),
            torch.tensor(allowed_length, dtype=torch.int64, device=device),
            breakers,
        )


def _groups(
    breakers: list[DryBreakers], vocab_size: int, device: torch.device
) -> list[tuple[DryBreakers, torch.Tensor, torch.Tensor]]:
    """Rows sharing a breaker set (usually all): (breakers, row index, breaker table), where
    the table is [V + 1] bool, True at single-token breakers (the last entry: padding -1)."""
    rows: dict[DryBreakers, list[int]] = {}
    for row, b in enumerate(breakers):
        rows.setdefault(b, []).append(row)
    out = []
    for b, r in rows.items():
        table = torch.zeros(vocab_size + 1, dtype=torch.bool, device=device)
        table[torch.tensor(b.single, dtype=torch.int64, device=device)] = True
        out.append((b, torch.tensor(r, dtype=torch.int64, device=device), table))
    return out


def _breaker_ends(
    history: torch.Tensor, groups: list[tuple[DryBreakers, torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """[R, N] bool: a sequence breaker ends at this position."""
    ends = torch.zeros_like(history, dtype=torch.bool)
    for b, index, table in groups:
        h = history.index_select(0, index)
        found = table[h]  # padding (-1) reads the table's last entry, False
        for seq in b.sequences:  # rare: a breaker the tokenizer splits
            n = len(seq)
            if n > h.shape[1]:
                continue
            match = torch.ones_like(h[:, n - 1 :], dtype=torch.bool)
            for offset, token in enumerate(seq):
                match &= h[:, offset : h.shape[1] - n + 1 + offset] == token
            found[:, n - 1 :] |= match
        ends.index_copy_(0, index, found)
    return ends


def apply_dry_(logits: torch.Tensor, d: DryRows, table: torch.Tensor) -> None:
    """Subtract DRY's penalties from the rows d.rows of logits [B, V], in place. Only the
    tokens that follow a repeat in a row's history are read and written; table: a zeroed
    [>= R, V + 1] float32 scratch (see penalties.per_token)."""
    vocab_size = logits.shape[1]
    h = d.history
    num_rows, width = h.shape
    if width < 2:
        return
    valid = h >= 0
    positions = torch.arange(width, device=h.device)
    # rep_limit: tokens after the last breaker (the whole window when there is none).
    groups = _groups(d.breakers, vocab_size, h.device)
    ends = _breaker_ends(h, groups) & valid
    last_end = torch.where(ends, positions, -1).amax(dim=1)
    window = valid.sum(dim=1)
    rep_limit = torch.where(last_end >= 0, width - 1 - last_end, window)
    # Exponents past this saturate the penalty, so longer matches need not be measured.
    max_exponent = [
        int(_FLOAT_MAX_LOG / math.log(b)) if b > 1.000001 else width for b in d.base.tolist()
    ]
    cap = min(
        int(rep_limit.max()), max(a + e for a, e in zip(d.allowed_length.tolist(), max_exponent))
    )
    # length[:, j]: common suffix length of h[:j+1] and h, for j in [0, width - 2].
    length = torch.zeros(num_rows, width - 1, dtype=torch.int64, device=h.device)
    run = valid[:, : width - 1].clone()
    for i in range(cap):
        eq = torch.zeros_like(run)
        eq[:, i:] = h[:, : width - 1 - i] == h[:, width - 1 - i, None]
        run &= eq & (i < rep_limit)[:, None]
        if not bool(run.any()):
            break
        length += run
    # A repeat shorter than allowed_length after the last breaker: nothing to penalize.
    allowed = d.allowed_length[:, None]
    extends = (length >= allowed) & (rep_limit[:, None] >= allowed)
    exponent = torch.minimum(
        (length - allowed).clamp_min(0), torch.tensor(max_exponent, device=h.device)[:, None]
    )
    values = torch.where(extends, d.multiplier[:, None] * d.base[:, None] ** exponent.float(), 0.0)
    # Each token that would extend a repeat takes the longest repeat it extends (the penalty
    # grows with the length, so the largest penalty); a single-token breaker is never penalized.
    next_token = torch.where(extends, h[:, 1:], vocab_size)
    for _, index, breaker in groups:
        rows = next_token.index_select(0, index)
        next_token.index_copy_(0, index, torch.where(breaker[rows], vocab_size, rows))
    slots, _ = history_slots(next_token, vocab_size)
    largest = per_token(table, next_token, values, slots, "amax")
    rows = torch.tensor(d.rows, dtype=torch.int64, device=logits.device)[:, None].expand_as(slots)
    logits.index_put_((rows, slots), logits[rows, slots] - largest)
