"""Workloads for the simulator: arrival times, prompt and output lengths, prefixes, priorities.

Lengths are drawn from a distribution spec: "fixed:N", "uniform:LO:HI", "normal:MEAN:STD" or
"lognormal:MEDIAN:SIGMA" (rounded, clipped to at least 1), or both from a named preset
(LENGTH_PRESETS: "sharegpt"). Arrivals are Poisson at `rate`
requests per second, or all at time 0 when `rate` is None (an offline batch), or taken from a
trace (JSONL lines or CSV rows with arrival_s, input_len, output_len and optional priority).
Shared prefixes: each prompt starts with one of `num_prefixes` prompts of `prefix_len` tokens,
so a prefix cache has something to find.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def lognormal_with_mean(mean: float, sigma: float) -> str:
    """The length spec of a log-normal of this mean: median = mean / exp(sigma^2 / 2)."""
    return f"lognormal:{mean / math.exp(sigma**2 / 2):.6g}:{sigma:g}"


# ShareGPT as the vLLM paper serves it (Kwon et al., "Efficient Memory Management for Large
# Language Model Serving with PagedAttention", SOSP 2023, Fig. 11): mean input 161.31 and mean
# output 337.99 tokens, both right-skewed with a spike near zero and tails to about 2000 tokens.
# The paper gives means and histograms, no medians; sigma = 1 keeps the means and puts the
# outputs' 99th percentile at 2100 tokens, where the histogram ends. No data is downloaded.
SHAREGPT_SIGMA = 1.0
LENGTH_PRESETS = {
    "sharegpt": (
        lognormal_with_mean(161.31, SHAREGPT_SIGMA),
        lognormal_with_mean(337.99, SHAREGPT_SIGMA),
    ),
}


def preset_lengths(name: str) -> tuple[str, str]:
    """(input, output) length specs of a named preset."""
    if name not in LENGTH_PRESETS:
        raise ValueError(f"unknown length preset {name!r}; choose one of {sorted(LENGTH_PRESETS)}")
    return LENGTH_PRESETS[name]


@dataclass(frozen=True)
class SimRequest:
    request_id: str
    arrival_s: float
    prompt_token_ids: tuple[int, ...]
    output_len: int  # per sample; a grammar or an abort may end it sooner
    priority: int = 0
    n: int = 1  # samples, forked from the first once the prompt is computed
    abort_s: float | None = None  # virtual time at which the client gives up
    structured: Any = None  # a constraint (StructuredOutput or its fields) on each sample

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)


def sample_lengths(spec: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n positive lengths from a spec such as 'uniform:64:256'."""
    kind, *args = spec.split(":")
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"length spec {spec!r}: parameters must be numbers") from None
    expected = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}
    if kind not in expected or len(nums) != expected[kind]:
        raise ValueError(
            f"length spec {spec!r}: use fixed:N, uniform:LO:HI, normal:MEAN:STD or "
            "lognormal:MEDIAN:SIGMA"
        )
    if kind == "fixed":
        x = np.full(n, nums[0])
    elif kind == "uniform":
        if nums[0] > nums[1]:
            raise ValueError(f"length spec {spec!r}: LO must not exceed HI")
        x = rng.integers(int(nums[0]), int(nums[1]) + 1, n)
    elif kind == "normal":
        x = rng.normal(nums[0], nums[1], n)
    else:
        x = rng.lognormal(np.log(nums[0]), nums[1], n)
    return np.maximum(np.rint(x), 1).astype(np.int64)


def synthetic_workload(
    num_requests: int,
    input_len: str = "uniform:64:256",
    output_len: str = "uniform:64:256",
    rate: float | None = None,
    num_prefixes: int = 0,
    prefix_len: int = 0,
    priorities: int = 1,
    vocab_size: int = 32000,
    seed: int = 0,
) -> list[SimRequest]:
    if num_requests < 1:
        raise ValueError("a workload needs at least one request")
    if rate is not None and rate <= 0:
        raise ValueError(f"the arrival rate must be positive, got {rate}")
    rng = np.random.default_rng(seed)
    ins = sample_lengths(input_len, num_requests, rng)
    outs = sample_lengths(output_len, num_requests, rng)
    if rate is None:
        arrivals = np.zeros(num_requests)
    else:
        arrivals = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    prefixes = [rng.integers(3, vocab_size, prefix_len).tolist() for _ in range(num_prefixes)]
    which = rng.integers(0, max(num_prefixes, 1), num_requests)
    prio = rng.integers(0, max(priorities, 1), num_requests)
    out = []
    for i in range(num_requests):
        head = prefixes[which[i]] if prefixes else []
        body = rng.integers(3, vocab_size, int(ins[i])).tolist()
        out.append(
            SimRequest(
                f"sim-{i}", float(arrivals[i]), tuple(head + body), int(outs[i]), int(prio[i])
            )
        )
    return out


def trace_workload(path: str | Path, vocab_size: int = 32000, seed: int = 0) -> list[SimRequest]:
    """Requests from a JSONL or CSV trace with arrival_s, input_len, output_len[, priority]."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    if path.suffix == ".csv":
        with path.open() as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    out = []
    for i, row in enumerate(rows):
        try:
            arrival, n_in, n_out = (
                float(row["arrival_s"]),
                int(row["input_len"]),
                int(row["output_len"]),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"{path} row {i + 1}: needs numeric arrival_s, input_len, output_len ({e})"
            ) from None
        if n_in < 1 or n_out < 1 or arrival < 0:
            raise ValueError(f"{path} row {i + 1}: lengths must be positive, arrival >= 0")
        prompt = tuple(rng.integers(3, vocab_size, n_in).tolist())
        out.append(SimRequest(f"trace-{i}", arrival, prompt, n_out, int(row.get("priority", 0))))
    return sorted(out, key=lambda r: r.arrival_s)
