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


def _check_row(row: dict) -> None:
    assert row["elapsed_s"] > 0
    assert row["output_tok_s"] > 0
    assert row["total_tok_s"] > row["output_tok_s"]
    assert row["roofline_fraction"] > 0


def test_bench_throughput_skip_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _run(tmp_path, "--skip-hf")
    assert result["hf"] is None
    _check_row(result["intaglio"])
    assert result["intaglio"]["mean_ttft_s"] > 0
    w = result["workload"]
    assert w["num_requests"] == 4
    assert 4 * 2 <= w["num_output_tokens"] <= 4 * 6
    m = result["machine"]
    assert m["read_bandwidth_gbs"] > 0 and m["matmul_tflops"]["float32"] > 0
    assert result["roofline"]["decode"]["tokens_per_s"] > 0
    assert result["roofline"]["decode"]["batch"] == 2  # min(num_requests, max_num_seqs)
    assert "intaglio" in capsys.readouterr().out


def test_bench_throughput_with_hf(tmp_path: Path) -> None:
    result = _run(tmp_path, "--dtype", "float32")
    _check_row(result["intaglio"])
    _check_row(result["hf"])
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
