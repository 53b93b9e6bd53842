"""Inverse questions: what must a hardware parameter be for a model to reach a target?

A target is a metric and a value: `tok_s` (tokens per second: the step's tokens over its
time, or a served workload's total throughput), `out_tok_s` (served output tokens per
second), `ttft_ms` or `tpot_ms` (a step's time, or the served p50; `ttft_p99_ms` and
`tpot_p99_ms` for the tails). A parameter is a hardware field (`hw.memory.1.bandwidth_gbs`,
`hw.matmul_tflops.fp8`, `hw.interconnect.bandwidth_gbs`, `hw.memory.0.capacity_gib`, ...),
`scale` (every throughput and bandwidth of the chip times one factor), or `chips` (the
tensor-parallel degree, powers of two). Latencies and overheads (`hw.interconnect.latency_us`,
`hw.op_overhead_us`) are searched downward. Parameters joined by `+` improve by one factor
together (`scale+hw.interconnect.latency_us`: a chip faster in every rate and link latency).
Each is searched alone, the others held at the description's values: bisection over a
factor of the described value (metrics improve monotonically with a faster part), down to
0.5% of it. The answer names the value needed and what binds there (the bound that takes
most of the step's time), or says the target is out of reach at 1000x and what binds then.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from intaglio.sim.report import summarize
from intaglio.sim.study import Study, serve, step_cost, step_overflow_of
from intaglio.toolkit.passes import parse_batch, pass_setting

METRICS = ("tok_s", "out_tok_s", "ttft_ms", "tpot_ms", "ttft_p99_ms", "tpot_p99_ms")
_HIGHER_IS_BETTER = ("tok_s", "out_tok_s")
_MAX_FACTOR = 1000.0


@dataclass(frozen=True)
class Solution:
    param: str
    described: float  # the description's value (chips: the passes' tp)
    required: float | None  # None: out of reach
    achieved: float  # the metric at `required` (or at the search's top when out of reach)
    binding: str  # what bounds the step there: compute, memory, comm, overhead, or fit
    note: str

    def row(self) -> dict[str, Any]:
        ratio = self.required / self.described if self.required and self.described else None
        return {
            "param": self.param,
            "described": self.described,
            "required": "out of reach" if self.required is None else self.required,
            "x_described": "" if ratio is None else ratio,
            "achieved": self.achieved,
            "binding": self.binding,
            "note": self.note,
        }


def parse_target(spec: str) -> tuple[str, float]:
    metric, _, value = spec.partition("=")
    if metric not in METRICS or not value:
        raise ValueError(f"--target needs METRIC=VALUE with METRIC one of {list(METRICS)}")
    return metric, float(value)


def _rates(doc: dict[str, Any]) -> list[str]:
    """Every throughput and bandwidth path of a description (what `scale` multiplies)."""
    paths = [f"matmul_tflops.{d}" for d in doc["matmul_tflops"]]
    paths += [f"vector_tflops.{d}" for d in doc["vector_tflops"]]
    paths += [f"memory.{i}.bandwidth_gbs" for i in range(len(doc["memory"]))]
    if doc.get("interconnect", {}).get("bandwidth_gbs"):
        paths.append("interconnect.bandwidth_gbs")
    return paths


def _lookup(doc: Any, path: str) -> float:
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return float(doc)


def _lower_is_better(param: str) -> bool:
    return param.endswith(("latency_us", "overhead_us"))


def _with_factor(study: Study, param: str, factor: float) -> Study:
    """The study with `param` improved `factor` times (a latency or overhead divided);
    parameters joined by '+' all improve together."""
    doc = study.hw().raw
    overrides = copy.deepcopy(study.hw_overrides)
    for part in param.split("+"):
        if part == "scale":
            paths = _rates(doc)
        elif part.startswith("hw."):
            paths = [part[3:]]
        else:
            raise ValueError(f"unknown parameter {part!r}; use hw.FIELD.PATH, scale or chips")
        f = 1.0 / factor if _lower_is_better(part) else factor
        for path in paths:
            try:
                overrides[path] = _lookup(doc, path) * f
            except (KeyError, IndexError, ValueError):
                raise ValueError(
                    f"{study.hardware}: no numeric field {path!r} to solve for"
                ) from None
    return dataclasses.replace(study, hw_overrides=overrides)


def _with_chips(study: Study, chips: int) -> Study:
    kept = [p for p in study.passes.split(",") if p and not p.startswith("tp=")]
    return dataclasses.replace(study, passes=",".join([f"tp={chips}", *kept]))


def measure(study: Study, metric: str, batch: str | None) -> tuple[float, str]:
    """(the metric, what binds) for one step of `batch`, or serving when batch is None."""
    if batch is not None:
        if step_overflow_of(study, batch):
            return (0.0 if metric in _HIGHER_IS_BETTER else math.inf), "fit"
        cost = step_cost(study, batch)
        tokens = sum(s.num_new_tokens for s in parse_batch(batch))
        value = tokens / cost.time_s if metric in _HIGHER_IS_BETTER else cost.time_s * 1e3
        return value, cost.dominant_bound
    try:
        s = summarize(serve(study)[0])
    except ValueError:  # the model does not fit
        return (0.0 if metric in _HIGHER_IS_BETTER else math.inf), "fit"
    value = {
        "tok_s": s["total_throughput"],
        "out_tok_s": s["output_throughput"],
        "ttft_ms": s["ttft_s"]["p50"] * 1e3,
        "tpot_ms": s["tpot_s"]["p50"] * 1e3,
        "ttft_p99_ms": s["ttft_s"]["p99"] * 1e3,
        "tpot_p99_ms": s["tpot_s"]["p99"] * 1e3,
    }[metric]
    return value, "serving"


def _meets(metric: str, value: float, target: float) -> bool:
    return value >= target if metric in _HIGHER_IS_BETTER else value <= target


def solve(study: Study, param: str, metric: str, target: float, batch: str | None) -> Solution:
    if param == "chips":
        return _solve_chips(study, metric, target, batch)
    joint = param == "scale" or "+" in param  # a factor, not one field's value
    described = 1.0 if joint else _lookup(study.hw().raw, param[3:])
    top = _with_factor(study, param, _MAX_FACTOR)
    best, bound = measure(top, metric, batch)
    if not _meets(metric, best, target):
        note = {
            "fit": "the batch does not fit the device's memory",
            "serving": f"the served workload reaches {best:.4g} at {_MAX_FACTOR:g}x",
        }.get(bound, f"at {_MAX_FACTOR:g}x the step is {bound} bound")
        return Solution(param, described, None, best, bound, note)
    lo, hi = 1.0 / _MAX_FACTOR, _MAX_FACTOR  # factors: hi meets the target
    if _meets(metric, measure(_with_factor(study, param, lo), metric, batch)[0], target):
        hi = lo
    while hi / lo > 1.005:
        mid = math.sqrt(lo * hi)
        if _meets(metric, measure(_with_factor(study, param, mid), metric, batch)[0], target):
            hi = mid
        else:
            lo = mid
    achieved, bound = measure(_with_factor(study, param, hi), metric, batch)
    note = "already met by the description" if hi <= 1.0 else ""
    required = described / hi if _lower_is_better(param) and not joint else described * hi
    return Solution(param, described, required, achieved, bound, note)


def _solve_chips(study: Study, metric: str, target: float, batch: str | None) -> Solution:
    described = float(pass_setting(study.passes, "tp") or 1)
    last: tuple[float, str] = (0.0, "fit")
    for chips in (1, 2, 4, 8, 16, 32, 64):
        try:
            point = _with_chips(study, chips)
            last = measure(point, metric, batch)
        except ValueError as e:  # heads that do not split, for one
            return Solution("chips", described, None, last[0], "split", str(e))
        if _meets(metric, last[0], target):
            return Solution("chips", described, float(chips), last[0], last[1], "tensor parallel")
    return Solution("chips", described, None, last[0], last[1], "not reached at 64 chips")


def default_params(study: Study) -> list[str]:
    """Main-memory bandwidth and capacity, matrix throughput at the passes' dtype, the link,
    everything at once, and the chip count."""
    doc = study.hw().raw
    main = len(doc["memory"]) - 1
    dtype = pass_setting(study.passes, "a") or "bfloat16"
    dtype = {"bf16": "bfloat16"}.get(dtype, dtype)
    params = [f"hw.memory.{main}.bandwidth_gbs", f"hw.memory.{main}.capacity_gib"]
    if dtype in doc["matmul_tflops"]:
        params.append(f"hw.matmul_tflops.{dtype}")
    if doc.get("interconnect", {}).get("bandwidth_gbs"):
        params.append("hw.interconnect.bandwidth_gbs")
    return [*params, "scale", "chips"]
