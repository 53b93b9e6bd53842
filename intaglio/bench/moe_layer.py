"""`intaglio bench moe`: one MoE layer against a dense layer of equal active parameters.

A token routed to k experts of width I (plus a shared expert of width S) multiplies by as many
weights as a dense SwiGLU MLP of width k * I + S, so the two do the same FLOPs per token. What
differs is what the MoE layer adds: the router, sorting tokens by expert, one matmul per expert
hit (smaller and more of them), the scatter back, and the weight bytes of every expert the
batch touches (a dense layer always reads its one set). The table prints both times, their
ratio, and the experts touched per step, for batch sizes from decode to prefill.

    intaglio bench moe --num-threads 1
    intaglio bench moe --preset mixtral --tokens 1 16 256 --json-out moe.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from intaglio.model.config import resolve_dtype
from intaglio.model.layers import GatedMLP
from intaglio.model.moe import MoE


@dataclass(frozen=True)
class MoEShape:
    hidden: int
    intermediate: int  # one expert's width
    num_experts: int
    top_k: int
    router: str
    shared_intermediate: int = 0

    @property
    def dense_intermediate(self) -> int:
        """Width of the dense MLP with the same parameters per token."""
        return self.top_k * self.intermediate + self.shared_intermediate


# Scaled-down shapes with each family's routing; one expert is 24 MiB in fp32.
PRESETS = {
    "llama4": MoEShape(1024, 2048, 16, 1, "sigmoid", shared_intermediate=2048),
    "mixtral": MoEShape(1024, 2048, 8, 2, "softmax"),
    "qwen3_moe": MoEShape(1024, 512, 64, 8, "softmax"),
}


def add_moe_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), nargs="+", default=sorted(PRESETS))
    parser.add_argument(
        "--tokens", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1024], help="batch sizes"
    )
    parser.add_argument("--dtype", default="float32", help="weights and activations")
    parser.add_argument("--hidden", type=int, default=None, help="override the hidden size")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs; the median counts")
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", help="write every number to this JSON file")


def _time_pair(
    moe: Any, dense: Any, x: torch.Tensor, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of each layer, timed in alternation so that load from other processes
    falls on both alike; one warm-up call each first (first touch of the weights)."""
    moe(x), dense(x)
    moe_s: list[float] = []
    dense_s: list[float] = []
    for _ in range(repeats):
        for fn, times in ((moe, moe_s), (dense, dense_s)):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return moe_s, dense_s


def bench_shape(
    shape: MoEShape, tokens: list[int], dtype: torch.dtype, repeats: int, seed: int
) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    moe = MoE(
        shape.hidden,
        shape.intermediate,
        shape.num_experts,
        shape.top_k,
        shape.router,
        norm_topk_prob=True,
        shared_intermediate=shape.shared_intermediate,
    )
    dense = GatedMLP(shape.hidden, shape.dense_intermediate, bias=False)
    with torch.no_grad():
        for p in [*moe.parameters(), *dense.parameters()]:
            p.normal_(0.0, 0.02)
    moe, dense = moe.to(dtype).eval(), dense.to(dtype).eval()
    rows = []
    with torch.inference_mode():
        for n in tokens:
            x = torch.randn(n, shape.hidden).to(dtype)
            touched = int(moe.route(x)[1].unique().numel())
            moe_s, dense_s = _time_pair(moe, dense, x, repeats)
            rows.append(
                {
                    "tokens": n,
                    "moe_ms": statistics.median(moe_s) * 1e3,
                    "dense_ms": statistics.median(dense_s) * 1e3,
                    # Median of the paired ratios: steadier than a ratio of medians under load.
                    "moe_over_dense": statistics.median(m / d for m, d in zip(moe_s, dense_s)),
                    "experts_touched": touched,
                    # Weight bytes read, MoE over dense: touched experts plus shared and router.
                    "weight_bytes_ratio": (
                        touched * shape.intermediate
                        + shape.shared_intermediate
                        + shape.num_experts / 3
                    )
                    / shape.dense_intermediate,
                }
            )
    return rows


def run_moe_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    dtype = resolve_dtype(args.dtype)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "presets": {},
    }
    for name in args.preset:
        shape = PRESETS[name]
        if args.hidden:
            shape = replace(shape, hidden=args.hidden)
        rows = bench_shape(shape, args.tokens, dtype, args.repeats, args.seed)
        result["presets"][name] = {"shape": asdict(shape), "rows": rows}
        print(
            f"{name}: hidden {shape.hidden}, {shape.num_experts} experts of width "
            f"{shape.intermediate}, top-{shape.top_k} {shape.router}"
            + (f", shared expert {shape.shared_intermediate}" if shape.shared_intermediate else "")
            + f"; dense twin width {shape.dense_intermediate} ({args.dtype}, "
            f"{result['threads']} thread(s))"
        )
        print(
            f"{'tokens':>8}{'MoE ms':>10}{'dense ms':>10}{'MoE/dense':>11}"
            f"{'experts hit':>13}{'bytes MoE/dense':>17}"
        )
        for r in rows:
            print(
                f"{r['tokens']:>8}{r['moe_ms']:>10.3f}{r['dense_ms']:>10.3f}"
                f"{r['moe_over_dense']:>11.2f}{r['experts_touched']:>13}"
                f"{r['weight_bytes_ratio']:>17.2f}"
            )
        print()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result
