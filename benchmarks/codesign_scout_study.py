"""The worked study of docs/codesign.md: Llama 4 Scout on the transformer-ASIC description.

    python benchmarks/codesign_scout_study.py --out docs/results/scout_asic

Writes what each pass buys on one decode step (the cost model's step time and the lowered
schedule's), and what the hardware needs for ten times the baseline's decode throughput.
The operation sequence of one decode layer comes from
`intaglio codesign lower --model llama-4-scout --hardware transformer-asic --passes ...`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from intaglio.sim.solve import default_params, solve
from intaglio.sim.study import Study, step_cost
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.lowering import lower_step
from intaglio.toolkit.passes import parse_batch, parse_passes
from intaglio.toolkit.step_model import apply_passes

MODEL, HARDWARE, BATCH = "llama-4-scout", "transformer-asic", "decode:128@4096"
PASSES = [
    "tp=8",
    "tp=8,fuse",
    "tp=8,fuse_allreduce,fuse",
    "tp=8,fuse_allreduce,fuse,overlap",
    "tp=8,fuse_allreduce,fuse,overlap,w=fp8,a=fp8,kv=fp8",
    "ep=8,fuse,w=fp8,a=fp8,kv=fp8",
    "tp=2,ep=4,fuse_allreduce,fuse,w=fp8,a=fp8,kv=fp8",
]


def pass_rows() -> list[dict]:
    rows = []
    tokens = sum(s.num_new_tokens for s in parse_batch(BATCH))
    for passes in PASSES:
        study = Study(MODEL, HARDWARE, passes)
        cost = step_cost(study, BATCH)
        ops = apply_passes(capture_step(study.config(), parse_batch(BATCH)), parse_passes(passes))
        low = lower_step(ops, study.hw(), study.plan().weight_bytes)
        rows.append(
            {
                "passes": passes,
                "roofline_ms": round(cost.time_s * 1e3, 3),
                "schedule_ms": round(low.time_s * 1e3, 3),
                "tok_s_per_chip": round(tokens / low.time_s / 8, 1),
                "matrix_busy": round(low.busy["matrix"] / low.time_s, 3),
                "dma_busy": round(low.busy["dma"] / low.time_s, 3),
                "link_busy": round(low.busy["link"] / low.time_s, 3),
            }
        )
    return rows


def ten_x(passes: str) -> tuple[float, list[dict]]:
    study = Study(MODEL, HARDWARE, passes)
    tokens = sum(s.num_new_tokens for s in parse_batch(BATCH))
    base = tokens / step_cost(study, BATCH).time_s
    params = [*default_params(study), "hw.interconnect.latency_us", "hw.op_overhead_us"]
    params += [
        "scale+hw.interconnect.latency_us",
        "scale+hw.interconnect.latency_us+hw.op_overhead_us",
    ]
    return base, [solve(study, p, "tok_s", 10 * base, BATCH).row() for p in params]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = pass_rows()
    best = PASSES[4]
    base, needs = ten_x(best)
    doc = {
        "batch": BATCH,
        "passes": rows,
        "ten_x": {"passes": best, "base_tok_s": base, "needs": needs},
    }
    (out / "study.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
