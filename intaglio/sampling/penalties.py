"""Logit edits that depend on a request's history: banned tokens and the three penalties.

All functions are batched over rows; the only Python loop is over the (short, mostly empty)
per-row lists of banned tokens, which is metadata, not vocabulary.
"""

from __future__ import annotations

import torch


def history_slots(token_ids: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each position of a history reads and writes the logits.

    token_ids: [R, L] int64, padded with `vocab_size`. Returns (slots, has): the token of each
    position, with padding pointing at the row's largest token (token 0 in a row without any),
    so that a value computed per token from gathers at the slots is the same at every position
    of that token and a scatter writes each token once, whatever the duplicates; and [R, 1]
    whether the row holds a token at all.
    """
    real = token_ids < vocab_size
    anchor = torch.where(real, token_ids, -1).amax(dim=-1, keepdim=True)
    return torch.where(real, token_ids, anchor.clamp_min(0)), anchor >= 0


def per_token(
    table: torch.Tensor,
    token_ids: torch.Tensor,
    values: torch.Tensor,
    slots: torch.Tensor,
    how: str,
) -> torch.Tensor:
    """Reduce `values` [R, L] over equal tokens of each row (`how`: "sum" or "amax", values >= 0
    for amax), read back at `slots` [R, L]. `table` is a zeroed [>= R, V + 1] scratch (the
    last column catches the padding id V); it is left zeroed."""
    scratch = table[: token_ids.shape[0]]
    scratch.scatter_reduce_(1, token_ids, values, how)
    out = scratch.gather(1, slots)
    scratch.scatter_(1, token_ids, 0.0)
    return out


def apply_banned_tokens(logits: torch.Tensor, banned_token_ids: list[list[int]]) -> None:
    """Set banned (row, token) pairs to -inf in place. logits: [B, V]."""
    rows: list[int] = []
    cols: list[int] = []
    for row, banned in enumerate(banned_token_ids):
        if banned:
            rows.extend([row] * len(banned))
            cols.extend(banned)
    if not rows:
        return
    device = logits.device
    row_idx = torch.tensor(rows, dtype=torch.int64, device=device)
    col_idx = torch.tensor(cols, dtype=torch.int64, device=device)
    logits[row_idx, col_idx] = float("-inf")


def apply_logit_bias(logits: torch.Tensor, logit_bias: list[tuple[tuple[int, float], ...]]) -> None:
    """Add each row's (token, bias) pairs to its logits in place. logits: [B, V]."""
    rows = [row for row, pairs in enumerate(logit_bias) for _ in pairs]
    if not rows:
        return
    device = logits.device
    cols = [token for pairs in logit_bias for token, _ in pairs]
    values = [bias for pairs in logit_bias for _, bias in pairs]
    logits.index_put_(
        (
            torch.tensor(rows, dtype=torch.int64, device=device),
            torch.tensor(cols, dtype=torch.int64, device=device),
        ),
        torch.tensor(values, dtype=logits.dtype, device=device),
        accumulate=True,
    )


def apply_penalties_(
    logits: torch.Tensor,
    prompt_token_ids: torch.Tensor | None,
    output_token_ids: torch.Tensor | None,
    repetition_penalty: torch.Tensor | None,
    presence_penalty: torch.Tensor | None,
    frequency_penalty: torch.Tensor | None,
    table: torch.Tensor,
) -> None:
    """Apply HF repetition penalty, then OpenAI frequency/presence penalties, in place.

    logits: [B, V] float32; token id tensors: [B, L] int64 padded with V; penalties: [B];
    table: a zeroed [>= B, V + 1] float32 scratch (see per_token). Only the tokens of each row's
    history are read and written (histories are hundreds of tokens, vocabularies 10^5).
    """
    vocab_size = logits.shape[1]
    # Repetition counts the prompt too; frequency and presence count the output only.
    parts = [output_token_ids] if output_token_ids is not None else []
    if repetition_penalty is not None and prompt_token_ids is not None:
        parts.append(prompt_token_ids)
    if not parts:
        return
    history = torch.cat(parts, dim=1)
    slots, has = history_slots(history, vocab_size)
    counts = torch.zeros_like(slots, dtype=torch.float32)
    if output_token_ids is not None:
        ones = torch.ones_like(output_token_ids, dtype=torch.float32)
        counts = per_token(table, output_token_ids, ones, slots, "sum")

    values = logits.gather(1, slots)
    if repetition_penalty is not None:
        # HF formula over tokens seen anywhere (prompt or output): shrink toward zero for
        # positive logits, push further negative for negative ones.
        penalty = repetition_penalty.to(logits.dtype)[:, None]
        penalized = torch.where(values > 0, values / penalty, values * penalty)
        values = torch.where(has, penalized, values)
    if frequency_penalty is not None:
        values = values - frequency_penalty.to(logits.dtype)[:, None] * counts
    if presence_penalty is not None:
        values = values - presence_penalty.to(logits.dtype)[:, None] * (counts > 0)
    logits.scatter_(1, slots, values)
