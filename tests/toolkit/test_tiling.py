"""The tile model: hand-counted cycles, the pipeline's closed form, and its monotonicity."""

from __future__ import annotations

import random

import pytest

from intaglio.sim.study import Study
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.hardware import load_hardware
from intaglio.toolkit.lowering import lower_step
from intaglio.toolkit.onchip import MatrixUnit
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.passes import parse_passes
from intaglio.toolkit.pipeline import pipeline_exact, pipeline_uniform
from intaglio.toolkit.step_model import apply_passes
from intaglio.toolkit.tiling import Feeds, tile_gemm

INF = float("inf")
# One 4 x 4 weight-stationary array; one cycle = 1 s and 1 byte/s everywhere, so seconds
# are cycles and bytes alike.
SMALL = MatrixUnit("systolic", (1, 4, 4), 1)


def feeds(buffer: float) -> Feeds:
    return Feeds(1.0, 1.0, 1.0, buffer, INF, 1.0)


def test_one_tile_is_one_fold_then_the_stores():
    # 8 x 4 x 4 in one fold: 2 x 4 (load weights, fill) + 4 (drain) + 8 rows - 2 = 18 cycles.
    t = tile_gemm(8, 4, 4, 1, 1, 1, SMALL, feeds(1e6), tile=(8, 4, 4))
    assert t.cycles == 18 and t.total_steps == 1
    # Loads A (32 B) and B (16 B), stores C (32 B): 80 bytes, then the one compute.
    assert (t.a_bytes, t.b_bytes, t.c_bytes) == (32, 16, 32)
    assert t.time_s == 80 + 18


def test_several_tiles_pipeline_behind_the_loads():
    # 8 x 16 x 8 as 8 x 4 x 4 tiles: 2 column tiles x 4 k steps = 8 steps of 18 cycles each.
    # A buffer of 224 bytes holds the tiles (2 x 32 A + 2 x 16 B + 8 x 4 x 4 accumulator)
    # but not all of A (128 B), so A is read once per column tile: 256 + 128 + 64 = 448 B.
    t = tile_gemm(8, 16, 8, 1, 1, 1, SMALL, feeds(224), tile=(8, 4, 4))
    assert not t.a_stationary and t.total_steps == 8 and t.cycles == 8 * 18
    assert t.a_bytes + t.b_bytes + t.c_bytes == 448
    # Loads (56 s a step) outrun compute (18 s): all loads back to back, then one compute.
    assert t.time_s == pytest.approx(448 + 18)


def test_a_bigger_buffer_keeps_a_on_chip_and_saves_the_re_reads():
    # With 288 bytes A (128 B) stays whole: 128 + 128 + 64 = 320 B.
    t = tile_gemm(8, 16, 8, 1, 1, 1, SMALL, feeds(288), tile=(8, 4, 4))
    assert t.a_stationary and t.a_bytes == 128
    assert t.time_s == pytest.approx(320 + 18)


def test_compute_bound_tiles_hide_all_but_the_first_load():
    # Fast memory (1000 B/s): 8 steps of 18 cycles after a first load of 56 / 1000 s.
    fast = Feeds(1000.0, 1000.0, 1000.0, 224, INF, 1.0)
    t = tile_gemm(8, 16, 8, 1, 1, 1, SMALL, fast, tile=(8, 4, 4))
    assert t.time_s == pytest.approx(448 / 1000 / 8 + 8 * 18)


def test_closed_form_pipeline_equals_the_step_by_step_schedule():
    rng = random.Random(0)
    for _ in range(3000):
        n = rng.randint(1, 9)
        load, compute = rng.choice([0.0, rng.random()]), rng.random()
        start, ready = rng.random(), 3 * rng.random()
        steps = pipeline_exact([load] * n, [compute] * n, start, ready)
        load_end, compute_end = pipeline_uniform(n, load, compute, start, ready)
        assert load_end == pytest.approx(steps[-1][1]) and compute_end == pytest.approx(
            steps[-1][3]
        )


