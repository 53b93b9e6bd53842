"""Logit edits that depend on a request's history: banned tokens and the three penalties.

All functions are batched over rows; the only Python loop is over the (short, mostly empty)
per-row lists of banned tokens, which is metadata, not vocabulary.
"""

from __future__ import annotations

import torch


def token_counts(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Count occurrences of each token per row.

    token_ids: [B, L] int64, padded with `vocab_size`. Returns [B, vocab_size] int64.
    """
    num_rows = token_ids.shape[0]
    # One spare column catches the padding id so no mask is needed before the scatter.
    counts = torch.zeros(num_rows, vocab_size + 1, dtype=torch.int64, device=token_ids.device)
    counts.scatter_add_(1, token_ids, torch.ones_like(token_ids))
    return counts[:, :vocab_size]


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


def apply_penalties(
    logits: torch.Tensor,
    prompt_token_ids: torch.Tensor | None,
    output_token_ids: torch.Tensor | None,
    repetition_penalty: torch.Tensor | None,
    presence_penalty: torch.Tensor | None,
    frequency_penalty: torch.Tensor | None,
) -> torch.Tensor:
    """Apply HF repetition penalty, then OpenAI frequency/presence penalties.

    logits: [B, V] float32; token id tensors: [B, L] int64 padded with V; penalties: [B].
    Returns new [B, V] logits (the input is not modified).
    """
    vocab_size = logits.shape[1]
    output_counts = (
        token_counts(output_token_ids, vocab_size) if output_token_ids is not None else None
    )

    if repetition_penalty is not None:
        # HF formula over tokens seen anywhere (prompt or output): shrink toward zero for
        # positive logits, push further negative for negative ones.
        seen = torch.zeros_like(logits, dtype=torch.bool)
        if prompt_token_ids is not None:
            seen |= token_counts(prompt_token_ids, vocab_size) > 0
        if output_counts is not None:
            seen |= output_counts > 0
        penalty = repetition_penalty.to(logits.dtype)[:, None]
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalized, logits)

    if output_counts is not None and frequency_penalty is not None:
        logits = logits - frequency_penalty.to(logits.dtype)[:, None] * output_counts
    if output_counts is not None and presence_penalty is not None:
        logits = logits - presence_penalty.to(logits.dtype)[:, None] * (output_counts > 0)
    return logits
