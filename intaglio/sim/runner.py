"""Run a workload through the engine's own Scheduler and BlockManager on a SimulatedExecutor.

Virtual time: requests join the scheduler when the clock passes their arrival; each step costs
what the cost model says; an idle engine jumps to the next arrival. A request's first token
time is the end of the step that sampled it. Every request must finish with exactly its output
length, which `simulate` checks before it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import Request
from intaglio.engine.scheduler import Scheduler
from intaglio.sampling.params import SamplingParams
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.workload import SimRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerSettings:
    """The engine's scheduling knobs (EngineConfig's names and defaults)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    scheduling_policy: str = "fcfs"  # fcfs, priority or cache-aware
    priority_aging_s: float = 10.0
    interleave_policy: str = "stall-free"  # stall-free, prefill-first or decode-first
    decode_first_max_wait_steps: int = 8
    prefix_caching: bool = True


@dataclass
class RequestTiming:
    request: SimRequest
    first_token_s: float | None = None
    finish_s: float | None = None
    num_output_tokens: int = 0
    num_preemptions: int = 0


@dataclass
class KVSample:
    time_s: float
    usage: float  # fraction of KV blocks in use
    num_running: int
    num_waiting: int


@dataclass
class SimResult:
    timings: list[RequestTiming]
    executor: SimulatedExecutor
    kv: list[KVSample] = field(default_factory=list)
    num_preemptions: int = 0
    prefix_hit_rate: float = 0.0  # prompt tokens found in the prefix cache / looked up

    @property
    def makespan_s(self) -> float:
        return self.executor.clock_s


def make_scheduler(block_manager: BlockManager, settings: SchedulerSettings) -> Scheduler:
    """The one place the simulator builds the engine's Scheduler."""
    return Scheduler(
        block_manager,
        settings.max_num_seqs,
        settings.max_num_batched_tokens,
        settings.scheduling_policy,
        settings.priority_aging_s,
        settings.interleave_policy,
        settings.decode_first_max_wait_steps,
    )


def simulate(
    workload: list[SimRequest],
    executor: SimulatedExecutor,
    settings: SchedulerSettings = SchedulerSettings(),
) -> SimResult:
    block_manager = BlockManager(
        executor.num_kv_blocks,
        executor.block_size,
        settings.prefix_caching,
        executor.num_local_kv_blocks,
        executor.attention_chunk_size,
    )
    scheduler = make_scheduler(block_manager, settings)
    capacity = executor.num_kv_blocks * executor.block_size
    pending = sorted(workload, key=lambda r: r.arrival_s)
    timings: dict[str, RequestTiming] = {}
    result = SimResult([], executor)
    i = 0
    while i < len(pending) or scheduler.has_unfinished():
        if not scheduler.has_unfinished() and executor.clock_s < pending[i].arrival_s:
            executor.clock_s = pending[i].arrival_s  # idle until the next arrival
        while i < len(pending) and pending[i].arrival_s <= executor.clock_s:
            spec = pending[i]
            if spec.prompt_len + spec.output_len > min(capacity, executor.max_position_embeddings):
                raise ValueError(
                    f"request {spec.request_id} needs {spec.prompt_len + spec.output_len} "
                    f"tokens; the KV cache holds {capacity} and the model "
                    f"{executor.max_position_embeddings}"
                )
            request = _engine_request(spec)
            timings[spec.request_id] = RequestTiming(spec)
            scheduler.add(request)
            i += 1
        out = scheduler.schedule()
        if out.is_empty:
            raise RuntimeError("no request could be scheduled; the KV cache is too small")
        sampled = executor.execute(out).sampled
        now = executor.clock_s
        for rid in sampled:
            t = timings[rid]
            t.num_output_tokens += 1
            if t.first_token_s is None:
                t.first_token_s = now
        for request in scheduler.update(out, sampled):
            t = timings[request.request_id]
            t.finish_s = now
            t.num_preemptions = request.num_preemptions
        result.kv.append(
            KVSample(now, block_manager.usage, len(scheduler.running), len(scheduler.waiting))
        )
    result.timings = [timings[r.request_id] for r in workload]
    result.num_preemptions = scheduler.num_preemptions
    if block_manager.num_queried_tokens:
        result.prefix_hit_rate = block_manager.num_hit_tokens / block_manager.num_queried_tokens
    _check_conservation(result)
    return result


def _engine_request(spec: SimRequest) -> Request:
    params = SamplingParams(
        temperature=0.0, max_tokens=spec.output_len, ignore_eos=True, detokenize=False
    )
    return Request(
        spec.request_id,
        list(spec.prompt_token_ids),
        params,
        (),
        spec.output_len,
        arrival_time=spec.arrival_s,
        priority=spec.priority,
    )


def _check_conservation(result: SimResult) -> None:
    """Every request finished, with exactly its output length, after it arrived."""
    for t in result.timings:
        spec = t.request
        if t.finish_s is None or t.first_token_s is None:
            raise AssertionError(f"request {spec.request_id} never finished")
        if t.num_output_tokens != spec.output_len:
            raise AssertionError(
                f"request {spec.request_id} produced {t.num_output_tokens} tokens, "
                f"expected {spec.output_len}"
            )
        if not spec.arrival_s < t.first_token_s <= t.finish_s:
            raise AssertionError(f"request {spec.request_id} has out-of-order timestamps")
    sampled = sum(s.num_sampled for s in result.executor.steps)
    if sampled != sum(t.request.output_len for t in result.timings):
        raise AssertionError("sampled tokens do not add up to the requests' output lengths")
