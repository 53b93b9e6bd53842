"""The Executor seam: the scheduler's decisions in, sampled tokens out.

The real engine runs a ModelExecutor; the co-design simulator runs a SimulatedExecutor behind
the same scheduler. Nothing above this interface knows which one it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from intaglio.sampling.params import SamplingParams


class SequenceView(Protocol):
    """What an executor reads of a request (the engine's Request provides it)."""

    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: tuple[int, ...]
    num_computed_tokens: int
    block_ids: list[int]
    local_block_ids: list[int]  # chunked local attention layers' own table (else empty)
    generator: torch.Generator | None
    num_prompt_logprobs: int  # prompt positions whose logprobs were already reported
    matcher: Any  # the grammar matcher of a structured request (intaglio.structured), else None

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


@dataclass
class ScheduledRequest:
    request: SequenceView
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """True when this step reaches the end of the known tokens, so a new one is sampled."""
        return self.request.num_computed_tokens + self.num_new_tokens == self.request.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[SequenceView] = field(default_factory=list)
    # (source, destination) KV blocks to copy before the forward pass: copy-on-write of
    # blocks that forked requests shared.
    block_copies: list[tuple[int, int]] = field(default_factory=list)
    local_block_copies: list[tuple[int, int]] = field(default_factory=list)  # chunked layers'

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class ExecutorOutput:
    # request_id -> the token sampled this step (only for requests that reached their end)
    sampled: dict[str, int] = field(default_factory=dict)
    # request_id -> {token_id: logprob}, the sampled token first then the top N
    logprobs: dict[str, dict[int, float]] = field(default_factory=dict)
    # request_id -> entries for the prompt positions after request.num_prompt_logprobs that
    # this step's logits reach (None for position 0, which nothing predicts)
    prompt_logprobs: dict[str, list[dict[int, float] | None]] = field(default_factory=dict)


class Executor(Protocol):
    device: torch.device  # where per-request sampling generators must live
    num_kv_blocks: int
    block_size: int
    vocab_size: int
    max_position_embeddings: int
    # Chunked local attention layers' KV pool (engine/chunked_kv.py); 0 and None without.
    num_local_kv_blocks: int
    attention_chunk_size: int | None

    def execute(self, out: SchedulerOutput) -> ExecutorOutput: ...
