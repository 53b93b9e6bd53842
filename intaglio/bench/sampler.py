"""`intaglio bench sampler`: what the sampler costs per decode step.

For batch sizes 1 and 64 and vocabularies of 49,152 (SmolLM2, Llama-like) and 151,936 (Qwen)
tokens, it times one sampler step (building SamplingMetadata from the requests, then the
processing chain and the draw) for greedy decoding, each sampler alone, and the full chain (every
sampler at once), on random logits (rounded to bfloat16) and a 768-token history. It then times
a decode step of the default model at batch 64 (and 1), so each sampler's added cost reads as a
share of a real step (the step samples greedily, so the full chain adds its time less greedy's).

    intaglio bench sampler --num-threads 2 --json-out docs/results/sampler.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from intaglio.sampling.dry import DryBreakers
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.sampler import Sampler, SamplingMetadata
from intaglio.sampling.state import SequenceSamplerState

BASE: dict[str, Any] = {"temperature": 0.8}
SAMPLERS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "temperature": {},
    "top_k + top_p": {"top_k": 50, "top_p": 0.9},
    "min_p": {"min_p": 0.05},
    "penalties": {"repetition_penalty": 1.1, "presence_penalty": 0.3, "frequency_penalty": 0.3},
    "top_n_sigma": {"top_n_sigma": 1.0},
    "typical_p": {"typical_p": 0.9},
    "epsilon + eta": {"epsilon_cutoff": 3e-4, "eta_cutoff": 3e-4},
    "xtc": {"xtc_probability": 1.0, "xtc_threshold": 0.1},
    "mirostat": {"mirostat_tau": 5.0},
    "dry": {"dry_multiplier": 0.8},
    "bad_words": {},  # eight two-token words, set on the state below
}
FULL_CHAIN = {k: v for name, s in SAMPLERS.items() if name != "greedy" for k, v in s.items()}
HISTORY = (512, 256)  # prompt and output tokens of each row


def _state(params: SamplingParams, vocab: int, bad_words: bool) -> SequenceSamplerState:
    state = SequenceSamplerState()
    if params.uses_dry:  # about as many breaker tokens as "\n", ":", '"', "*" match in a vocab
        state.dry_breakers = DryBreakers(tuple(range(0, vocab, 40)), ())
    if params.uses_mirostat:
        state.mirostat_mu = 2 * params.mirostat_tau
    if bad_words:
        state.bad_words = tuple((i, i + 1) for i in range(100, 116, 2))
    return state


def time_sampler(name: str, batch: int, vocab: int, repeats: int) -> float:
    """Median seconds of one sampler step (metadata build + chain + draw)."""
    fields = FULL_CHAIN if name == "full chain" else SAMPLERS[name]
    params = [SamplingParams(**{**BASE, **fields}) for _ in range(batch)]
    g = torch.Generator().manual_seed(0)
    # A history drawn from 5,000 distinct tokens: some repeats, as in text.
    history = torch.randint(0, 5000, (batch, sum(HISTORY)), generator=g).tolist()
    prompts = [h[: HISTORY[0]] for h in history]
    outputs = [h[HISTORY[0] :] for h in history]
    bad = name in ("bad_words", "full chain")
    states: list[SequenceSamplerState | None] = [_state(p, vocab, bad) for p in params]
    # Rounded to bfloat16 as the default model's are: ties at a top-k boundary are common.
    logits = (torch.randn(batch, vocab, generator=g) * 4).bfloat16().float()
    sampler = Sampler()
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        meta = SamplingMetadata.build(
            params, prompts, outputs, {}, [[] for _ in params], vocab, "cpu", states
        )
        sampler(logits, meta)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
        for state in states:  # keep Mirostat's mu where it started, so every step is alike
            if state is not None and params[0].uses_mirostat:
                state.mirostat_mu = 2 * params[0].mirostat_tau
    return statistics.median(times)


def time_decode_step(batch: int, steps: int) -> float:
    """Median seconds of a decode step of the default model (greedy) at this batch size."""
    from intaglio import LLM

    llm = LLM(max_num_seqs=max(batch, 1))
    engine = llm.engine
    params = SamplingParams(temperature=0.0, max_tokens=steps + 8, ignore_eos=True)
    for i in range(batch):
        engine.add_request(str(i), [1 + (i * 7 + j) % 500 for j in range(32)], params)
    while (
        any(len(r.output_token_ids) < 2 for r in engine.scheduler.running)
        or engine.scheduler.waiting
    ):
        engine.step()  # prefill everyone first
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return " ".join(wanted) or "none of avx512*/amx"


def add_sampler_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152, 151936])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--no-model", action="store_true", help="skip the default model's step")
    parser.add_argument("--json-out", type=Path, default=None)


def run_sampler_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    names = [*SAMPLERS, "full chain"]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "sampler_ms": {},
        "step_ms": {},
    }
    print(f"cpu flags: {results['cpu_flags']}; torch threads: {torch.get_num_threads()}")
    for vocab in args.vocab:
        for batch in args.batch:
            key = f"V={vocab} B={batch}"
            row = {n: 1e3 * time_sampler(n, batch, vocab, args.repeats) for n in names}
            results["sampler_ms"][key] = row
            print(key, "  ".join(f"{n}: {ms:.2f}" for n, ms in row.items()))
    if not args.no_model:
        for batch in args.batch:
            step_ms = 1e3 * time_decode_step(batch, 12)
            results["step_ms"][f"B={batch}"] = step_ms
            print(f"default model decode step, batch {batch}: {step_ms:.1f} ms")
            for key, row in results["sampler_ms"].items():
                if key.endswith(f" B={batch}"):  # the decode step itself samples greedily
                    added = row["full chain"] - row["greedy"]
                    print(f"{key}: the full chain adds {added:.1f} ms, {added / step_ms:.1%}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return results
