"""SequenceSamplerState: what one sequence's sampler carries from step to step.

The engine keeps one per sequence (`Request.sampler_state`): it survives preemption with the
request, and a fork continues from a copy of its parent's. It holds the request's words resolved
to token ids once (bad words, DRY breakers) and Mirostat's mu, which the sampler updates after
each token it draws (`Sampler.advance`). DRY needs no state of its own: it reads the history.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from intaglio.errors import RequestError
from intaglio.sampling.confidence import ConfidenceState
from intaglio.sampling.dry import DryBreakers
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.thinking import (
    ThinkingMarkers,
    ThinkingState,
    closes_thinking,
    opens_thinking,
)


@dataclass
class SequenceSamplerState:
    bad_words: tuple[tuple[int, ...], ...] = ()  # token sequences that may not be completed
    dry_breakers: DryBreakers | None = None
    mirostat_mu: float = float("inf")  # +inf: Mirostat off
    thinking: ThinkingState | None = None  # thinking budgets
    confidence: ConfidenceState | None = None  # per-token confidences, early stop

    @classmethod
    def for_request(
        cls,
        params: SamplingParams,
        tokenizer: Any,
        prompt_token_ids: Sequence[int] = (),
        markers: ThinkingMarkers | None = None,
    ) -> SequenceSamplerState | None:
        """The initial state, or None when no sampler of this request needs one. `markers`:
        the engine's think markers as token ids (None without a reasoning parser)."""
        if not (
            params.bad_words
            or params.uses_dry
            or params.uses_mirostat
            or params.uses_thinking_budget
            or params.confidence_top_k
            or (params.structured is not None and markers is not None)
        ):
            return None
        if tokenizer is None and (params.bad_words or params.uses_dry):
            name = "bad_words" if params.bad_words else "dry_sequence_breakers"
            raise RequestError(f"{name} needs the model's tokenizer", name)
        state = cls()
        if params.confidence_top_k:
            k = params.confidence_top_k
            state.confidence = ConfidenceState(
                k, params.confidence_window, params.confidence_threshold
            )
        if params.uses_thinking_budget or params.structured is not None:
            state.thinking = _thinking(params, tokenizer, list(prompt_token_ids), markers)
        if params.bad_words:
            state.bad_words = bad_word_token_ids(tokenizer, params.bad_words)
        if params.uses_dry:
            state.dry_breakers = dry_breakers(tokenizer, params.dry_sequence_breakers)
        if params.uses_mirostat:
            state.mirostat_mu = 2.0 * params.mirostat_tau  # llama.cpp's starting point
        return state

    @property
    def grammar_applies(self) -> bool:
        """A structured request's grammar constrains the next token: always, except for a
        reasoning model before its thinking has ended (the grammar is for the answer)."""
        return self.thinking is None or self.thinking.ended

    @property
    def last_token_in_answer(self) -> bool:
        return self.thinking is None or self.thinking.last_in_answer

    @property
    def changes_per_token(self) -> bool:
        """Mirostat's mu, a thinking budget and confidence move with every token drawn, so the
        target at a draft's position depends on the drafts before it being kept: such a
        sequence is verified one token per step (speculation gives it no drafts)."""
        return (
            self.mirostat_mu != float("inf")
            or self.thinking is not None
            or self.confidence is not None
        )

    def continue_from(self, parent: SequenceSamplerState | None) -> None:
        """A fork goes on from its parent's Mirostat state (when both use Mirostat)."""
        inf = float("inf")
        if parent is not None and parent.mirostat_mu != inf and self.mirostat_mu != inf:
            self.mirostat_mu = parent.mirostat_mu
        if parent is not None and parent.confidence is not None and self.confidence is not None:
            self.confidence.values = list(parent.confidence.values)  # one per inherited token
        if parent is not None and parent.thinking is not None and self.thinking is not None:
            self.thinking = dataclasses.replace(
                parent.thinking,
                budget=self.thinking.budget,
                min_tokens=self.thinking.min_tokens,
                cue=self.thinking.cue,
            )


def _thinking(
    params: SamplingParams, tokenizer: Any, prompt: list[int], markers: ThinkingMarkers | None
) -> ThinkingState:
    name = (
        "thinking_token_budget"
        if params.thinking_token_budget is not None
        else "min_thinking_tokens"
    )
    if markers is None or tokenizer is None:
        raise RequestError(f"{name} needs an engine started with a reasoning parser", name)
    cue = ()
    if params.uses_thinking_budget:
        cue = tuple(tokenizer.encode(params.thinking_continuation, add_special_tokens=False))
        if not cue:
            raise RequestError(
                "thinking_continuation encodes to no tokens", "thinking_continuation"
            )
    return ThinkingState(
        markers,
        params.thinking_token_budget,
        params.min_thinking_tokens,
        cue,
        active=opens_thinking(prompt, markers),
        ended=closes_thinking(prompt, markers),
    )


def bad_word_token_ids(tokenizer: Any, words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """vLLM's definition: each word as tokenized alone and with a leading space (the latter when
    it gives a different first token and as many tokens)."""
    out: list[tuple[int, ...]] = []
    for word in words:
        plain = tuple(tokenizer.encode(word, add_special_tokens=False))
        spaced = tuple(tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
        if plain:
            out.append(plain)
        if spaced and (not plain or (spaced[0] != plain[0] and len(spaced) == len(plain))):
            out.append(spaced)
    return tuple(out)


# Per tokenizer: each breaker list resolved once (decoding the vocabulary takes a while).
_BREAKERS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], DryBreakers]] = (
    weakref.WeakKeyDictionary()
)


def dry_breakers(tokenizer: Any, breakers: tuple[str, ...]) -> DryBreakers:
    """The breakers as token ids (llama.cpp's definition, see dry.py), cached per list."""
    cache = _BREAKERS.setdefault(tokenizer, {})
    if breakers not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        single = tuple(i for i, text in enumerate(texts) if any(b in text for b in breakers))
        sequences = [tuple(tokenizer.encode(b, add_special_tokens=False)) for b in breakers]
        cache[breakers] = DryBreakers(single, tuple(ids for ids in sequences if len(ids) > 1))
    return cache[breakers]


def thinking_markers(markers: tuple[str, str] | None, tokenizer: Any) -> ThinkingMarkers | None:
    """The engine's think markers (EngineConfig.thinking_markers) as token ids."""
    if markers is None or tokenizer is None:
        return None
    start, end = (tuple(tokenizer.encode(m, add_special_tokens=False)) for m in markers)
    if not start or not end:
        raise ValueError(f"the reasoning markers {markers} encode to no tokens")
    return ThinkingMarkers(start, end)
