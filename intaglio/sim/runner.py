"""Run a workload through the engine core (the real one: scheduler, block manager, prefix cache,
forks, aborts, grammars, stop checks) on a SimulatedExecutor.

Virtual time: requests join the core when the clock passes their arrival, and are aborted
when it passes their `abort_s`; each step costs what the cost model says; an idle engine jumps
to the next event. A request's first token time is the end of the step that sampled it.
`simulate` checks before it returns that every request produced exactly its output length per
sample (fewer only if a grammar completed or it was aborted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from intaglio.config import EngineConfig
from intaglio.engine.core import EngineCore
from intaglio.sampling.params import SamplingParams
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.speculation import RateProposer
from intaglio.sim.workload import SimRequest
from intaglio.spec import SpecStats

logger = logging.getLogger(__name__)


@dataclass
class RequestTiming:
    request: SimRequest
    first_token_s: float | None = None
    finish_s: float | None = None
    num_output_tokens: int = 0  # over all samples
    num_preemptions: int = 0
    finish_reasons: list[str] = field(default_factory=list)  # per sample


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
    spec: SpecStats = field(default_factory=SpecStats)  # the scheduler's speculation counters

    @property
    def makespan_s(self) -> float:
        return self.executor.clock_s


def simulate(
    workload: list[SimRequest],
    executor: SimulatedExecutor,
    config: EngineConfig | None = None,
    grammar_tokenizer: Any = None,
) -> SimResult:
    """`config` is the engine's own (its scheduling fields apply; the executor sizes the KV
    cache); `grammar_tokenizer` gives structured requests a vocabulary."""
    core = EngineCore(config or EngineConfig(), executor, (), grammar_tokenizer=grammar_tokenizer)
    speculator = core.speculator
    if speculator is not None and speculator.proposer is not None:
        # Synthetic tokens repeat endlessly: a lookup would always match. Draft instead in the
        # share of steps the real proposer found a match in.
        proposer = RateProposer(executor.draft_rate, executor.synthetic_token, executor.seed)
        speculator.proposer = proposer
    capacity = executor.num_kv_blocks * executor.block_size
    pending = sorted(workload, key=lambda r: r.arrival_s)
    aborts = sorted((r for r in workload if r.abort_s is not None), key=lambda r: r.abort_s or 0)
    timings: dict[str, RequestTiming] = {}
    result = SimResult([], executor)
    i = j = 0
    while i < len(pending) or core.has_unfinished():
        if not core.has_unfinished() and executor.clock_s < pending[i].arrival_s:
            executor.clock_s = pending[i].arrival_s  # idle until the next arrival
        while i < len(pending) and pending[i].arrival_s <= executor.clock_s:
            spec = pending[i]
            if spec.prompt_len + spec.output_len > min(capacity, executor.max_position_embeddings):
                raise ValueError(
                    f"request {spec.request_id} needs {spec.prompt_len + spec.output_len} "
                    f"tokens; the KV cache holds {capacity} and the model "
                    f"{executor.max_position_embeddings}"
                )
            timings[spec.request_id] = RequestTiming(spec)
            core.add(
                spec.request_id,
                list(spec.prompt_token_ids),
                _params(spec),
                spec.priority,
                arrival_time=spec.arrival_s,
            )
            i += 1
        while j < len(aborts) and (aborts[j].abort_s or 0.0) <= executor.clock_s:
            core.abort(aborts[j].request_id)  # a no-op once it has finished
            j += 1
        for news in core.step():
            t = timings[news.request_id]
            now = executor.clock_s  # the end of the step that produced this
            new = sum(len(s.new_token_ids) for s in news.samples)
            if new and t.first_token_s is None:
                t.first_token_s = now
            t.num_output_tokens += new
            if news.finished:
                t.finish_s = now
                t.num_preemptions = news.metrics.num_preemptions
                t.finish_reasons = [s.finish_reason or "" for s in news.samples]
        sched, bm = core.scheduler, core.block_manager
        result.kv.append(
            KVSample(executor.clock_s, bm.usage, len(sched.running), len(sched.waiting))
        )
    result.timings = [timings[r.request_id] for r in workload]
    result.num_preemptions = core.scheduler.num_preemptions
    result.spec = core.scheduler.spec_stats
    bm = core.block_manager
    if bm.num_queried_tokens:
        result.prefix_hit_rate = bm.num_hit_tokens / bm.num_queried_tokens
    _check_conservation(result)
    return result


def _params(spec: SimRequest) -> SamplingParams:
    return SamplingParams(
        n=spec.n,
        temperature=0.0,
        max_tokens=spec.output_len,
        ignore_eos=True,
        detokenize=False,
        structured=spec.structured,
    )


def _check_conservation(result: SimResult) -> None:
    """Every request finished after it arrived, with exactly its output length per sample
    unless a grammar completed early or it was aborted; the steps sampled every token."""
    for t in result.timings:
        spec = t.request
        if t.finish_s is None:
            raise AssertionError(f"request {spec.request_id} never finished")
        expected = spec.n * spec.output_len
        may_end_early = spec.structured is not None or spec.abort_s is not None
        ended_early = may_end_early and t.num_output_tokens < expected
        if t.num_output_tokens != expected and not ended_early:
            raise AssertionError(
                f"request {spec.request_id} produced {t.num_output_tokens} tokens, "
                f"expected {expected}"
            )
        if t.first_token_s is not None and not spec.arrival_s < t.first_token_s <= t.finish_s:
            raise AssertionError(f"request {spec.request_id} has out-of-order timestamps")
    sampled = sum(s.num_sampled for s in result.executor.steps)
    if sampled != sum(t.num_output_tokens for t in result.timings):
        raise AssertionError("sampled tokens do not add up to the requests' outputs")
