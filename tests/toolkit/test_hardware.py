"""Hardware descriptions: every shipped file validates; malformed ones fail with clear errors."""

from __future__ import annotations

import copy
import json

import pytest

from intaglio.toolkit.hardware import (
    HardwareError,
    available_hardware,
    from_dict,
    load_hardware,
)

GOOD = {
    "name": "toy",
    "matmul_tflops": {"bf16": 1.0},
    "vector_tflops": {"bf16": 0.5},
    "memory": [{"name": "dram", "capacity_gib": 8, "bandwidth_gbs": 100}],
    "efficiency": {"matmul": [[1, 1.0]], "vector": [[1, 1.0]], "memory": [[1, 1.0]]},
    "sources": {"everything": "made up for a test"},
}


def test_every_shipped_description_loads():
    names = available_hardware()
    for required in ("h100-sxm", "h200", "b200", "mi300x", "tpu-v5e", "transformer-asic"):
        assert required in names
    for name in names:
        hw = load_hardware(name)
        assert hw.main_memory.bandwidth_bytes_s > 0
        assert hw.raw["sources"], f"{name} cites no sources"


def test_h100_figures_are_the_datasheet_ones():
    hw = load_hardware("h100-sxm")
    assert hw.matmul_rate("bfloat16") == pytest.approx(989.4e12)
    assert hw.main_memory.bandwidth_bytes_s == pytest.approx(3.35e12)
    assert hw.main_memory.capacity_bytes == pytest.approx(80e9)


def test_asic_labels_every_number_an_assumption():
    hw = load_hardware("transformer-asic")
    assert all("assumption" in v for v in hw.raw["sources"].values())
    assert any(level.on_chip for level in hw.memory)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("memory"), "missing required field"),
        (lambda d: d.update(colour="red"), "unknown field"),
        (lambda d: d["memory"][0].update(bandwidth_gbs=-1), r"memory\[0\].bandwidth_gbs"),
        (lambda d: d["matmul_tflops"].update(fp7=3), "unknown dtype 'fp7'"),
        (lambda d: d["efficiency"].update(matmul=[[10, 0.5], [5, 0.6]]), "strictly increasing"),
        (lambda d: d["efficiency"].update(memory=[[10, 1.5]]), r"fractions must lie in \(0, 1\]"),
        (lambda d: d["efficiency"].pop("vector"), "efficiency must have exactly"),
        (lambda d: d.update(kind_efficiency={"teleport": 0.5}), "unknown op kind 'teleport'"),
        (lambda d: d.update(compute_memory_overlap=2), "compute_memory_overlap"),
        (lambda d: d.update(sources={}), "sources"),
    ],
)
def test_bad_descriptions_name_the_field(change, message):
    doc = copy.deepcopy(GOOD)
    change(doc)
    with pytest.raises(HardwareError, match=message):
        from_dict(doc, source="toy.json")


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="bad.json: not valid JSON"):
        load_hardware(bad)
    with pytest.raises(HardwareError, match="no hardware description 'nope'"):
        load_hardware("nope")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    assert load_hardware(good).name == "toy"


def test_overrides_change_one_field_and_revalidate():
    hw = load_hardware("h100-sxm")
    faster = hw.with_overrides({"memory.1.bandwidth_gbs": 6700, "matmul_tflops.bfloat16": 2000})
    assert faster.main_memory.bandwidth_bytes_s == pytest.approx(6.7e12)
    assert faster.matmul_rate("bfloat16") == pytest.approx(2e15)
    assert hw.main_memory.bandwidth_bytes_s == pytest.approx(3.35e12)  # the original is intact
    with pytest.raises(HardwareError):
        hw.with_overrides({"memory.1.bandwidth_gbs": 0})
    with pytest.raises(HardwareError, match="no field 'memory.7.bandwidth_gbs'"):
        hw.with_overrides({"memory.7.bandwidth_gbs": 1})
    with pytest.raises(HardwareError, match="has no matmul_tflops for fp8"):
        load_hardware("tpu-v5e").matmul_rate("fp8")
