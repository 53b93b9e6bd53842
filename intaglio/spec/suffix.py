"""Suffix drafts (after SuffixDecoding): continuations of the sequence's longest matching suffix,
looked up in the sequence itself and in the recent outputs of the whole engine, chosen by vote.

Agentic and code-editing workloads repeat themselves across requests (the same file rewritten,
the same tool call shape); prompt lookup sees only one request. Here every finished output joins
a bounded corpus (oldest dropped first). The longest suffix of the context, between min_match
and max_match tokens, that occurs anywhere gives the candidate continuations; the draft follows
the most frequent next token while the share of candidates agreeing with the whole draft so far
stays at least `min_agreement`, so a context seen with many endings drafts little.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from intaglio.spec.ngram import continuation, occurrences

_SEPARATOR = -1  # between corpus entries, so no match spans two outputs
_MAX_CANDIDATES = 64  # the most recent occurrences vote; bounds the work per step


class SuffixProposer:
    def __init__(
        self,
        min_match: int = 2,
        max_match: int = 16,
        max_corpus_tokens: int = 1 << 16,
        min_agreement: float = 0.3,
    ) -> None:
        self.min_match = min_match
        self.max_match = max_match
        self.max_corpus_tokens = max_corpus_tokens
        self.min_agreement = min_agreement
        self._outputs: deque[np.ndarray] = deque()
        self._corpus = np.empty(0, dtype=np.int64)
        self._num_corpus_tokens = 0

    def propose(self, key: str, token_ids: Sequence[int], max_tokens: int) -> list[int]:
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.max_match, len(tokens)), self.min_match - 1, -1):
            pattern = tokens[-n:]
            own = occurrences(tokens, pattern) + n  # continuation starts in the sequence itself
            shared = occurrences(self._corpus, pattern) + n
            if not len(own) and not len(shared):
                continue
            candidates = [continuation(tokens, s, max_tokens) for s in own[-_MAX_CANDIDATES:]]
            candidates += [self._corpus[s : s + max_tokens] for s in shared[-_MAX_CANDIDATES:]]
            return self._vote([c for c in candidates if len(c)], max_tokens)
        return []

    def _vote(self, candidates: list[np.ndarray], max_tokens: int) -> list[int]:
        total = len(candidates)
        draft: list[int] = []
        while candidates and len(draft) < max_tokens:
            nexts = np.array([c[len(draft)] for c in candidates])
            values, counts = np.unique(nexts[nexts != _SEPARATOR], return_counts=True)
            if not len(values):
                break
            best = int(values[counts.argmax()])
            candidates = [c for c in candidates if c[len(draft)] == best]
            if len(candidates) < self.min_agreement * total:
                break
            draft.append(best)
            candidates = [c for c in candidates if len(c) > len(draft)]
        return draft

    def finish(self, key: str, output_token_ids: Sequence[int]) -> None:
        if not output_token_ids:
            return
        self._outputs.append(np.asarray(output_token_ids, dtype=np.int64))
        self._num_corpus_tokens += len(output_token_ids)
        while self._num_corpus_tokens > self.max_corpus_tokens and len(self._outputs) > 1:
            self._num_corpus_tokens -= len(self._outputs.popleft())
        parts = [p for out in self._outputs for p in (out, np.array([_SEPARATOR]))]
        self._corpus = np.concatenate(parts)
