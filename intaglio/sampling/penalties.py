"""Logit edits that depend on a request's history: banned tokens and the three penalties.

All functions are batched over rows; the only Python loop is over the (short, mostly empty)
per-row lists of banned tokens, which is metadata, not vocabulary.
"""

from __future__ import annotations

import torch


def history_runs(
    token_ids: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's history tokens sorted, so equal tokens form runs.

    token_ids: [B, L] int64, padded with `vocab_size`. Returns (ids, order, run, real), each
    [B, L]: the sorted ids, with padding pointing at the row's first token (the last of the
    vocabulary in an empty row) so that gathers and scatters there repeat a real entry; the
    sort's permutation; each position's run number (padding: run 0, its first token's); and
    whether a position holds a real token.
    """
    ids, order = token_ids.sort(dim=-1)
    real = ids < vocab_size
    starts = torch.ones_like(real)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    run = torch.where(real, starts.cumsum(dim=-1) - 1, 0)
    safe = torch.where(real, ids, ids[:, :1].clamp_max(vocab_size - 1))
    return safe, order, run, real


def scatter_history_(
    logits: torch.Tensor,
    ids: torch.Tensor,
    real: torch.Tensor,
    values: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> None:
    """Write the new logits `values` [R, L] at history tokens `ids` (from history_runs) in
    place, in logits' rows `rows` [R, L] (None: the first R rows, in order); padding writes its
    row's first entry again, so every write to a token is the same value."""
    values = torch.where(real, values, values[:, :1])
    if rows is None:
        logits.scatter_(1, ids, values)
    else:
        logits.index_put_((rows, ids), values)


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
) -> None:
    """Apply HF repetition penalty, then OpenAI frequency/presence penalties, in place.

    logits: [B, V] float32; token id tensors: [B, L] int64 padded with V; penalties: [B].
    Only the tokens of each row's history are read and written (histories are hundreds of
    tokens, vocabularies 10^5).
    """
    vocab_size = logits.shape[1]
    # Repetition counts the prompt too; frequency and presence count the output only.
    parts = [output_token_ids] if output_token_ids is not None else []
    if repetition_penalty is not None and prompt_token_ids is not None:
        parts.append(prompt_token_ids)
    if not parts:
        return
    history = torch.cat(parts, dim=1)
    ids, order, run, real = history_runs(history, vocab_size)
    from_output = torch.zeros_like(history, dtype=torch.bool)
    if output_token_ids is not None:
        from_output[:, : output_token_ids.shape[1]] = True
    from_output = from_output.gather(1, order) & real
    # Each position: how often its token occurs in the output (its run's count).
    per_run = torch.zeros_like(run).scatter_add_(1, run, from_output.long())
    counts = per_run.gather(1, run)

    values = logits.gather(1, ids)
    if repetition_penalty is not None:
        # HF formula over tokens seen anywhere (prompt or output): shrink toward zero for
        # positive logits, push further negative for negative ones.
        penalty = repetition_penalty.to(logits.dtype)[:, None]
        penalized = torch.where(values > 0, values / penalty, values * penalty)
        values = torch.where(real, penalized, values)
    if frequency_penalty is not None:
        values = values - frequency_penalty.to(logits.dtype)[:, None] * counts
    if presence_penalty is not None:
        values = values - presence_penalty.to(logits.dtype)[:, None] * (counts > 0)
    scatter_history_(logits, ids, real, values)
