"""Cost model bounds on hand-checkable ops, utilisation, and the memory plan."""

from __future__ import annotations

import copy

import pytest

from intaglio.toolkit import ops as K
from intaglio.toolkit.cost import cost_step
from intaglio.toolkit.hardware import from_dict, load_hardware
from intaglio.toolkit.memory import plan_memory
from intaglio.toolkit.ops import Op
from intaglio.toolkit.parallel import collective
from intaglio.toolkit.presets import load_model_config

# 1 TFLOP/s matrix, 0.1 TFLOP/s vector, 1000 GB/s memory, 100 GB/s links, perfect efficiency.
IDEAL = {
    "name": "ideal",
    "matmul_tflops": {"bfloat16": 1.0},
    "vector_tflops": {"bfloat16": 0.1},
    "memory": [
        {"name": "sram", "capacity_gib": 1, "bandwidth_gbs": 10000, "on_chip": True},
        {"name": "dram", "capacity_gib": 64, "bandwidth_gbs": 1000},
    ],
    "interconnect": {"bandwidth_gbs": 100, "latency_us": 0},
    "efficiency": {"matmul": [[1, 1.0]], "vector": [[1, 1.0]], "memory": [[1, 1.0]]},
    "sources": {"all": "a test machine"},
}


def _matmul(m: int, k: int, n: int) -> Op:
    return Op(
        "mm",
        K.MATMUL,
        "mm",
        0,
        flops=2.0 * m * k * n,
        weight_elems=k * n,
        act_in_elems=m * k,
        act_out_elems=m * n,
        shape=(m, k, n),
    )


def test_large_matmul_is_compute_bound_and_gemv_memory_bound():
    hw = from_dict(IDEAL)
    big, gemv = _matmul(4096, 4096, 4096), _matmul(1, 16384, 16384)
    cost = cost_step([big, gemv], hw, weight_bytes_total=100 * 2**30)  # weights off chip
    assert cost.times.bound == ["compute", "memory"]
    assert cost.times.time_s[0] == pytest.approx(2 * 4096**3 / 1e12)
    gemv_bytes = 2 * (16384 * 16384 + 16384 + 16384)
    assert cost.times.time_s[1] == pytest.approx(gemv_bytes / 1e12)
    assert cost.flops == big.flops + gemv.flops
    assert cost.mfu == pytest.approx(cost.flops / cost.time_s / 1e12)
    assert cost.mbu == pytest.approx(cost.bytes / cost.time_s / 1e12)


def test_weights_that_fit_on_chip_stream_at_sram_bandwidth():
    hw = from_dict(IDEAL)
    gemv = _matmul(1, 8192, 8192)  # 128 MiB of bf16 weights: fits the 1 GiB SRAM
    on_chip = cost_step([gemv], hw).times.memory_s[0]
    off_chip = cost_step([gemv], hw, weight_bytes_total=10 * 2**30).times.memory_s[0]
    acts = 2 * (8192 + 8192)
    assert on_chip == pytest.approx(2 * 8192**2 / 1e13 + acts / 1e12)
    assert off_chip == pytest.approx((2 * 8192**2 + acts) / 1e12)


def test_vector_ops_use_the_vector_rate_and_collectives_the_link():
    hw = from_dict(IDEAL)
    norm = Op("n", K.NORM, "norm", 0, flops=1e9, act_in_elems=1, act_out_elems=1)
    ar = collective("ar", 0, "all_reduce", 1e9, group=4)  # ring: 2 * 3/4 of the bytes
    cost = cost_step([norm, ar], hw)
    assert cost.times.time_s[0] == pytest.approx(1e9 / 1e11)
    assert cost.times.bound == ["compute", "comm"]
    assert cost.times.time_s[1] == pytest.approx(1.5e9 / 1e11)


def test_overheads_efficiency_and_overlap():
    doc = copy.deepcopy(IDEAL)
    doc.update(op_overhead_us=5, step_overhead_us=100, compute_memory_overlap=0.0)
    doc["efficiency"]["matmul"] = [[1, 0.25], [1024, 0.5]]  # by rows, log-interpolated
    hw = from_dict(doc)
    mm = _matmul(32, 1024, 1024)  # 32 rows: halfway in log between 1 and 1024 -> 0.375
    cost = cost_step([mm], hw, weight_bytes_total=100 * 2**30)
    compute = mm.flops / (1e12 * 0.375)
    memory = mm.bytes / 1e12
    assert cost.times.time_s[0] == pytest.approx(compute + memory + 5e-6)  # no overlap: a sum
    assert cost.time_s == pytest.approx(compute + memory + 5e-6 + 100e-6)


def test_a_missing_dtype_rate_is_a_clear_error():
    hw = from_dict(IDEAL)
    fp8 = _matmul(8, 8, 8).replace(act_dtype="fp8")
    with pytest.raises(ValueError, match="no matmul_tflops for fp8"):
        cost_step([fp8], hw)


def test_memory_plan_weights_kv_and_what_fits():
    cfg = load_model_config("llama-3-8b")
    plan = plan_memory(cfg, load_hardware("h100-sxm"))
    # Llama 3 8B: 8.03B parameters in bf16; KV per token 2 * 32 layers * 8 heads * 128 * 2 B.
    assert plan.weight_bytes == pytest.approx(8.03e9 * 2, rel=0.01)
    assert plan.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert plan.fits and plan.num_kv_blocks == plan.kv_capacity_tokens // 16
    big = load_model_config("llama-3-405b")
    assert not plan_memory(big, load_hardware("h100-sxm")).fits
    tp8 = plan_memory(big, load_hardware("h200"), tp=8)
    assert tp8.fits
    assert tp8.kv_bytes_per_token == 2 * 126 * 1 * 128 * 2  # 8 KV heads over 8 devices
    fp8 = plan_memory(big, load_hardware("h100-sxm"), tp=8, weight_dtype="fp8")
    assert fp8.weight_bytes < tp8.weight_bytes * 0.51


def test_memory_plan_splits_experts_over_expert_parallel_devices():
    cfg = load_model_config("llama-4-maverick")
    one = plan_memory(cfg, load_hardware("h200"))
    ep8 = plan_memory(cfg, load_hardware("h200"), ep=8)
    assert one.weight_bytes == pytest.approx(400.7e9 * 2, rel=0.01) and not one.fits
    assert ep8.fits and ep8.weight_bytes < one.weight_bytes / 4
