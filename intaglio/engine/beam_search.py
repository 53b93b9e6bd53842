"""Beam search inside the engine: the choice of beams, step by step, as HF defines it.

The engine core runs each live beam as an ordinary greedy request that also returns its top-K
raw log-probabilities (K = max(2, 1 + number of EOS ids) * width, as HF keeps, so that at least
`width` candidates survive even if the best ones all end). After every step in which all live
beams drew, `BeamSearch.advance` takes the K best continuations over all beams by cumulative
log-probability. Those among the first `width` that end (an EOS id, or the length limit) are
scored `logprob / generated_len ** length_penalty` and compete for the `width` finished
hypotheses; the `width` best others become the next beams. The core then re-seats its requests
(a parent chosen once continues with the chosen token, one chosen more often forks and shares
its KV copy-on-write, one not chosen is aborted and frees its blocks at once), so beams decode in
the same batches as every other request and the prompt is computed once.

Stopping follows HF's `early_stopping`: True ends once `width` hypotheses are finished; False
(the default) ends once the best live beam, scored at its current length, cannot beat the worst
finished one; "never" scores the best live beam at the length limit when the penalty is positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from intaglio.engine.stop import FINISH_LENGTH, FINISH_STOP


@dataclass
class Hypothesis:
    """A finished sequence: its generated tokens, cumulative log-probability and score."""

    token_ids: list[int]
    logprob: float
    score: float
    finish_reason: str


@dataclass
class Continuation:
    """One chosen next beam: the live beam it extends, the token, the new cumulative logprob."""

    parent: int
    token_id: int
    logprob: float


@dataclass
class BeamSearch:
    width: int
    num_returned: int  # the n best hypotheses go back to the user
    max_tokens: int
    eos_token_ids: tuple[int, ...]  # empty when EOS is ignored
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    logprobs: list[float] = field(default_factory=lambda: [0.0])  # per live beam, cumulative
    finished: list[Hypothesis] = field(default_factory=list)  # at most width, best first
    num_generated: int = 0  # tokens each live beam has generated, the last one included
    done: bool = False
    _improvable: bool = True

    @property
    def num_candidates(self) -> int:
        """K: how many top log-probabilities each beam must report per step."""
        return max(2, 1 + len(self.eos_token_ids)) * self.width

    def advance(self, tops: list[dict[int, float]], outputs: list[list[int]]) -> list[Continuation]:
        """One step: `tops[b]` holds live beam b's top-K next-token logprobs, `outputs[b]` its
        generated tokens before that token. Returns the next live beams (empty when done)."""
        assert len(tops) == len(self.logprobs) == len(outputs)
        candidates = [
            Continuation(b, token, self.logprobs[b] + lp)
            for b, top in enumerate(tops)
            for token, lp in top.items()
        ]
        # Best first; ties go to the lower beam, then the lower token id, as a flat top-k would.
        candidates.sort(key=lambda c: (-c.logprob, c.parent, c.token_id))
        candidates = candidates[: self.num_candidates]
        length = self.num_generated + 1
        at_limit = length >= self.max_tokens
        ends = [at_limit or c.token_id in self.eos_token_ids for c in candidates]
        self._collect(candidates, ends, outputs, length)
        running = [c for c, end in zip(candidates, ends) if not end][: self.width]
        self.num_generated = length
        if running:
            best = running[0].logprob / self._length_for_bound() ** self.length_penalty
            full = len(self.finished) == self.width
            if full and best <= self.finished[-1].score:
                self._improvable = False
        if not running or not self._improvable or self._full_and_stopping:
            self.done = True
            return []
        self.logprobs = [c.logprob for c in running]
        return running

    def _collect(
        self,
        candidates: list[Continuation],
        ends: list[bool],
        outputs: list[list[int]],
        length: int,
    ) -> None:
        """Finished candidates among the first `width` compete for the hypotheses."""
        if not self._improvable or self._full_and_stopping:
            return
        for c, end in zip(candidates[: self.width], ends[: self.width]):
            if not end:
                continue
            score = c.logprob / length**self.length_penalty
            eos = c.token_id in self.eos_token_ids
            self.finished.append(
                Hypothesis(
                    [*outputs[c.parent], c.token_id],
                    c.logprob,
                    score,
                    FINISH_STOP if eos else FINISH_LENGTH,
                )
            )
        # Stable: an earlier hypothesis keeps its place over a later one of equal score.
        self.finished.sort(key=lambda h: -h.score)
        del self.finished[self.width :]

    @property
    def _full_and_stopping(self) -> bool:
        """early_stopping=True: the search ends once `width` hypotheses are finished."""
        return self.early_stopping is True and len(self.finished) == self.width

    def _length_for_bound(self) -> int:
        """The length at which the best live beam's score bounds what it can still reach."""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            return self.max_tokens
        return self.num_generated
