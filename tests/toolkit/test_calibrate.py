"""Calibration's fit recovers known overheads and attention efficiency from step timings."""

from __future__ import annotations

import copy

import pytest

from intaglio.model.config import ModelConfig
from intaglio.toolkit.calibrate import fit_to_steps
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.cost import cost_step
from intaglio.toolkit.hardware import from_dict
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.presets import load_model_config

CPU = {
    "name": "cpu",
    "matmul_tflops": {"float32": 0.2},
    "vector_tflops": {"float32": 0.2},
    "memory": [{"name": "dram", "capacity_gib": 16, "bandwidth_gbs": 12}],
    "efficiency": {
        "matmul": [[1, 0.1], [64, 0.6], [512, 0.9]],
        "vector": [[1, 1.0]],
        "memory": [[1, 1.0]],
    },
    "op_overhead_us": 12.0,
    "sources": {"all": "a test"},
}


def test_fit_recovers_the_parameters_that_generated_the_steps():
    cfg = load_model_config("qwen3-0.6b", "float32")
    truth = copy.deepcopy(CPU)
    truth.update(step_overhead_us=800.0, kind_efficiency={"attention": 0.2})
    hw = from_dict(truth)
    batches = [
        [SeqShape(1, 64)],
        [SeqShape(1, 300)] * 16,
        [SeqShape(128, 128)],
        [SeqShape(200, 700)],
        [SeqShape(1, 100)] * 4 + [SeqShape(50, 50)],
    ]
    samples = []
    for seqs in batches:
        ops = capture_step(cfg, seqs)
        samples.append((ops, cost_step(ops, hw).time_s))
    fitted = fit_to_steps(CPU, samples)
    assert fitted["step_overhead_us"] == pytest.approx(800.0, rel=1e-6)
    assert fitted["kind_efficiency"]["attention"] == pytest.approx(0.2, rel=1e-6)
    assert "fitted" in fitted["sources"]["step_overhead_us"]
    from_dict(fitted)  # still a valid description


def test_capture_reads_a_checkpoint_folder(checkpoint):
    folder = checkpoint("llama")
    cfg = load_model_config(str(folder))
    assert isinstance(cfg, ModelConfig)
    ops = capture_step(cfg, [SeqShape(3, 3)])
    assert sum(o.role == "attention" for o in ops) == cfg.num_layers
