"""One engine step's types, read by the engine (which builds them) and every executor (which runs
them): what the scheduler decided, and what came back.

The executor sees a scheduled request through `SequenceView`, the part of the engine's Request
it reads; `SchedulerOutput` is generic in the request type, so the scheduler gets its own
Request type back without casts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from intaglio.sampling.params import SamplingParams
from intaglio.sampling.state import SequenceSamplerState

if TYPE_CHECKING:
    from intaglio.structured import TokenMatcher


class SequenceView(Protocol):
    """What an executor reads of a request (the engine's Request provides it)."""

    @property
    def request_id(self) -> str: ...

    @property
    def prompt_token_ids(self) -> list[int]: ...

    @property
    def output_token_ids(self) -> list[int]: ...

    @property
    def params(self) -> SamplingParams: ...

    @property
    def num_computed_tokens(self) -> int: ...

    @property
    def block_ids(self) -> list[int]: ...

    @property
    def local_block_ids(self) -> list[int]: ...  # chunked local attention layers' own table

    @property
    def seed(self) -> int | None: ...  # noise at sequence position p comes from (seed, p)

    @property
    def sampler_state(self) -> SequenceSamplerState | None: ...  # the sampler updates it

    @property
    def num_prompt_logprobs(self) -> int: ...  # prompt positions already reported

    @property
    def num_pooled(self) -> int: ...  # an embedding request's prompt positions already pooled

    @property
    def matcher(self) -> TokenMatcher | None: ...  # a structured request's grammar

    @property
    def banned_token_ids(self) -> list[int]: ...  # tokens that may not be drawn now

    @property
    def num_prompt_tokens(self) -> int: ...

    @property
    def num_tokens(self) -> int: ...

    @property
    def wants_prompt_logprobs(self) -> bool: ...


def token_slice(request: SequenceView, start: int, end: int) -> list[int]:
    """The request's tokens (prompt, then output) [start:end], without building the whole list."""
    prompt, num_prompt = request.prompt_token_ids, request.num_prompt_tokens
    if start >= num_prompt:
        return request.output_token_ids[start - num_prompt : end - num_prompt]
    return prompt[start:end] + request.output_token_ids[: max(end - num_prompt, 0)]


R = TypeVar("R", bound=SequenceView, covariant=True)


@dataclass
class ScheduledRequest(Generic[R]):
    request: R
    num_new_tokens: int  # including the draft tokens
    # Draft tokens to verify after the request's last token (speculative decoding); the step
    # computes them and reports what it drew at each of the 1 + len(spec_token_ids) positions.
    spec_token_ids: list[int] = field(default_factory=list)

    @property
    def samples(self) -> bool:
        """True when this step reaches the end of the known tokens, so a new one is sampled
        (an embedding request pools its prompt instead)."""
        request = self.request
        end = request.num_computed_tokens + self.num_new_tokens - len(self.spec_token_ids)
        return end == request.num_tokens and request.params.pooling is None

    @property
    def is_decode(self) -> bool:
        """One query row per token over the cached context: a decode or a verification."""
        return self.num_new_tokens == 1 or bool(self.spec_token_ids)


@dataclass
class SchedulerOutput(Generic[R]):
    scheduled: list[ScheduledRequest[R]] = field(default_factory=list)
    preempted: list[R] = field(default_factory=list)
    # (source, destination) KV blocks to copy before the forward pass: copy-on-write of
    # blocks that forked requests shared.
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    local_block_copies: list[tuple[int, int]] = field(default_factory=list)  # chunked layers'
    # Speculation with a draft network: the most drafts any request is to get after this step
    # (the adaptive length last chosen); 0 spares the network's drafting.
    num_draft_tokens: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class ExecutorOutput:
    # request_id -> the tokens this step emits (only for requests that reached their end): one,
    # or under speculation the drafts accepted followed by the token drawn after them
    sampled: dict[str, list[int]] = field(default_factory=dict)
    # request_id -> per emitted token {token_id: logprob}, the sampled token first then the top N
    logprobs: dict[str, list[dict[int, float]]] = field(default_factory=dict)
    # request_id -> entries for the prompt positions after request.num_prompt_logprobs that
    # this step's logits reach (None for position 0, which nothing predicts)
    prompt_logprobs: dict[str, list[dict[int, float] | None]] = field(default_factory=dict)
    # request_id -> (sum of the final hidden states at the prompt positions after
    # request.num_pooled that this step pools, how many): embedding requests (sampling/pooling.py)
    pooled: dict[str, tuple[list[float], int]] = field(default_factory=dict)
    # request_id -> draft tokens for its next step, from an executor that runs a draft network
    draft_token_ids: dict[str, list[int]] = field(default_factory=dict)
    # The step's duration when the executor keeps its own clock (the simulator's virtual
    # time); None: the engine times the call itself.
    duration_s: float | None = None
