"""The proposer interface and the engine's choice of proposer (`--speculative-method`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from intaglio.config import MODEL_DRAFT_METHODS, SPECULATIVE_METHODS


class Proposer(Protocol):
    def propose(self, key: str, token_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Up to max_tokens draft tokens to follow token_ids (a request's prompt and output);
        `key` names the sequence, for proposers that keep state per sequence."""
        ...

    def finish(self, key: str, output_token_ids: Sequence[int]) -> None:
        """The sequence ended with this output; forget its state (and learn from it)."""
        ...


def build_proposer(method: str, min_match: int, max_match: int) -> Proposer | None:
    """The lookup proposer `method` names; None for a draft network (the executor runs it)."""
    if method == "ngram":
        from intaglio.spec.ngram import NgramProposer

        return NgramProposer(min_match, max_match)
    if method == "suffix":
        from intaglio.spec.suffix import SuffixProposer

        return SuffixProposer(min_match, max_match)
    if method in MODEL_DRAFT_METHODS:
        return None
    raise ValueError(f"unknown speculative method {method!r}; choose one of {SPECULATIVE_METHODS}")
