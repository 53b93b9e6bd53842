"""Smoke test: `intaglio bench moe` times every preset and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from intaglio.cli.main import main


def test_bench_moe_runs_every_preset(tmp_path: Path) -> None:
    out = tmp_path / "moe.json"
    argv = "bench moe --hidden 32 --tokens 1 5 --repeats 1".split()
    assert main([*argv, "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["presets"]) == {"llama4", "mixtral", "qwen3_moe"}
    for preset in result["presets"].values():
        shape, rows = preset["shape"], preset["rows"]
        assert shape["hidden"] == 32
        assert [r["tokens"] for r in rows] == [1, 5]
        for r in rows:
            assert r["moe_ms"] > 0 and r["dense_ms"] > 0
            assert shape["top_k"] <= r["experts_touched"] <= shape["num_experts"]
        assert rows[0]["experts_touched"] == shape["top_k"]  # one token, k experts
