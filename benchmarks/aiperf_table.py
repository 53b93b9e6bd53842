"""The table of benchmarks/aiperf_compare.sh: what aiperf and `intaglio bench serve` measured on
the same workload, per concurrency, with aiperf's figure over ours.

    python benchmarks/aiperf_table.py runs/aiperf 1 4 16
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from intaglio.ops.cpu_kernels import cpu_flags

# (label, our JSON path, aiperf metric and statistic); aiperf's ITL is per request
# (latency - TTFT) / (output tokens - 1), which is our TPOT.
ROWS = [
    ("req/s", ("request_throughput",), ("request_throughput", "avg")),
    ("output tok/s", ("output_tok_s",), ("output_token_throughput", "avg")),
    ("TTFT p50 (ms)", ("ttft_ms", "p50"), ("time_to_first_token", "p50")),
    ("TTFT p99 (ms)", ("ttft_ms", "p99"), ("time_to_first_token", "p99")),
    ("TPOT p50 (ms)", ("tpot_ms", "p50"), ("inter_token_latency", "p50")),
    ("E2E p50 (ms)", ("e2e_ms", "p50"), ("request_latency", "p50")),
]


def _ours(record: dict, path: tuple[str, ...]) -> float:
    value = record
    for key in path:
        value = value[key]
    return float(value)  # type: ignore[arg-type]


def _cpu_seconds(file: Path) -> float:
    """bash `time` with TIMEFORMAT=%U+%S: user + system seconds (last line; earlier lines are
    the command's own stderr)."""
    user, system = file.read_text().strip().splitlines()[-1].split("+")
    return float(user) + float(system)


def table(folder: Path, concurrencies: list[str]) -> str:
    lines = [
        "| concurrency | metric | intaglio bench serve | aiperf | aiperf / ours |",
        "|---|---|---|---|---|",
    ]
    for c in concurrencies:
        ours = json.loads((folder / f"intaglio_c{c}.json").read_text())
        theirs = json.loads((folder / f"aiperf_c{c}" / "profile_export_aiperf.json").read_text())
        for label, our_path, (metric, stat) in ROWS:
            a, b = _ours(ours, our_path), float(theirs[metric][stat])
            lines.append(f"| {c} | {label} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
        a, b = (
            _cpu_seconds(folder / f"intaglio_c{c}.cpu"),
            _cpu_seconds(folder / f"aiperf_c{c}.cpu"),
        )
        lines.append(f"| {c} | client CPU s | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    shown = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    print("CPU flags:", " ".join(shown) or "none of avx512*/amx")
    print(table(Path(sys.argv[1]), sys.argv[2:]))
