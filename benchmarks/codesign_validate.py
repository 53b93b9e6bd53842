"""Validate the co-design toolkit against the real engine on this machine.

1. Calibrate: microbenchmarks (intaglio/toolkit/calibrate.py), then fit overheads and the
   attention efficiency on a TRAINING set of real engine steps.
2. Per-step validation: a HELD-OUT mix of prefill, decode and mixed batches, real time (best of
   3) against the cost model's prediction.
3. Offline benchmark: the same workload through `LLM.generate` and through the simulator
   (the engine's Scheduler on a SimulatedExecutor), prefix caching off on both sides; CPU time
   of the better of two real runs against the simulated makespan.

    OMP_NUM_THREADS=1 python benchmarks/codesign_validate.py --out docs/results/codesign
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intaglio.bench.random_model import build_random_llama
from intaglio.bench.throughput import make_workload
from intaglio.config import EngineConfig
from intaglio.executor.model_executor import ModelExecutor
from intaglio.model.config import ModelConfig
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.runner import simulate
from intaglio.sim.step_timing import time_step
from intaglio.sim.workload import SimRequest
from intaglio.toolkit.calibrate import fit_to_steps, measure_cpu
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.hardware import from_dict
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.step_model import StepCostModel

# (new tokens, context) per sequence. Training and held-out sets share no batch.
TRAIN = {
    "decode 1 @ 64": [(1, 64)],
    "decode 4 @ 256": [(1, 256)] * 4,
    "decode 16 @ 64": [(1, 64)] * 16,
    "decode 64 @ 256": [(1, 256)] * 64,
    "prefill 32": [(32, 32)],
    "prefill 128": [(128, 128)],
    "prefill 512": [(512, 512)],
    "chunk 256 @ 512": [(256, 512)],
    "decode 8 @ 128 + prefill 64": [(1, 128)] * 8 + [(64, 64)],
}
HELD_OUT = {
    "decode 2 @ 128": [(1, 128)] * 2,
    "decode 8 @ 384": [(1, 384)] * 8,
    "decode 32 @ 160": [(1, 160)] * 32,
    "decode 48 @ 96": [(1, 96)] * 48,
    "prefill 64": [(64, 64)],
    "prefill 256": [(256, 256)],
    "prefill 384": [(384, 384)],
    "chunk 128 @ 640": [(128, 640)],
    "decode 16 @ 200 + prefill 128": [(1, 200)] * 16 + [(128, 128)],
    "decode 32 @ 64 + chunk 96 @ 300": [(1, 64)] * 32 + [(96, 300)],
    "2 prefills 100 + 180": [(100, 100), (180, 180)],
}


def _seqs(batch: list[tuple[int, int]]) -> list[SeqShape]:
    return [SeqShape(n, c) for n, c in batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="codesign-validation")
    parser.add_argument("--random-config", default="120m")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--hardware-out", help="also write the calibrated description here")
    parser.add_argument("--rounds", type=int, default=4, help="timing rounds per batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("validate")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    log.info("microbenchmarks (1 thread)...")
    doc = measure_cpu(num_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_random_llama(args.random_config, Path(tmp), seed=0)
        cfg = ModelConfig.from_folder(path, "float32")
        executor = ModelExecutor(
            path, EngineConfig(dtype="float32", block_size=16, kv_cache_memory_gib=2.0)
        )
        # Interleaved rounds, best per batch: a burst of load from other processes spoils
        # one round of a batch, not all of its runs.
        batches = {**TRAIN, **HELD_OUT}
        measured = {name: time_step(executor, b, repeats=1) for name, b in batches.items()}
        for _ in range(args.rounds - 1):
            for name, b in batches.items():
                measured[name] = min(measured[name], time_step(executor, b, 1, warmup=False))
        for name in batches:
            log.info("%-34s %.1f ms", name, measured[name] * 1e3)
        samples = [(capture_step(cfg, _seqs(b)), measured[n]) for n, b in TRAIN.items()]
        doc = fit_to_steps(doc, samples)
        hw = from_dict(doc)
        model = StepCostModel(cfg, hw)
        rows: list[dict[str, Any]] = []
        for name, batch in {**TRAIN, **HELD_OUT}.items():
            q = np.array([n for n, _ in batch])
            c = np.array([c for _, c in batch])
            pred = model.step_time(q, c, len(batch))
            err = pred / measured[name] - 1
            rows.append(
                {
                    "batch": name,
                    "set": "train" if name in TRAIN else "held-out",
                    "measured_ms": measured[name] * 1e3,
                    "predicted_ms": pred * 1e3,
                    "error": err,
                }
            )
        held = [abs(r["error"]) for r in rows if r["set"] == "held-out"]
        log.info("held-out median |error| %.1f%%", 100 * statistics.median(held))

        # Offline benchmark: real LLM.generate against the simulator on the same workload.
        from intaglio.api.llm import LLM
        from intaglio.sampling.params import SamplingParams

        work = make_workload(args.num_requests, (64, 256), (32, 128), cfg.vocab_size, 0)
        # No prefix caching on either side: the best-of-two real runs repeat the same prompts,
        # and the second would find them cached.
        settings = EngineConfig(max_num_seqs=32, max_num_batched_tokens=1024, prefix_caching=False)
        del executor
        llm = LLM(
            str(path),
            dtype="float32",
            num_threads=1,
            max_num_seqs=32,
            max_num_batched_tokens=1024,
            kv_cache_memory_gib=1.0,
            prefix_caching=False,
        )
        llm.generate([p[:16] for p in work.prompts[:2]], SamplingParams(max_tokens=2))
        params = [
            SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=n, detokenize=False)
            for n in work.output_lens
        ]
        real = wall = float("inf")
        for _ in range(2):  # the better of two runs; CPU time as for the steps
            t0, c0 = time.perf_counter(), time.process_time()
            llm.generate(work.prompts, params, use_tqdm=False)
            real = min(real, time.process_time() - c0)
            wall = min(wall, time.perf_counter() - t0)
        num_blocks = llm.engine.executor.num_kv_blocks
        del llm
    sim_requests = [
        SimRequest(f"r{i}", 0.0, tuple(p), n)
        for i, (p, n) in enumerate(zip(work.prompts, work.output_lens))
    ]
    result = simulate(sim_requests, SimulatedExecutor(model, num_blocks, 16), settings)
    tokens = work.num_output_tokens
    offline = {
        "num_requests": args.num_requests,
        "real_cpu_s": real,
        "real_wall_s": wall,
        "sim_makespan_s": result.makespan_s,
        "real_output_tok_s": tokens / real,
        "sim_output_tok_s": tokens / result.makespan_s,
        "error": result.makespan_s / real - 1,
    }
    log.info(
        "offline: real %.2f s CPU (%.2f s wall), simulated %.2f s (%+.1f%%)",
        real,
        wall,
        result.makespan_s,
        100 * offline["error"],
    )
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": doc,
        "steps": rows,
        "held_out_median_abs_error": statistics.median(held),
        "offline": offline,
    }
    (out / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.hardware_out:
        Path(args.hardware_out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'batch':<36}{'set':>10}{'measured ms':>13}{'predicted ms':>14}{'error':>8}")
    for r in rows:
        print(
            f"{r['batch']:<36}{r['set']:>10}{r['measured_ms']:>13.1f}"
            f"{r['predicted_ms']:>14.1f}{r['error']:>+8.1%}"
        )
    print(f"held-out median |error|: {statistics.median(held):.1%}")
    print(
        f"offline: real {real:.2f} s CPU ({wall:.2f} s wall), simulated "
        f"{result.makespan_s:.2f} s ({offline['error']:+.1%})"
    )


if __name__ == "__main__":
    main()
