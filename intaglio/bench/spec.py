"""`intaglio bench spec`: speculative decoding on the real default model, per proposer.

Three prompt sets every machine can build: code editing (a standard-library function to
rewrite with one rename: the answer mostly copies the prompt), open chat questions, and
summaries of standard-library docstrings, each through the model's chat template. For every
proposer and batch size (B requests submitted at once to an engine that runs up to B) it
reports decode tokens per second (after each request's first token, so the prompts' prefill,
the same with or without drafts, does not dilute it; end to end too), the speedup over plain
decoding at the same batch, the mean
acceptance length (tokens per verification, vLLM's figure) and the draft acceptance rate
alpha, beside Leviathan et al.'s predicted speedup (1 - alpha**(g+1)) / ((1 - alpha)(1 + c g))
for the mean draft length g and a proposer costing c = 0 target steps (lookups are nearly free;
the prediction ignores that verifying g + 1 tokens costs more than one, which the measured
figure includes). Greedy decoding, so every method emits the same tokens (checked). Each row
also keeps, per draft position, the drafts kept and the drafts tried: `intaglio codesign
simulate --spec-profile` replays them as an acceptance profile (with the share of decode steps
that got drafts).

    intaglio bench spec --methods ngram suffix --batch-sizes 1 8 32 64 --json-out spec.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

from intaglio.ops.cpu_kernels import cpu_flags

_FLAGS_SHOWN = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")

_CHAT = [
    "Write a short story about a robot who learns to paint.",
    "What are three good habits for staying healthy? Explain each.",
    "Explain how a bicycle works to a ten year old.",
    "Describe your ideal weekend in a few paragraphs.",
    "Why is the sky blue? Give a simple explanation.",
    "Give me some tips for learning a new language.",
    "Write a friendly email inviting a colleague to lunch.",
    "What makes a good teacher? List a few qualities.",
]


def _stdlib_functions() -> list[Any]:
    import json as json_module
    import shutil
    import string

    return [
        textwrap.dedent,
        textwrap.indent,
        shutil.copyfileobj,
        string.capwords,
        json_module.dump,
        shutil.ignore_patterns,
        textwrap.shorten,
        inspect.getmodulename,
    ]


def _code_editing() -> list[str]:
    prompts = []
    for fn in _stdlib_functions():
        source = inspect.getsource(fn)
        prompts.append(
            "Rewrite this Python function exactly, but rename the function to "
            f"`my_{fn.__name__}`. Reply with the code only.\n\n```python\n{source}```"
        )
    return prompts


def _summaries() -> list[str]:
    import collections
    import functools
    import pathlib
    import subprocess

    prompts = []
    for obj in (
        collections.OrderedDict,
        functools.lru_cache,
        pathlib.PurePath,
        subprocess.run,
        textwrap.wrap,
        json.dumps,
        inspect.signature,
        collections.Counter,
    ):
        doc = inspect.getdoc(obj) or ""
        prompts.append(f"Summarize the following documentation in two sentences.\n\n{doc[:1500]}")
    return prompts


WORKLOADS = {"code-editing": _code_editing, "chat": lambda: list(_CHAT), "summarise": _summaries}


def add_spec_bench_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("speculative decoding benchmark")
    g.add_argument("--methods", nargs="+", default=["ngram", "suffix"])
    g.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    g.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    g.add_argument("--output-len", type=int, default=128)
    g.add_argument("--json-out", help="write the results here")


def _run(llm: Any, prompts: list[str], batch: int, max_tokens: int) -> dict[str, Any]:
    from intaglio import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    requests = [chats[i % len(chats)] for i in range(batch)]
    stats = llm.engine.scheduler.spec_stats
    before = (stats.num_drafts, stats.num_draft_tokens, stats.num_accepted_tokens)
    positions_before = (list(stats.accepted_per_position), list(stats.tried_per_position))
    start = time.perf_counter()
    outs = llm.chat(requests, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    drafts, draft_tokens, accepted = (
        now - then
        for now, then in zip(
            (stats.num_drafts, stats.num_draft_tokens, stats.num_accepted_tokens), before
        )
    )
    tokens = [o.outputs[0].token_ids for o in outs]
    # Decode rate: tokens after each request's first over the span from the first first token
    # to the last finish (prompts prefill before it, with or without speculation alike).
    first = min(o.metrics.first_token_time or 0.0 for o in outs)
    last = max(o.metrics.finished_time or 0.0 for o in outs)
    return {
        "elapsed_s": elapsed,
        "output_tokens": sum(len(t) for t in tokens),
        "e2e_tok_s": sum(len(t) for t in tokens) / elapsed,
        "tok_s": sum(len(t) - 1 for t in tokens) / (last - first),
        "num_drafts": drafts,
        "num_draft_tokens": draft_tokens,
        "num_accepted_tokens": accepted,
        # Per draft position: kept, and reached (drafts before it kept); the simulator's
        # acceptance profile is their ratio (intaglio/sim/speculation.py).
        "accepted_per_position": _since(stats.accepted_per_position, positions_before[0]),
        "tried_per_position": _since(stats.tried_per_position, positions_before[1]),
        "tokens": tokens,
    }


def _since(now: list[int], then: list[int]) -> list[int]:
    return [n - (then[i] if i < len(then) else 0) for i, n in enumerate(now)]


def leviathan_speedup(alpha: float, gamma: float, cost: float = 0.0) -> float:
    """Expected tokens per verification over its cost in target steps (Leviathan et al. 2023)."""
    if gamma <= 0:
        return 1.0
    tokens = gamma + 1 if alpha >= 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return tokens / (1 + cost * gamma)


def run_spec_benchmark(args: argparse.Namespace, eargs: dict[str, Any]) -> dict[str, Any]:
    from intaglio import LLM

    if eargs.get("num_threads"):
        torch.set_num_threads(eargs["num_threads"])
    flags = sorted(f for f in _FLAGS_SHOWN if f in cpu_flags())
    max_batch = max(args.batch_sizes)
    base = {**eargs, "max_num_seqs": max_batch}
    base.pop("speculative_method", None)
    rows: list[dict[str, Any]] = []
    reference: dict[tuple[str, int], list[list[int]]] = {}
    for method in ["none", *args.methods]:
        spec = {} if method == "none" else {"speculative_method": method}
        llm = LLM(args.model, **base, **spec)
        _run(llm, _CHAT[:1], 1, 8)  # warm-up: kernels built, caches touched
        for workload in args.workloads:
            prompts = WORKLOADS[workload]()
            for batch in args.batch_sizes:
                r = _run(llm, prompts, batch, args.output_len)
                key = (workload, batch)
                tokens = r.pop("tokens")
                if method == "none":
                    reference[key] = tokens
                    plain = r["tok_s"]
                else:
                    plain = next(
                        x["tok_s"]
                        for x in rows
                        if x["method"] == "none"
                        and x["workload"] == workload
                        and x["batch"] == batch
                    )
                r["same_tokens_as_plain"] = tokens == reference[key]
                drafts = r["num_drafts"]
                alpha = r["num_accepted_tokens"] / r["num_draft_tokens"] if drafts else 0.0
                gamma = r["num_draft_tokens"] / drafts if drafts else 0.0
                rows.append(
                    {
                        "method": method,
                        "workload": workload,
                        "batch": batch,
                        **r,
                        "speedup": r["tok_s"] / plain,
                        "mean_acceptance_length": 1 + r["num_accepted_tokens"] / drafts
                        if drafts
                        else None,
                        "alpha": alpha,
                        "mean_draft_len": gamma,
                        "leviathan_speedup": leviathan_speedup(alpha, gamma),
                    }
                )
                print(_format_row(rows[-1]), flush=True)
        del llm
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_flags": flags,
        "num_threads": torch.get_num_threads(),
        "engine_args": {k: v for k, v in base.items()},
        "output_len": args.output_len,
        "rows": rows,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"cpu flags: {' '.join(flags) or 'none of ' + ' '.join(_FLAGS_SHOWN)}")
    return result


def _format_row(r: dict[str, Any]) -> str:
    mal = r["mean_acceptance_length"]
    return (
        f"{r['method']:>7} {r['workload']:>13} B={r['batch']:<3} {r['tok_s']:8.1f} decode tok/s "
        f"x{r['speedup']:.2f}  accept len {mal if mal is None else round(mal, 2)}  "
        f"alpha {r['alpha']:.2f} draft {r['mean_draft_len']:.1f}  "
        f"Leviathan x{r['leviathan_speedup']:.2f}  same tokens {r['same_tokens_as_plain']}"
    )
