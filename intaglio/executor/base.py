"""The Executor seam: the scheduler's decisions in, sampled tokens out.

The real engine runs a ModelExecutor; the co-design simulator runs a SimulatedExecutor behind
the same engine core. Nothing above this interface knows which one it drives. The step types
both sides read are in intaglio/step.py.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from intaglio.step import ExecutorOutput, SchedulerOutput


class Executor(Protocol):
    device: torch.device  # where per-request sampling generators must live
    num_kv_blocks: int
    block_size: int
    vocab_size: int
    max_position_embeddings: int
    # Chunked local attention layers' KV pool (engine/chunked_kv.py); 0 and None without.
    num_local_kv_blocks: int
    attention_chunk_size: int | None

    def execute(self, out: SchedulerOutput[Any]) -> ExecutorOutput: ...
