"""Smoke test: `intaglio bench throughput` runs end to end on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intaglio.cli.main import main

# Small workload and small machine probes, so the whole file stays well under 20 s.
PROBES = "--bandwidth-mib 16 --matmul-max-size 128".split()
FAST = [
    *"bench throughput --random-config tiny --num-requests 4 --max-num-seqs 2".split(),
    *"--input-len 4 12 --output-len 2 6".split(),
    *PROBES,
]


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    assert main([*FAST, "--json-out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def _check_row(row: dict, roof: dict) -> None:
    assert row["elapsed_s"] > 0
    assert row["output_tok_s"] > 0
    assert row["total_tok_s"] > row["output_tok_s"]
    assert row["roofline_fraction"] == pytest.approx(roof["floor_s"] / row["elapsed_s"])
    # Achieved bandwidth: the bytes of the floor's steps over the measured time.
    assert row["achieved_gbs"] == pytest.approx(roof["floor_bytes"] / row["elapsed_s"] / 1e9)
    rate = row["decode_tok_s_per_stream"]
    want = None if rate is None else pytest.approx(rate * roof["decode"]["bytes"] / 1e9)
    assert row["decode_gbs"] == want


def _check_roofline(roof: dict, machine: dict) -> None:
    """The roofline is the toolkit's captured steps over the measured limits."""
    d, p = roof["decode"], roof["prefill"]
    for step in (d, p):
        assert step["flops"] > 0 and step["weight_bytes"] > 0 and step["kv_bytes"] > 0
        assert step["bytes"] == pytest.approx(
            step["weight_bytes"] + step["kv_bytes"] + step["act_bytes"]
        )
        assert step["memory_time_s"] == pytest.approx(
            step["bytes"] / (machine["read_bandwidth_gbs"] * 1e9)
        )
        assert step["compute_time_s"] == pytest.approx(
            step["flops"] / (roof["compute_tflops"] * 1e12)
        )
        assert step["time_s"] == max(step["memory_time_s"], step["compute_time_s"])
    assert roof["compute_tflops"] == max(machine["matmul_tflops"].values())
    assert d["tokens_per_s"] == pytest.approx(d["batch"] / d["time_s"])
    assert roof["prefill_floor_s"] == p["time_s"]
    assert roof["floor_s"] == pytest.approx(roof["prefill_floor_s"] + roof["decode_floor_s"])


def test_bench_throughput_skip_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(tmp_path, "--skip-hf")
    assert result["hf"] is None
    _check_row(result["intaglio"], result["roofline"])
    _check_roofline(result["roofline"], result["machine"])
    assert result["intaglio"]["mean_ttft_s"] > 0
    w = result["workload"]
    assert w["num_requests"] == 4
    assert 4 * 2 <= w["num_output_tokens"] <= 4 * 6
    m = result["machine"]
    assert m["read_bandwidth_gbs"] > 0 and m["matmul_tflops"]["float32"] > 0
    assert result["roofline"]["decode"]["tokens_per_s"] > 0
    d = result["roofline"]["decode"]
    assert d["batch"] == 2  # min(num_requests, max_num_seqs)
    # The steady-state decode step: each sequence halfway through its output.
    assert d["context"] == round(w["mean_input_len"] + w["mean_output_len"] / 2)
    remaining = w["num_output_tokens"] - w["num_requests"]
    assert result["roofline"]["decode_floor_s"] == pytest.approx(remaining / d["tokens_per_s"])
    assert result["roofline"]["floor_bytes"] == pytest.approx(
        result["roofline"]["prefill"]["bytes"] + remaining / 2 * d["bytes"]
    )
    out = capsys.readouterr().out
    assert "intaglio" in out and "GB/s" in out


def test_bench_throughput_with_hf(tmp_path: Path) -> None:
    result = _run(tmp_path, "--dtype", "float32")
    _check_row(result["intaglio"], result["roofline"])
    _check_row(result["hf"], result["roofline"])
    _check_roofline(result["roofline"], result["machine"])
    assert result["hf"]["batch_size"] == 2


def test_bench_throughput_single_stream(tmp_path: Path) -> None:
    out = tmp_path / "ss.json"
    argv = [
        *"bench throughput --random-config tiny --single-stream".split(),
        *"--input-len 8 8 --output-len 6 6".split(),
        *PROBES,
        *["--json-out", str(out)],
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["workload"]["num_requests"] == 1
    assert result["intaglio"]["decode_tok_s_per_stream"] > 0
    assert result["hf"]["decode_tok_s_per_stream"] is not None
    assert result["roofline"]["decode"]["batch"] == 1
    for row in (result["intaglio"], result["hf"]):
        _check_row(row, result["roofline"])
        assert row["decode_gbs"] > 0