def _roofline(m: int, k: int, n: int, peak_macs_s: float, bandwidth: float) -> float:
    return max(m * k * n / peak_macs_s, 2 * (m * k + k * n + m * n) / bandwidth)


@pytest.mark.parametrize(
    "unit", [MatrixUnit("tile", (16, 16, 8), 64), MatrixUnit("systolic", (1, 128, 128), 4)]
)
def test_bigger_buffers_approach_the_roofline_from_above(unit):
    m = k = n = 4096
    cycle = 1e-9
    bandwidth = 2e12
    times = []
    for mib in (0.25, 1, 4, 16, 64, 256):
        f = Feeds(bandwidth, bandwidth, bandwidth, mib * 2**20, INF, cycle)
        times.append(tile_gemm(m, k, n, 2, 2, 2, unit, f).time_s)
    roof = _roofline(m, k, n, unit.macs_per_cycle / cycle, bandwidth)
    assert all(t >= roof for t in times)
    assert times == sorted(times, reverse=True)  # never slower with more buffer
    # A systolic array also pays 2 rows + cols - 2 fill cycles per fold of 4096 rows.
    fill = (2 * 128 + 128 - 2) / 4096 if unit.kind == "systolic" else 0.0
    assert times[-1] <= roof * (1 + fill) * 1.02
    assert times[0] > 1.5 * roof  # a small buffer re-reads operands


def test_a_bigger_buffer_or_sram_never_makes_a_step_slower():
    study = Study("llama-3-8b", "transformer-asic", "tp=2,fuse")
    ops = apply_passes(
        capture_step(study.config(), [SeqShape(1, 1024)] * 32 + [SeqShape(256, 256)]),
        parse_passes(study.passes),
    )
    weights = study.plan().weight_bytes
    base = load_hardware("transformer-asic")
    last = INF
    for mib, sram_gib in ((1, 0.25), (4, 0.25), (16, 0.5), (64, 0.5), (64, 4.0), (256, 16.0)):
        hw = base.with_overrides(
            {"on_chip.tile_buffer_mib": mib, "memory.0.capacity_gib": sram_gib}
        )
        t = lower_step(ops, hw, weights).time_s
        assert t <= last * (1 + 1e-9), (mib, sram_gib)
        last = t


def test_lowering_keeps_the_bytes_and_refuses_a_chip_without_geometry():
    study = Study("llama-3.2-1b", "transformer-asic")
    ops = capture_step(study.config(), [SeqShape(1, 512)] * 8)
    low = lower_step(ops, study.hw(), study.plan().weight_bytes)
    kv = sum(o.kv_bytes for o in ops)
    assert low.bytes_by_class["kv"] == pytest.approx(kv)  # one pass reads each K and V once
    # 2.3 GiB of weights: all but the activations' room of the 0.5 GiB SRAM holds weights.
    res = low.residency
    assert res.resident_kv_bytes == 0 and 0 < res.free_bytes < 0.05 * res.capacity_bytes
    assert res.resident_weight_bytes + res.free_bytes == res.capacity_bytes
    big = study.hw().with_overrides({"memory.0.capacity_gib": 4})
    roomy = lower_step(ops, big, study.plan().weight_bytes)
    assert roomy.residency.weight_fraction == 1 and roomy.residency.kv_fraction == 1
    # Everything streams at SRAM bandwidth; what is left is the matrix units' time (8 rows
    # fill 8 of a 128-wide array's columns).
    assert roomy.busy["dma"] < low.busy["dma"] / 10 and roomy.time_s < low.time_s
    assert roomy.time_s == pytest.approx(roomy.busy["matrix"], rel=0.1)
    with pytest.raises(ValueError, match="no on_chip section"):
        lower_step(ops, load_hardware("h100-sxm"), 1e9)
