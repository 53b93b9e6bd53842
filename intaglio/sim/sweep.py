"""Sweeps: a Study's step or serving metrics over one parameter, or a grid over two.

Parameters: batch (decode sequences) and context (their length), step mode only; rate
(arrivals), chunk (max_num_batched_tokens), max_num_seqs, policy (scheduling policy), interleave
(interleave policy), prefix_caching and any other EngineConfig field; tp, ep, or passes (a whole
pass list); hw.<dotted.path> (a hardware field); model.<config field> (a model variant, e.g.
model.num_key_value_heads for the GQA ratio); speculative_method (none for plain decoding) and
spec_alpha (a constant acceptance). Throughput also comes per chip (tp x ep x pp of the point),
so designs that spread a model over different numbers of chips compare fairly.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from intaglio.config import EngineConfig
from intaglio.sim.report import summarize
from intaglio.sim.study import (
    STUDY_SKIPS,
    Study,
    serve,
    step_cost,
    step_overflow_of,
    without_speculation,
)
from intaglio.toolkit.passes import parse_batch

Axis = tuple[str, Sequence[Any]]  # a parameter and its values

# Sweep names for engine settings -> EngineConfig fields.
_ENGINE_PARAMS = {
    "chunk": "max_num_batched_tokens",
    "policy": "scheduling_policy",
    "interleave": "interleave_policy",
}
_STEP_PARAMS = ("batch", "context")  # shape the costed step rather than the study


def with_param(study: Study, name: str, value: Any) -> Study:
    """The study with one parameter set (any sweep parameter but batch and context)."""
    if name.startswith("hw."):
        return dataclasses.replace(study, hw_overrides={**study.hw_overrides, name[3:]: value})
    if name.startswith("model."):
        overrides = {**study.model_overrides, name[6:]: value}
        return dataclasses.replace(study, model_overrides=overrides)
    if name == "rate":  # the workload's Poisson arrival rate, req/s
        return dataclasses.replace(study, rate=float(value))
    if name == "passes":
        return dataclasses.replace(study, passes=str(value))
    if name == "spec_alpha":  # a constant acceptance in place of any other profile
        if study.engine.speculative_method is None:
            raise ValueError("sweeping spec_alpha needs a speculative_method")
        plain = without_speculation(study)
        return dataclasses.replace(plain, engine=study.engine, spec_alpha=float(value))
    if name == "speculative_method":  # none: plain decoding, the baseline
        if value in (None, "none"):
            return without_speculation(study)
        return dataclasses.replace(
            study, engine=dataclasses.replace(study.engine, speculative_method=str(value))
        )
    if name in ("tp", "ep"):
        kept = [p for p in study.passes.split(",") if p and not p.startswith(f"{name}=")]
        return dataclasses.replace(study, passes=",".join([f"{name}={value}", *kept]))
    field_name = _ENGINE_PARAMS.get(name, name)
    if field_name in {f.name for f in dataclasses.fields(EngineConfig)} - STUDY_SKIPS:
        kind = type(getattr(study.engine, field_name))
        engine = dataclasses.replace(study.engine, **{field_name: kind(value)})
        return dataclasses.replace(study, engine=engine)
    raise ValueError(
        f"unknown sweep parameter {name!r}; use batch, context, rate, chunk, policy, interleave, "
        "an EngineConfig field (max_num_seqs, prefix_caching, ...), tp, ep, passes, "
        "speculative_method, spec_alpha, hw.FIELD or model.FIELD"
    )


def sweep(
    study: Study, axes: Sequence[Axis], serve_mode: bool, batch: str | None, context: int
) -> list[dict[str, Any]]:
    """One row per point of the grid (every combination of the axes' values, the last axis
    varying fastest): the parameters' values, then the metrics of a simulated serving run or
    of one step (`batch`, or `batch` decodes of `context` tokens when those are swept; by
    default 64 decodes at `context`)."""
    names = [name for name, _ in axes]
    if not 1 <= len(axes) <= 2:
        raise ValueError(f"sweep one parameter or a grid of two, not {len(axes)}")
    if len(set(names)) != len(names):
        raise ValueError(f"parameter {names[0]} is swept twice")
    rows = []
    for values in itertools.product(*(list(v) for _, v in axes)):
        settings = dict(zip(names, values))
        point = study
        for name, value in settings.items():
            if name not in _STEP_PARAMS:
                point = with_param(point, name, value)
        if serve_mode:
            if swept := [n for n in names if n in _STEP_PARAMS]:
                raise ValueError(f"{swept[0]} is a step-mode parameter; drop --serve")
            metrics = _serving(point)
        else:
            if any(n in settings for n in _STEP_PARAMS) or batch is None:
                seqs = int(settings.get("batch", 64))
                batch_here = f"decode:{seqs}@{int(settings.get('context', context))}"
            else:
                batch_here = batch
            metrics = _step(point, batch_here)
        rows.append({**settings, "chips": point.devices, **metrics})
    columns = dict.fromkeys(k for row in rows for k in row)  # e.g. accept_len where speculating
    return [{k: row.get(k) for k in columns} for row in rows]


def _serving(point: Study) -> dict[str, Any]:
    s = summarize(serve(point)[0])
    out = {
        "fits": point.plan().fits,
        "output_tok_s": s["output_throughput"],
        "output_tok_s_per_chip": s["output_throughput"] / point.devices,
        "ttft_p50_ms": s["ttft_s"]["p50"] * 1e3,
        "ttft_p99_ms": s["ttft_s"]["p99"] * 1e3,
        "tpot_p50_ms": s["tpot_s"]["p50"] * 1e3,
        "e2e_p50_s": s["e2e_s"]["p50"],
        "kv_usage_max": s["kv_usage"]["max"],
        "mfu": s["mfu"],
        "prefix_hit_rate": s["prefix_hit_rate"],
        "preemptions": s["num_preemptions"],
    }
    if "speculation" in s:
        out["accept_len"] = s["speculation"]["mean_acceptance_length"]
    return out


def _step(point: Study, batch: str) -> dict[str, Any]:
    cost = step_cost(point, batch, allow_overflow=True)
    tokens = sum(s.num_new_tokens for s in parse_batch(batch))
    kinds = cost.breakdown("kind")
    return {
        # The step's own weights, activations and KV cache must fit one device.
        "fits": step_overflow_of(point, batch) is None,
        "step_ms": cost.time_s * 1e3,
        "tokens_per_s": tokens / cost.time_s,
        "tokens_per_s_per_chip": tokens / cost.time_s / point.devices,
        "mfu": cost.mfu,
        "mbu": cost.mbu,
        "bound": cost.dominant_bound,
        "top_kind": next(iter(kinds)),
    }
