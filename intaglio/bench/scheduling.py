"""`intaglio bench scheduling`: KV sharing and scheduling policies, each against its baseline.

Scenarios (each runs the engine in-process, requests arriving on a wall-clock schedule):
- shared-prefix: N requests sharing a long prefix, all at t=0; prefix caching off vs on.
- n-samples: one prompt sampled n times (forked) vs n separate requests.
- priority: Poisson arrivals, a fraction high priority; fcfs vs priority scheduling.
- interleave: Poisson arrivals at a fixed rate; stall-free vs prefill-first vs decode-first.
TTFT and e2e are measured from each request's scheduled arrival, so a busy engine that admits
late is charged for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intaglio.api.llm import LLM
from intaglio.bench.random_model import RANDOM_CONFIGS, build_random_llama
from intaglio.model.checkpoint import resolve_model_path
from intaglio.sampling.params import SamplingParams

SCENARIOS = ("shared-prefix", "n-samples", "priority", "interleave")


@dataclass
class Arrival:
    at_s: float
    prompt: list[int]
    params: SamplingParams
    priority: int = 0


@dataclass
class Run:
    """Per-request timings and engine counters of one variant."""

    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)
    priority: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    computed_tokens: int = 0
    hit_tokens: int = 0
    peak_kv_blocks: int = 0
    num_preemptions: int = 0


def drive(llm: LLM, arrivals: list[Arrival]) -> Run:
    """Add each request at its arrival time, step until all finish, collect timings."""
    engine, run = llm.engine, Run()
    bm, sched = engine.block_manager, engine.scheduler
    computed0, hits0 = sched.num_computed_tokens, bm.num_hit_tokens
    pending = sorted(arrivals, key=lambda a: a.at_s)
    due: dict[str, Arrival] = {}
    start = time.perf_counter()
    i = 0
    while i < len(pending) or engine.has_unfinished():
        now = time.perf_counter() - start
        while i < len(pending) and pending[i].at_s <= now:
            a = pending[i]
            params = dataclasses.replace(a.params, output_kind="final_only")
            engine.add_request(str(i), a.prompt, params, a.priority)
            due[str(i)] = a
            i += 1
        if not engine.has_unfinished():
            time.sleep(max(pending[i].at_s - now, 0.0))  # idle until the next arrival
            continue
        for out in engine.step():
            a = due[out.request_id]
            m = out.metrics
            assert m.first_token_time is not None and m.finished_time is not None
            run.ttft_s.append(m.first_token_time - (start + a.at_s))
            num_out = max(len(c.token_ids) for c in out.outputs)
            if num_out > 1:
                run.tpot_s.append((m.finished_time - m.first_token_time) / (num_out - 1))
            run.priority.append(a.priority)
        run.peak_kv_blocks = max(run.peak_kv_blocks, bm.num_blocks - bm.num_free_blocks)
    run.elapsed_s = time.perf_counter() - start
    run.computed_tokens = sched.num_computed_tokens - computed0
    run.hit_tokens = bm.num_hit_tokens - hits0
    run.num_preemptions = sched.num_preemptions
    return run


def _pcts(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000.0
    p50, p99 = np.percentile(ms, [50, 99])
    return {"mean_ms": float(ms.mean()), "p50_ms": float(p50), "p99_ms": float(p99)}


def _greedy(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(
        temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False, **kw
    )


# ------------------------------------------------------------------------------ scenarios
def shared_prefix(make: Any, rng: np.random.Generator, vocab: int, a: argparse.Namespace):
    prefix = rng.integers(3, vocab, a.prefix_len).tolist()
    arrivals = [
        Arrival(0.0, prefix + rng.integers(3, vocab, a.unique_len).tolist(), _greedy(a.output_len))
        for _ in range(a.num_requests)
    ]
    rows = {}
    for caching in (False, True):
        run = drive(make(prefix_caching=caching), arrivals)
        decode_tokens = a.num_requests * (a.output_len - 1)
        rows["on" if caching else "off"] = {
            "prefill_tokens_computed": run.computed_tokens - decode_tokens,
            "hit_tokens": run.hit_tokens,
            "ttft": _pcts(run.ttft_s),
            "elapsed_s": run.elapsed_s,
        }
    off, on = rows["off"], rows["on"]
    rows["prefill_reduction_x"] = off["prefill_tokens_computed"] / on["prefill_tokens_computed"]
    rows["mean_ttft_reduction_x"] = off["ttft"]["mean_ms"] / on["ttft"]["mean_ms"]
    return rows


def n_samples(make: Any, rng: np.random.Generator, vocab: int, a: argparse.Namespace):
    prompt = rng.integers(3, vocab, a.prefix_len).tolist()
    sample = dict(temperature=1.0, max_tokens=a.output_len, ignore_eos=True, detokenize=False)
    variants = {
        "n=8 forked": (True, [Arrival(0.0, prompt, SamplingParams(n=a.n, seed=1, **sample))]),
        "separate, caching on": (True, None),
        "separate, caching off": (False, None),
    }
    separate = [Arrival(0.0, prompt, SamplingParams(seed=1 + i, **sample)) for i in range(a.n)]
    rows = {}
    for name, (caching, arrivals) in variants.items():
        run = drive(make(prefix_caching=caching), arrivals or separate)
        rows[name] = {
            "peak_kv_blocks": run.peak_kv_blocks,
            "tokens_computed": run.computed_tokens,
            "elapsed_s": run.elapsed_s,
        }
    return rows


def _poisson(
    rng: np.random.Generator, vocab: int, a: argparse.Namespace, high_fraction: float
) -> list[Arrival]:
    times = np.cumsum(rng.exponential(1.0 / a.request_rate, a.num_requests))
    return [
        Arrival(
            float(t),
            rng.integers(3, vocab, a.input_len).tolist(),
            _greedy(a.output_len),
            priority=0 if rng.random() < high_fraction else 1,
        )
        for t in times
    ]


def priority(make: Any, rng: np.random.Generator, vocab: int, a: argparse.Namespace):
    arrivals = _poisson(rng, vocab, a, a.high_fraction)
    rows: dict[str, Any] = {}
    for policy in ("fcfs", "priority"):
        run = drive(make(scheduling_policy=policy), arrivals)
        ttft = np.asarray(run.ttft_s)
        prio = np.asarray(run.priority)
        rows[policy] = {
            "high_ttft": _pcts(ttft[prio == 0].tolist()),
            "low_ttft": _pcts(ttft[prio == 1].tolist()),
            "preemptions": run.num_preemptions,
            "elapsed_s": run.elapsed_s,
        }
    rows["high_p99_ttft_reduction_x"] = (
        rows["fcfs"]["high_ttft"]["p99_ms"] / rows["priority"]["high_ttft"]["p99_ms"]
    )
    return rows


def interleave(make: Any, rng: np.random.Generator, vocab: int, a: argparse.Namespace):
    arrivals = _poisson(rng, vocab, a, high_fraction=0.0)
    rows = {}
    for policy in ("stall-free", "prefill-first", "decode-first"):
        run = drive(make(interleave_policy=policy), arrivals)
        rows[policy] = {
            "ttft": _pcts(run.ttft_s),
            "tpot": _pcts(run.tpot_s),
            "elapsed_s": run.elapsed_s,
        }
    return rows


# ------------------------------------------------------------------------------ CLI
def add_scheduling_bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS), default=None)
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--prefix-len", type=int, default=1024, help="shared prefix / n-samples prompt")
    p.add_argument("--unique-len", type=int, default=64, help="shared-prefix: tokens per request")
    p.add_argument("--n", type=int, default=8, help="n-samples: samples of the one prompt")
    p.add_argument("--input-len", type=int, default=256, help="priority / interleave prompts")
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--request-rate", type=float, default=4.0, help="Poisson arrivals per second")
    p.add_argument("--high-fraction", type=float, default=0.2, help="priority: share of high")
    p.add_argument("--json-out", help="write the results here")


def run_scheduling_benchmark(args: argparse.Namespace, eargs: dict[str, Any]) -> dict[str, Any]:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    seed = args.seed if args.seed is not None else 0
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    with tempfile.TemporaryDirectory(prefix="intaglio-bench-") as tmp:
        if args.random_config:
            path = build_random_llama(args.random_config, Path(tmp), seed)
        else:
            path = resolve_model_path(args.model)

        def make(**overrides: Any) -> LLM:
            return LLM(str(path), **{**eargs, **overrides})

        vocab = make().engine.executor.vocab_size
        result: dict[str, Any] = {
            "model": f"random-{args.random_config}" if args.random_config else str(path),
            "engine_args": eargs,
            "num_threads": torch.get_num_threads(),
            "workload": {k: v for k, v in vars(args).items() if k != "func"},
        }
        runners = {
            "shared-prefix": shared_prefix,
            "n-samples": n_samples,
            "priority": priority,
            "interleave": interleave,
        }
        for name in scenarios:
            rng = np.random.default_rng(seed)
            result[name] = runners[name](make, rng, vocab, args)
            print(f"== {name}\n{json.dumps(result[name], indent=2)}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result
