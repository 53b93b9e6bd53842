"""Request: one sequence's tokens, progress through the KV cache, and lifecycle state."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from intaglio.engine.stop import (
    FINISH_ABORT,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    banned_token_ids,
)
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.state import SequenceSamplerState
from intaglio.spec import SpecStats

if TYPE_CHECKING:
    from intaglio.engine.prefix_cache import Node
    from intaglio.structured import TokenMatcher


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


__all__ = ["FINISH_ABORT", "FINISH_ERROR", "FINISH_LENGTH", "FINISH_STOP", "Request"]


@dataclass(eq=False)  # identity, not field-by-field comparison, in queues and lists
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: tuple[int, ...]
    max_tokens: int  # resolved from params and max_model_len
    sample_index: int = 0  # which of the params.n samples of its user request this is
    arrival_time: float = field(default_factory=time.monotonic)
    priority: int = 0  # lower runs first under the priority policy (as in vLLM)
    cache_salt: str | None = None  # requests share cached KV only with the same salt
    seq: int = 0  # arrival order at the scheduler; breaks ties between equal arrival times
    output_token_ids: list[int] = field(default_factory=list)
    # Tokens whose K/V are in the cache; the scheduler catches this up to num_tokens.
    num_computed_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    cache_path: list[Node] = field(default_factory=list)  # prefix-cache nodes of its first blocks
    local_block_ids: list[int] = field(default_factory=list)  # chunked_kv.py; else empty
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # the stop string or token that ended it
    seed: int | None = None  # each position draws its noise from (seed, position)
    # Bad words and DRY breakers as token ids, Mirostat's mu; kept across preemption.
    sampler_state: SequenceSamplerState | None = None
    num_preemptions: int = 0
    # logprobs[i]: {token_id: logprob} for output token i (sampled token first).
    logprobs: list[dict[int, float]] | None = None
    num_prompt_logprobs: int = 0  # prompt positions whose logprobs were already reported
    # An embedding request (sampling/pooling.py): the sum of its pooled hidden states so far,
    # and how many prompt positions that sum holds.
    pooled_sum: list[float] | None = None
    num_pooled: int = 0
    matcher: TokenMatcher | None = None  # a structured request's grammar matcher
    error: str | None = None  # why it failed, when it ended with finish_reason "error"
    # Speculative decoding: drafts to verify in the next step, and this request's record of
    # drafts tried and accepted (its acceptance rate sizes its next drafts).
    spec_token_ids: list[int] = field(default_factory=list)
    spec: SpecStats = field(default_factory=SpecStats)
    # Tokens it found computed when it first ran: a prefix-cache hit, or what a fork shares.
    num_cached_tokens: int = 0
    # Beam search: a beam that drew while a sibling could not waits, unscheduled, for it.
    held: bool = False
    num_spec_tried: int = 0  # drafts reached by verification (those after a rejection are not)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_cached_prompt_tokens(self) -> int:
        return min(self.num_cached_tokens, self.num_prompt_tokens)

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt logprobs are still owed (by the first sample: the n samples share a prompt)."""
        return (
            self.params.prompt_logprobs is not None
            and self.sample_index == 0
            and self.num_prompt_logprobs < self.num_prompt_tokens
            and self.num_computed_tokens < self.num_prompt_tokens
        )

    @property
    def reads_every_position(self) -> bool:
        """Prompt logprobs and mean pooling need the hidden state of every prompt position, so
        the prefix cache may skip none (a preempted request recomputes them all)."""
        pooling = self.params.pooling
        return self.params.prompt_logprobs is not None or (
            pooling is not None and pooling.reads_every_position
        )

    @property
    def banned_token_ids(self) -> list[int]:
        return banned_token_ids(self)

    def finish(self, reason: str, stop_reason: str | int | None = None) -> None:
        self.status = RequestStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason
