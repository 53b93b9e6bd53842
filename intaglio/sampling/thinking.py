"""Thinking budgets for reasoning models (budget forcing, after s1), at the token level.

A sequence is thinking from its start marker (or from its first token when the prompt left a
think block open) until its end marker. `thinking_token_budget`: once that many thinking tokens
are out, the end marker is forced, then the answer follows. `min_thinking_tokens`: before that
many, the end marker's first token is replaced by the continuation cue ("Wait"): its
probability moves to the cue's first token, and the rest of a cue of several tokens is forced
after it. Both are edits of the target distribution, so they live in the sampler's chain and
speculative verification sees them too. The state moves with each accepted token (`advance`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThinkingMarkers:
    start: tuple[int, ...]  # token ids of the start marker
    end: tuple[int, ...]


@dataclass
class ThinkingState:
    markers: ThinkingMarkers
    budget: int | None  # thinking tokens before the end marker is forced; None: no limit
    min_tokens: int  # thinking tokens before the end marker is allowed
    cue: tuple[int, ...]  # what replaces an early end marker
    active: bool  # inside a think block
    spent: int = 0  # thinking tokens so far (the end marker's last token not counted)
    forced: tuple[int, ...] = ()  # tokens that must come next (rest of the end marker or cue)
    tail: tuple[int, ...] = field(default=())  # the last tokens, to see multi-token markers
    # Structured output applies to the answer only: the tokens after an end marker.
    ended: bool = False  # an end marker has closed the thinking (in the prompt or the output)
    last_in_answer: bool = False  # the token last appended came after it

    def forced_token(self) -> int | None:
        """The token this step must produce, if any."""
        if self.forced:
            return self.forced[0]
        if self.active and self.budget is not None and self.spent >= self.budget:
            return self.markers.end[0]
        return None

    def replaces_end(self) -> bool:
        """True while an end marker would come too early (its first token becomes the cue's)."""
        return self.active and self.spent < self.min_tokens

    def advance(self, token: int) -> None:
        """After `token` was appended to the output."""
        self.last_in_answer = self.ended
        width = max(len(self.markers.start), len(self.markers.end))
        self.tail = (*self.tail, token)[-width:]
        if self.forced:
            self.forced = self.forced[1:]
        elif self.active and self.budget is not None and self.spent >= self.budget:
            self.forced = self.markers.end[1:]  # the first token was forced: the rest follows
        elif self.replaces_end() and token == self.cue[0]:
            self.forced = self.cue[1:]
        if _ends_with(self.tail, self.markers.end):
            self.active, self.ended = False, True
        elif self.active:
            self.spent += 1
        elif _ends_with(self.tail, self.markers.start):
            self.active, self.spent = True, 0


def closes_thinking(prompt_token_ids: list[int], markers: ThinkingMarkers) -> bool:
    """True when the prompt's last marker is an end marker (thinking done, or switched off)."""
    last_end = _last_index(prompt_token_ids, markers.end)
    return last_end >= 0 and last_end > _last_index(prompt_token_ids, markers.start)


def answer_start(output_token_ids: list[int], markers: ThinkingMarkers) -> int | None:
    """Where the answer begins in an output: after its last end marker (None: not yet)."""
    last_end = _last_index(output_token_ids, markers.end)
    return None if last_end < 0 else last_end + len(markers.end)


def _ends_with(tail: tuple[int, ...], marker: tuple[int, ...]) -> bool:
    return len(tail) >= len(marker) and tail[len(tail) - len(marker) :] == marker


def opens_thinking(prompt_token_ids: list[int], markers: ThinkingMarkers) -> bool:
    """True when the prompt's last marker is a start marker (the template began the thinking)."""
    last_start = _last_index(prompt_token_ids, markers.start)
    return last_start > _last_index(prompt_token_ids, markers.end)


def _last_index(ids: list[int], marker: tuple[int, ...]) -> int:
    n = len(marker)
    for i in range(len(ids) - n, -1, -1):
        if tuple(ids[i : i + n]) == marker:
            return i
    return -1
