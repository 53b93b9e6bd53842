"""The Executor seam: the scheduler's decisions in, sampled tokens out.

The real engine runs a ModelExecutor; the co-design simulator runs a SimulatedExecutor behind
the same scheduler. Nothing above this interface knows which one it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from intaglio.engine.scheduler import SchedulerOutput


@dataclass
class ExecutorOutput:
    # request_id -> the token sampled this step (only for requests that reached their end)
    sampled: dict[str, int] = field(default_factory=dict)
    # request_id -> {token_id: logprob}, the sampled token first then the top N
    logprobs: dict[str, dict[int, float]] = field(default_factory=dict)
    # request_id -> one entry per prompt position computed this step (None for position 0)
    prompt_logprobs: dict[str, list[dict[int, float] | None]] = field(default_factory=dict)


class Executor(Protocol):
    num_kv_blocks: int
    block_size: int
    vocab_size: int
    max_position_embeddings: int

    def execute(self, out: SchedulerOutput) -> ExecutorOutput: ...
