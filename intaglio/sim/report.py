"""What a simulated run reports: the figures the real server's benchmark reports, on virtual time.

Throughput (requests, output tokens and all tokens per second over the makespan), TTFT (first
token minus arrival), TPOT (time per output token after the first), end-to-end latency, each at
mean / p50 / p90 / p99, plus KV-cache usage, batch occupancy and hardware utilisation (MFU and
memory-bandwidth utilisation, per step and over the busy time) over time. Under speculative
decoding, the verifications the engine's counters saw (vLLM's meaning): tokens per verification,
draft acceptance, accepted tokens per decode step, the draft network's share of busy time and
the acceptance per draft position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from intaglio.sim.runner import SimResult
from intaglio.sim.speculation import profile_from_counts

PERCENTILES = (50, 90, 99)


def _dist(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in PERCENTILES}}
    return {
        "mean": float(values.mean()),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
    }


def summarize(result: SimResult) -> dict[str, Any]:
    t = result.timings
    arrival = np.array([x.request.arrival_s for x in t])
    first = np.array([x.first_token_s for x in t], dtype=np.float64)
    finish = np.array([x.finish_s for x in t], dtype=np.float64)
    n_out = np.array([x.request.output_len for x in t])
    n_in = np.array([x.request.prompt_len for x in t])
    multi = n_out > 1
    tpot = (finish[multi] - first[multi]) / (n_out[multi] - 1)
    span = result.makespan_s - float(arrival.min())
    steps = result.executor.steps
    kv = np.array([k.usage for k in result.kv])
    busy = sum(s.duration_s for s in steps)
    model = result.executor.step_model
    bandwidth = model.hw.main_memory.bandwidth_bytes_s
    return {
        "num_requests": len(t),
        "num_steps": len(steps),
        "makespan_s": span,
        "request_throughput": len(t) / span,
        "output_throughput": float(n_out.sum()) / span,
        "total_throughput": float(n_out.sum() + n_in.sum()) / span,
        "ttft_s": _dist(first - arrival),
        "tpot_s": _dist(tpot),
        "e2e_s": _dist(finish - arrival),
        "mean_batch_seqs": float(np.mean([s.num_seqs for s in steps])),
        "mean_step_s": float(np.mean([s.duration_s for s in steps])),
        "kv_usage": {"mean": float(kv.mean()), "max": float(kv.max())},
        "mfu": sum(s.flops for s in steps) / busy / model.peak_flops,
        "mbu": sum(s.bytes for s in steps) / busy / bandwidth,
        "num_preemptions": result.num_preemptions,
        "prefix_hit_rate": result.prefix_hit_rate,
        **({"speculation": _speculation(result, busy)} if result.spec.num_drafts else {}),
    }


def _speculation(result: SimResult, busy: float) -> dict[str, Any]:
    spec = result.spec
    decode_steps = sum(1 for s in result.executor.steps if s.num_prefill_tokens == 0)
    return {
        "verifications": spec.num_drafts,
        "mean_draft_len": spec.num_draft_tokens / spec.num_drafts,
        "acceptance_rate": spec.num_accepted_tokens / spec.num_draft_tokens,
        "mean_acceptance_length": spec.mean_acceptance_length,
        "accepted_per_decode_step": spec.num_accepted_tokens / max(decode_steps, 1),
        "draft_time_share": sum(s.draft_s for s in result.executor.steps) / busy,
        "acceptance_per_position": list(
            profile_from_counts(spec.accepted_per_position, spec.tried_per_position)
        ),
    }


def timeline(result: SimResult) -> dict[str, np.ndarray]:
    """Per step: end time, KV usage, running and waiting requests, tokens, duration."""
    steps = result.executor.steps
    model = result.executor.step_model
    duration = np.array([s.duration_s for s in steps])
    return {
        "time_s": np.array([k.time_s for k in result.kv]),
        "kv_usage": np.array([k.usage for k in result.kv]),
        "num_running": np.array([k.num_running for k in result.kv]),
        "num_waiting": np.array([k.num_waiting for k in result.kv]),
        "num_tokens": np.array([s.num_tokens for s in steps]),
        "step_s": duration,
        "mfu": np.array([s.flops for s in steps]) / duration / model.peak_flops,
        "mbu": np.array([s.bytes for s in steps])
        / duration
        / model.hw.main_memory.bandwidth_bytes_s,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"requests {s['num_requests']}, steps {s['num_steps']}, makespan {s['makespan_s']:.2f} s, "
        f"preemptions {s['num_preemptions']}, prefix-cache hits {s['prefix_hit_rate']:.1%}",
        f"throughput: {s['request_throughput']:.2f} req/s, {s['output_throughput']:.1f} output "
        f"tok/s, {s['total_throughput']:.1f} total tok/s",
        f"{'':10}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}   (ms)",
    ]
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
        d = s[key]
        lines.append(
            f"{label:<10}" + "".join(f"{d[k] * 1e3:>10.1f}" for k in ("mean", "p50", "p90", "p99"))
        )
    lines.append(
        f"batch: {s['mean_batch_seqs']:.1f} sequences per step, mean step "
        f"{s['mean_step_s'] * 1e3:.2f} ms; KV usage mean {s['kv_usage']['mean']:.1%}, "
        f"max {s['kv_usage']['max']:.1%}; MFU {s['mfu']:.1%}, MBU {s['mbu']:.1%} while busy"
    )
    if "speculation" in s:
        sp = s["speculation"]
        lines.append(
            f"speculation: {sp['verifications']} verifications of {sp['mean_draft_len']:.2f} "
            f"drafts, {sp['mean_acceptance_length']:.2f} tokens each (acceptance "
            f"{sp['acceptance_rate']:.1%}), {sp['accepted_per_decode_step']:.2f} drafts accepted "
            f"per decode step, drafting {sp['draft_time_share']:.1%} of busy time; per position "
            + " ".join(f"{p:.2f}" for p in sp["acceptance_per_position"])
        )
    if "speedup" in s.get("speculation", {}):
        sp = s["speculation"]
        lines.append(
            f"without speculation: {sp['plain_output_tok_s']:.1f} output tok/s; with it "
            f"x{sp['speedup']:.2f}"
        )
    return "\n".join(lines)
