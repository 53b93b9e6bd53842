"""Time real engine steps of chosen shapes: the ground truth the cost model is fitted and tested on.

A step is given as (new tokens, context) per sequence. Each sequence becomes a Request whose
prompt ends at that context, its KV blocks are allocated by the engine's BlockManager, and
ModelExecutor.execute runs the step exactly as the engine would (KV contents are whatever the
cache holds, which does not change the time). The figure is the process CPU time of the best
of `repeats` runs: with one torch thread the engine is one busy thread, so CPU time equals
wall time on a quiet machine, and on a machine shared with other processes it leaves out the
time the scheduler gave the core to someone else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import Request
from intaglio.executor.model_executor import ModelExecutor
from intaglio.sampling.params import SamplingParams
from intaglio.step import ScheduledRequest, SchedulerOutput

BatchShape = Sequence[tuple[int, int]]  # (num_new_tokens, context_len) per sequence


def time_step(
    executor: ModelExecutor, batch: BatchShape, repeats: int = 3, warmup: bool = True, seed: int = 0
) -> float:
    rng = np.random.default_rng(seed)
    blocks = BlockManager(executor.num_kv_blocks, executor.block_size, enable_prefix_caching=False)
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True, detokenize=False)
    scheduled = []
    for i, (new, ctx) in enumerate(batch):
        prompt = rng.integers(3, executor.vocab_size, ctx).tolist()
        request = Request(f"t{i}", prompt, params, (), 1)
        if not blocks.allocate(request, ctx):
            raise ValueError(f"batch {batch} does not fit the KV cache; raise its size")
        request.num_computed_tokens = ctx - new
        scheduled.append(ScheduledRequest(request, new))
    out = SchedulerOutput(scheduled)
    if warmup:
        executor.execute(out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        executor.execute(out)
        best = min(best, time.process_time() - t0)
    return best
