"""SimulatedExecutor: the Executor seam with a cost model in place of the model.

It receives the scheduler's real SchedulerOutput, costs the step on a hardware description
(toolkit StepCostModel), advances a virtual clock by that time, and returns a synthetic token
for every request whose step reaches its end, exactly where ModelExecutor would sample one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from intaglio.executor.base import ExecutorOutput, SchedulerOutput
from intaglio.toolkit.step_model import StepCostModel


@dataclass
class StepRecord:
    start_s: float
    duration_s: float
    num_seqs: int
    num_tokens: int
    num_prefill_tokens: int
    num_sampled: int


class SimulatedExecutor:
    def __init__(
        self,
        step_model: StepCostModel,
        num_kv_blocks: int,
        block_size: int,
        synthetic_token: int = 0,
    ) -> None:
        cfg = step_model.cfg
        self.device = torch.device("cpu")
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.vocab_size = cfg.vocab_size
        self.max_position_embeddings = cfg.max_position_embeddings
        self.step_model = step_model
        self.synthetic_token = synthetic_token
        self.clock_s = 0.0
        self.steps: list[StepRecord] = []

    def execute(self, out: SchedulerOutput) -> ExecutorOutput:
        scheduled = out.scheduled
        q = np.fromiter((s.num_new_tokens for s in scheduled), np.int64, len(scheduled))
        c = np.fromiter(
            (s.request.num_computed_tokens + s.num_new_tokens for s in scheduled),
            np.int64,
            len(scheduled),
        )
        sampled = {s.request.request_id: self.synthetic_token for s in scheduled if s.samples}
        # Tokens of this step that are still prompt (a recompute after preemption counts too).
        prefill = sum(
            max(0, min(s.num_new_tokens, s.request.num_tokens - 1 - s.request.num_computed_tokens))
            for s in scheduled
        )
        duration = self.step_model.step_time(q, c, len(sampled))
        self.steps.append(
            StepRecord(
                self.clock_s,
                duration,
                len(scheduled),
                int(q.sum()),
                prefill,
                len(sampled),
            )
        )
        self.clock_s += duration
        return ExecutorOutput(sampled=sampled)
