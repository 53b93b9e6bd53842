"""Speculator: gives each running decode its draft tokens for the next step.

The proposer (intaglio/spec) guesses; this file decides how many guesses each request may have
and trims them to what the request may emit: the adaptive controller's length, the room left
under max_tokens, the min_tokens boundary (every verified position of one request must ban the
same end tokens), and for a structured request the longest prefix its grammar accepts, so a
constrained request verifies only drafts it could emit. A request whose sampler state moves
with every token (Mirostat, thinking budgets, confidence) gets no drafts.
"""

from __future__ import annotations

from intaglio.config import EngineConfig
from intaglio.engine.request import Request
from intaglio.engine.scheduler import Scheduler
from intaglio.spec import DraftLengthController, Proposer, acceptance_rate, build_proposer
from intaglio.structured import TokenMatcher


class Speculator:
    def __init__(self, proposer: Proposer | None, controller: DraftLengthController) -> None:
        """`proposer`: a lookup proposer, or None when the executor drafts with a network."""
        self.proposer = proposer
        self.controller = controller
        # The longest draft the controller last gave a request: how many a draft network
        # should propose in the next step (it proposes before the controller decides again).
        self.num_draft_tokens = controller.max_draft_tokens

    @classmethod
    def from_config(cls, config: EngineConfig) -> Speculator:
        assert config.speculative_method is not None
        proposer = build_proposer(
            config.speculative_method, config.prompt_lookup_min, config.prompt_lookup_max
        )
        controller = DraftLengthController(
            config.num_speculative_tokens, config.speculative_adaptive
        )
        return cls(proposer, controller)

    def propose(self, scheduler: Scheduler, drafted: dict[str, list[int]]) -> None:
        """Set spec_token_ids of every running request whose next step is a decode, from the
        lookup proposer or from what the executor's draft network `drafted` this step."""
        decodes = [
            r
            for r in scheduler.running
            if r.num_tokens - r.num_computed_tokens == 1 and _may_draft(r)
        ]
        alphas = [acceptance_rate(r.spec.num_accepted_tokens, r.num_spec_tried) for r in decodes]
        lengths = self.controller.draft_lengths(alphas)
        self.num_draft_tokens = max(lengths, default=0)
        for request, k in zip(decodes, lengths):
            k = min(k, _room(request))
            if k <= 0:
                continue
            if self.proposer is None:
                drafts = drafted.get(request.request_id, [])[:k]
            else:
                tokens = request.prompt_token_ids + request.output_token_ids
                drafts = self.proposer.propose(request.request_id, tokens, k)[:k]
            if request.matcher is not None:
                drafts = grammar_prefix(request.matcher, drafts)
            request.spec_token_ids = drafts

    def observe_step(self, num_tokens: int, seconds: float) -> None:
        """A step of decodes and verifications took `seconds` for `num_tokens` rows."""
        self.controller.observe_step(num_tokens, seconds)

    def finish(self, request: Request) -> None:
        if self.proposer is not None:
            self.proposer.finish(request.request_id, request.output_token_ids)


def _may_draft(request: Request) -> bool:
    """Beams are re-seated after every token, and some sampler states move with every token:
    neither can verify drafts, so they neither get any nor size the draft network's work. An
    embedding request ends with its prompt."""
    state = request.sampler_state
    changes = state is not None and state.changes_per_token
    params = request.params
    return not changes and not params.use_beam_search and params.pooling is None


def _room(request: Request) -> int:
    """The most drafts a step may verify: it emits the accepted ones plus one more token."""
    num_output = len(request.output_token_ids)
    room = request.max_tokens - num_output - 1
    if num_output < request.params.min_tokens:  # stay before the boundary, all rows alike
        room = min(room, request.params.min_tokens - num_output - 1)
    return room


def grammar_prefix(matcher: TokenMatcher, drafts: list[int]) -> list[int]:
    """The longest prefix of drafts the grammar accepts (the matcher is left as it was)."""
    num = 0
    for token in drafts:
        if matcher.is_terminated() or not matcher.accept_token(token):
            break
        num += 1
    matcher.rollback(num)
    return drafts[:num]
