"""Smoke test: `intaglio bench scheduling` runs every scenario on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

from intaglio.cli.main import main


def test_bench_scheduling_all_scenarios(tmp_path: Path) -> None:
    out = tmp_path / "sched.json"
    argv = [
        *"bench scheduling --random-config tiny --dtype float32 --num-requests 8".split(),
        *"--prefix-len 48 --unique-len 8 --n 4 --input-len 16 --output-len 3".split(),
        *"--request-rate 200 --block-size 4".split(),
        *["--json-out", str(out)],
    ]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    shared = r["shared-prefix"]
    # 8 prompts of 56 tokens share 48: with caching only the first computes the prefix.
    assert shared["off"]["prefill_tokens_computed"] == 8 * 56
    assert shared["on"]["hit_tokens"] == 7 * 48
    assert shared["on"]["prefill_tokens_computed"] == 8 * 56 - 7 * 48
    fork = r["n-samples"]
    assert fork["n=8 forked"]["peak_kv_blocks"] < fork["separate, caching off"]["peak_kv_blocks"]
    for policy in ("fcfs", "priority"):
        assert r["priority"][policy]["high_ttft"]["p99_ms"] > 0
    assert set(r["interleave"]) == {"stall-free", "prefill-first", "decode-first"}
