"""Predicted against published serving figures: gpt-fast, TensorRT-LLM, the Sohu claim.

    python benchmarks/codesign_published.py --out docs/results/codesign_published.json
    python benchmarks/codesign_published.py --extra-passes fuse_allreduce,overlap --out ...

gpt-fast (pytorch-labs/gpt-fast README; A100 80GB power-limited to 330 W, batch 1, bf16) is
a decode step. TensorRT-LLM's performance overview (docs/source/performance/perf-overview.md,
v1.0-era tables, PyTorch backend, FP8 ModelOpt checkpoints, requests sent at once; the metric
is total output tokens per second) is served by the simulator with the same input and output
lengths, FP8 weights, activations and KV cache. The Sohu figure (Etched's announcement, June
2024: over 500,000 tokens per second of Llama 70B on 8 chips, FP8, 2048 in / 128 out) counts
input and output tokens, on the generic transformer-ASIC description.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from intaglio.sim.report import summarize
from intaglio.sim.study import Study, serve, step_cost, study_engine_config

GPT_FAST = [  # (label, passes, published decode tok/s)
    ("Llama-2-7B bf16, 1 GPU", "fuse", 104.9),
    ("Llama-2-7B bf16, TP 2", "tp=2,fuse", 168.84),
    ("Llama-2-7B bf16, TP 8", "tp=8,fuse", 328.43),
    ("Llama-2-7B int8 weights, 1 GPU", "fuse,w=int8", 155.58),
]
# (label, model, hardware, tp, input, output, published output tok/s, requests)
TRT_LLM = [
    ("Llama 3.1 8B, H100 TP1", "llama-3-8b", "h100-sxm", 1, 2048, 128, 3450, 1000),
    ("Llama 3.1 8B, H100 TP1", "llama-3-8b", "h100-sxm", 1, 128, 2048, 22714, 600),
    ("Llama 3.3 70B, H100 TP2", "llama-3-70b", "h100-sxm", 2, 2048, 128, 762, 600),
    ("Llama 3.3 70B, H100 TP2", "llama-3-70b", "h100-sxm", 2, 128, 2048, 6651, 400),
    ("Llama 3.3 70B, H200 TP1", "llama-3-70b", "h200", 1, 2048, 128, 442, 400),
    ("Llama 3.1 405B, H100 TP8", "llama-3-405b", "h100-sxm", 8, 2048, 128, 453, 400),
]
SOHU = (
    "Llama 3 70B, 8 Sohu (transformer-asic, TP8)",
    "llama-3-70b",
    "transformer-asic",
    8,
    2048,
    128,
    500_000,
    1000,
)
FP8 = "w=fp8,a=fp8,kv=fp8"


def _passes(*parts: str) -> str:
    return ",".join(p for p in parts if p)


def gpt_fast_rows(extra: str) -> list[dict]:
    rows = []
    for label, passes, published in GPT_FAST:
        tp, _, rest = passes.partition(",") if passes.startswith("tp=") else ("", "", passes)
        spec = _passes(tp, extra if tp else "", rest)  # the extra passes need tensor parallel
        cost = step_cost(Study("llama-2-7b", "a100-sxm-80gb", spec), "decode:1@64")
        rows.append(_row("gpt-fast", label, spec, published, 1 / cost.time_s, "decode tok/s"))
    return rows


def served_rows(
    cases: list[tuple], extra: str, total: bool, overrides: dict | None = None
) -> list[dict]:
    rows = []
    for label, model, hw, tp, isl, osl, published, n in cases:
        spec = _passes(f"tp={tp}" if tp > 1 else "", extra if tp > 1 else "", "fuse", FP8)
        engine = study_engine_config(max_num_batched_tokens=8192, max_num_seqs=1024)
        study = Study(
            model,
            hw,
            spec,
            hw_overrides=overrides or {},
            engine=engine,
            num_requests=n,
            input_len=f"fixed:{isl}",
            output_len=f"fixed:{osl}",
        )
        s = summarize(serve(study)[0])
        predicted = s["total_throughput" if total else "output_throughput"]
        unit = "total tok/s" if total else "output tok/s"
        rows.append(
            _row(
                "Sohu" if total else "TensorRT-LLM",
                f"{label}, {isl}/{osl}",
                spec,
                published,
                predicted,
                unit,
            )
        )
    return rows


def _row(
    source: str, label: str, passes: str, published: float, predicted: float, unit: str
) -> dict:
    return {
        "source": source,
        "case": label,
        "passes": passes,
        "unit": unit,
        "published": published,
        "predicted": round(predicted, 1),
        "error": round(predicted / published - 1, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--extra-passes", default="", help="added after tp=N (e.g. fuse_allreduce)")
    p.add_argument(
        "--matmul-efficiency",
        type=float,
        default=None,
        help="kind_efficiency.matmul for the TensorRT-LLM rows (a fit on one of them)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()
    start = time.time()
    rows = gpt_fast_rows(args.extra_passes)
    fit = {"kind_efficiency.matmul": args.matmul_efficiency} if args.matmul_efficiency else {}
    rows += served_rows(TRT_LLM, args.extra_passes, total=False, overrides=fit)
    rows += served_rows([SOHU], args.extra_passes, total=True)
    for r in rows:
        print(
            f"{r['source']:>12} | {r['case']:<48} | {r['published']:>9g} | "
            f"{r['predicted']:>10g} | {r['error']:+.1%}"
        )
    print(f"{time.time() - start:.0f} s")
    if args.out:
        setup = {"extra_passes": args.extra_passes, "matmul_efficiency": args.matmul_efficiency}
        Path(args.out).write_text(json.dumps({**setup, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
