"""Prompt lookup (n-gram) drafts: the tokens that followed the latest earlier occurrence of the
sequence's last n tokens, for the longest n in [min_match, max_match] that occurs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def occurrences(corpus: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Ascending start positions of pattern in corpus that leave at least one token after it
    (so a sequence's own last n tokens never match themselves)."""
    n = len(pattern)
    if len(corpus) <= n:
        return np.empty(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(corpus[:-1], n)
    return np.flatnonzero((windows == pattern).all(axis=1))


def continuation(tokens: np.ndarray, start: int, num: int) -> np.ndarray:
    """num tokens from tokens[start] on, as the repeat that the match implies: past the end of
    the sequence it continues with its own drafts (period len - start), so a loop near the end
    (a repeated line, a run of one token) still drafts num tokens."""
    period = len(tokens) - start
    return tokens[start + np.arange(num) % period]


class NgramProposer:
    def __init__(self, min_match: int = 2, max_match: int = 5) -> None:
        self.min_match = min_match
        self.max_match = max_match

    def propose(self, key: str, token_ids: Sequence[int], max_tokens: int) -> list[int]:
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.max_match, len(tokens) - 1), self.min_match - 1, -1):
            found = occurrences(tokens, tokens[-n:])
            if len(found):
                start = int(found[-1]) + n  # the latest occurrence: the nearest context
                return continuation(tokens, start, max_tokens).tolist()
        return []

    def finish(self, key: str, output_token_ids: Sequence[int]) -> None:
        pass  # stateless
