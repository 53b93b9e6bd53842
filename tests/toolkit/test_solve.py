"""Inverse questions against closed forms on an ideal chip."""

from __future__ import annotations

import json

import pytest

from intaglio.sim.solve import solve
from intaglio.sim.study import Study, step_cost

IDEAL = {
    "name": "ideal",
    "matmul_tflops": {"bfloat16": 100.0},
    "vector_tflops": {"bfloat16": 10.0, "float32": 10.0},
    "memory": [{"name": "hbm", "capacity_gib": 80, "bandwidth_gbs": 1000}],
    "interconnect": {"bandwidth_gbs": 100, "latency_us": 0},
    "efficiency": {"matmul": [[1, 1.0]], "vector": [[1, 1.0]], "memory": [[1, 1.0]]},
    "sources": {"all": "test"},
}
BATCH = "decode:8@512"


@pytest.fixture()
def study(tmp_path):
    path = tmp_path / "ideal.json"
    path.write_text(json.dumps(IDEAL))
    return Study("llama-3.2-1b", str(path))


def test_bandwidth_for_a_memory_bound_decode_is_bytes_times_rate(study):
    cost = step_cost(study, BATCH)
    assert cost.dominant_bound == "memory"
    target = 3 * 8 / cost.time_s  # three times today's tokens per second
    # Memory time is bytes / bandwidth and compute is far below it: 3x the bandwidth.
    s = solve(study, "hw.memory.0.bandwidth_gbs", "tok_s", target, BATCH)
    assert s.required == pytest.approx(3000, rel=0.01) and s.achieved >= target
    assert s.binding == "memory"


def test_a_target_past_the_compute_roof_is_out_of_reach_by_bandwidth(study):
    cost = step_cost(study, BATCH)
    compute_floor = cost.flops / 100e12  # every op's FLOPs at the matrix peak, or slower
    target = 2 * 8 / compute_floor
    s = solve(study, "hw.memory.0.bandwidth_gbs", "tok_s", target, BATCH)
    assert s.required is None and s.binding == "compute"
    both = solve(study, "scale", "tok_s", target, BATCH)
    assert both.required is not None and both.required > 1


def test_latency_targets_search_downward(study):
    tpot = step_cost(study, BATCH).time_s * 1e3
    s = solve(study, "hw.memory.0.bandwidth_gbs", "tpot_ms", tpot / 2, BATCH)
    assert s.required == pytest.approx(2000, rel=0.01)
    chips = solve(study, "chips", "tpot_ms", tpot / 1.5, BATCH)
    assert chips.required == 2
