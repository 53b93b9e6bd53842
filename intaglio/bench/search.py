"""`intaglio bench search`: accuracy against compute for search methods on the default model.

The task suite (bench/search_tasks.py: arithmetic, string and Python tasks with checkable
answers, asked few-shot through the chat template) is solved by each method at each N, with all
tasks' programs running together on one engine (as a server would batch them):

- `greedy`: one greedy answer (the baseline every target compares with);
- `sample`: N samples of each prompt forked from its KV, judged three ways from the same samples
  (so at the same cost): best-of-N with the task's verifier, best-of-N by mean log-probability,
  and a plain majority vote of the extracted answers;
- `self_consistency`: the vote with early stopping (its cost is its own);
- `beam`: beam search of width N inside the engine, its best beam;
- `rebase`: REBASE tree search over lines (steps end at a newline) with N expansions in all,
  valued by the branch's mean log-probability (the suite has no process reward model).

Per method and N it records accuracy, generated tokens, the mean of each program's peak KV
blocks and the wall time, and plots accuracy against each. Two more measurements check the
targets that are about cost: the KV blocks N forks of one prompt hold against N independent
requests (no prefix cache), and the wall time of beam search of width 8 against 8 independent
sampled requests of the same length, with HF transformers' beam search beside them (timed, and
checked for the same best beam).

    intaglio bench search --ns 1 2 4 8 16 32 --num-per-kind 10 --json-out search.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from intaglio.bench.search_tasks import KINDS, Task, make_tasks
from intaglio.ops.cpu_kernels import cpu_flags
from intaglio.search import Search, mean_logprob, rebase, run_programs, self_consistency
from intaglio.search.self_consistency import leader, tally
from intaglio.toolkit.machine import measure_machine

_FLAGS_SHOWN = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
METHODS = ("greedy", "sample", "self_consistency", "beam", "rebase")


def add_search_bench_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("search benchmark")
    g.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    g.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    g.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    g.add_argument("--num-per-kind", type=int, default=10)
    g.add_argument("--task-seed", type=int, default=0)
    g.add_argument("--output-len", type=int, default=96, help="max tokens per answer")
    g.add_argument("--sample-temperature", type=float, default=0.8)
    g.add_argument("--beam-len", type=int, default=64, help="tokens per beam, speed check")
    g.add_argument(
        "--no-cost-checks",
        action="store_true",
        help="skip the KV-sharing and beam-speed measurements",
    )
    g.add_argument("--json-out", help="write the results here")
    g.add_argument("--plot-dir", help="write accuracy plots (PNG) here")


def _run(llm: Any, programs: list[Callable[[Search], Any]]) -> tuple[list[Any], dict[str, Any]]:
    start = time.perf_counter()
    results = run_programs(llm.engine, programs)
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"a search program failed: {errors[0]}")
    cost = {
        "generated_tokens": sum(r.stats.generated_tokens for r in results),
        "prompt_tokens": sum(r.stats.prompt_tokens for r in results),
        "cached_tokens": sum(r.stats.cached_tokens for r in results),
        "peak_kv_blocks": statistics.fmean(r.stats.peak_kv_blocks for r in results),
        "wall_s": wall,
    }
    return [r.value for r in results], cost


def _accuracy(tasks: list[Task], texts: list[str | None]) -> float:
    return statistics.fmean(t.check(x) if x is not None else False for t, x in zip(tasks, texts))


def _method_rows(
    llm: Any, method: str, n: int, tasks: list[Task], roots: list[list[int]], args: Any
) -> list[dict[str, Any]]:
    sampling = dict(temperature=args.sample_temperature, max_tokens=args.output_len, seed=1)

    def program(i: int) -> Callable[[Search], Any]:
        async def run(s: Search) -> Any:
            root = s.root(roots[i])
            if method == "greedy":
                return [await s.gen(root, temperature=0.0, max_tokens=args.output_len)]
            if method == "sample":
                return await s.gen_all(s.fork(root, n), **sampling)
            if method == "rebase":
                return [await rebase(s, root, mean_logprob, budget=n, **sampling)]
            if method == "beam":
                beams = dict(use_beam_search=True, n=1, best_of=n, max_tokens=args.output_len)
                return await s.gen_all([root], **beams)
            return await self_consistency(s, root, n, tasks[i].extract, **sampling)

        return run

    values, cost = _run(llm, [program(i) for i in range(len(tasks))])
    row = {"n": n, **cost}
    if method in ("greedy", "beam", "rebase"):
        texts = [v[0].text if v and v[0] is not None else None for v in values]
        return [{"method": method, **row, "accuracy": _accuracy(tasks, texts)}]
    if method == "self_consistency":
        voted = [
            next((b.text for b in v.branches if t.extract(b.text) == v.answer), None)
            for t, v in zip(tasks, values)
        ]
        finished = statistics.fmean(v.num_finished for v in values)
        return [
            {
                "method": method,
                **row,
                "accuracy": _accuracy(tasks, voted),
                "mean_samples_used": finished,
            }
        ]
    verified, by_logprob, majority = [], [], []
    for task, branches in zip(tasks, values):
        passing = [b for b in branches if task.check(b.text)]
        verified.append(passing[0].text if passing else branches[0].text)
        by_logprob.append(max(branches, key=lambda b: b.mean_logprob).text)
        answers = [task.extract(b.text) for b in branches]
        answer = leader(tally(answers, [1.0] * len(answers)))
        majority.append(next((b.text for b, a in zip(branches, answers) if a == answer), None))
    return [
        {"method": "best_of_n_verifier", **row, "accuracy": _accuracy(tasks, verified)},
        {"method": "best_of_n_logprob", **row, "accuracy": _accuracy(tasks, by_logprob)},
        {"method": "majority_vote", **row, "accuracy": _accuracy(tasks, majority)},
    ]


def _kv_sharing(llm_shared: Any, llm_alone: Any, root: list[int], n: int, length: int) -> dict:
    """Peak KV blocks of n forks of one prompt against n independent requests, no cache."""
    sampling = dict(temperature=0.8, max_tokens=length, ignore_eos=True, seed=3)

    async def forked(s: Search) -> Any:
        return await s.gen_all(s.fork(s.root(root), n), **sampling)

    async def independent(s: Search) -> Any:
        return await s.gen_all([s.root(root)] * n, **sampling)

    shared = run_programs(llm_shared.engine, [forked])[0].stats
    alone = run_programs(llm_alone.engine, [independent])[0].stats
    return {
        "n": n,
        "prompt_tokens": len(root),
        "output_len": length,
        "forked_peak_kv_blocks": shared.peak_kv_blocks,
        "independent_peak_kv_blocks": alone.peak_kv_blocks,
        "ratio": shared.peak_kv_blocks / alone.peak_kv_blocks,
    }


def _beam_speed(
    llm: Any, roots: list[list[int]], width: int, length: int, hf: Any, bandwidth_gbs: float
) -> dict:
    """Wall time of beam search of `width` against `width` independent sampled requests of the
    same length (EOS ignored, so every sequence has `length` tokens), and HF's beam search."""
    from intaglio import SamplingParams

    beam = SamplingParams(
        use_beam_search=True,
        n=1,
        best_of=width,
        max_tokens=length,
        ignore_eos=True,
        output_kind="final_only",
    )
    sampled = SamplingParams(
        temperature=0.8, max_tokens=length, ignore_eos=True, seed=0, output_kind="final_only"
    )
    llm.generate(roots[:1], SamplingParams(max_tokens=4))  # warm-up
    start = time.perf_counter()
    llm.generate(roots, beam)
    beam_s = time.perf_counter() - start
    start = time.perf_counter()
    llm.generate([r for r in roots for _ in range(width)], sampled)
    independent_s = time.perf_counter() - start
    # The machine's limit: each decode step streams every weight once, at best at the measured
    # read bandwidth, and a beam search (like the sampled requests) takes `length` steps.
    weights = sum(p.numel() * p.element_size() for p in llm.engine.executor.model.parameters())
    out = {
        "width": width,
        "length": length,
        "num_prompts": len(roots),
        "weight_bytes": weights,
        "bandwidth_floor_s": length * weights / (bandwidth_gbs * 1e9),
        "beam_s": beam_s,
        "independent_sampled_s": independent_s,
        "beam_over_independent": beam_s / independent_s,
    }
    if hf is not None:
        start = time.perf_counter()
        with torch.inference_mode():
            for root in roots:  # EOS banned until `length`, as ours ignores it
                hf.generate(
                    torch.tensor([root]),
                    num_beams=width,
                    max_new_tokens=length,
                    min_new_tokens=length,
                    do_sample=False,
                    early_stopping=False,
                )
        out["hf_beam_s"] = time.perf_counter() - start
        out["hf_same_best_beam"] = _same_best_beam(llm, hf, roots, width, length)
    return out


def _same_best_beam(llm: Any, hf: Any, roots: list[list[int]], width: int, length: int) -> int:
    """Prompts whose best beam equals HF's, both ending at EOS. (With EOS ignored the two differ
    by design: HF bans EOS before min_new_tokens, ours lets a beam go on past it.)"""
    from intaglio import SamplingParams

    eos = list(llm.engine.eos_token_ids)
    params = SamplingParams(use_beam_search=True, best_of=width, n=1, max_tokens=length)
    same = 0
    with torch.inference_mode():
        for root, out in zip(roots, llm.generate(roots, params)):
            ids = hf.generate(
                torch.tensor([root]),
                num_beams=width,
                max_new_tokens=length,
                do_sample=False,
                early_stopping=False,
                eos_token_id=eos,
            )
            tokens = ids[0, len(root) :].tolist()
            end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
            same += tokens[:end] == out.outputs[0].token_ids
    return same


def _hf_model(path: Path) -> Any:
    import transformers

    from intaglio.model.checkpoint import hf_pretrained_args

    folder, kwargs = hf_pretrained_args(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, **kwargs
        )
    return model.eval()


def _plot(rows: list[dict[str, Any]], plot_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for axis, label in (
        ("generated_tokens", "generated tokens (all tasks)"),
        ("peak_kv_blocks", "peak KV blocks per program (mean)"),
        ("wall_s", "wall time, all tasks together (s)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in dict.fromkeys(r["method"] for r in rows):
            if method == "greedy":  # one point: the baseline, drawn across
                accuracy = next(r["accuracy"] for r in rows if r["method"] == method)
                ax.axhline(accuracy, linestyle="--", color="gray", label="greedy")
                continue
            points = sorted((r[axis], r["accuracy"], r["n"]) for r in rows if r["method"] == method)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        path = plot_dir / f"search_accuracy_vs_{axis}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path.name)
    return files


def run_search_benchmark(args: argparse.Namespace, eargs: dict[str, Any]) -> dict[str, Any]:
    from intaglio import LLM

    if eargs.get("num_threads"):
        torch.set_num_threads(eargs["num_threads"])
    flags = sorted(f for f in _FLAGS_SHOWN if f in cpu_flags())
    limits = measure_machine("cpu", (torch.float32,))
    print(
        f"machine: read bandwidth {limits.read_bandwidth_gbs:.1f} GB/s, fp32 matmul "
        f"{limits.matmul_tflops['float32']:.2f} TFLOP/s, {torch.get_num_threads()} threads"
    )
    llm = LLM(args.model, **{**eargs, "max_num_seqs": max(256, eargs.get("max_num_seqs") or 0)})
    tasks = make_tasks(args.num_per_kind, args.task_seed, args.kinds)
    roots = [llm.chat_prompt(t.messages()) for t in tasks]
    print(
        f"{len(tasks)} tasks, mean prompt {statistics.fmean(map(len, roots)):.0f} tokens; "
        f"CPU flags: {' '.join(flags) or 'none of ' + ' '.join(_FLAGS_SHOWN)}"
    )
    _method_rows(llm, "greedy", 1, tasks[:1], roots[:1], args)  # warm-up: kernels built
    rows: list[dict[str, Any]] = []
    for method in args.methods:
        for n in [1] if method == "greedy" else args.ns:
            for row in _method_rows(llm, method, n, tasks, roots, args):
                rows.append(row)
                print(
                    f"{row['method']:>20} N={n:<3} accuracy {row['accuracy']:.3f}  "
                    f"tokens {row['generated_tokens']:>7}  peak KV {row['peak_kv_blocks']:7.1f}"
                    f"  wall {row['wall_s']:7.1f} s",
                    flush=True,
                )
    sharing: list[dict[str, Any]] = []
    speed: dict[str, Any] = {}
    if not args.no_cost_checks:
        alone = LLM(args.model, **{**eargs, "prefix_caching": False, "max_num_seqs": 256})
        # At the suite's own mean answer length, and at the longest answer allowed.
        sampled = [r for r in rows if r["method"] == "best_of_n_verifier"]
        last = sampled[-1] if sampled else None
        mean_len = round(last["generated_tokens"] / (last["n"] * len(tasks))) if last else 16
        lengths = (max(mean_len, 1), args.output_len)
        sharing = [_kv_sharing(llm, alone, roots[0], 16, n) for n in lengths]
        print(f"KV sharing: {sharing}")
        del alone
        gc.collect()
        hf = _hf_model(llm.model_path)
        speed = _beam_speed(llm, roots[:4], 8, args.beam_len, hf, limits.read_bandwidth_gbs)
        print(f"beam speed: {speed}")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_flags": flags,
        "threads": torch.get_num_threads(),
        "machine": limits.to_dict(),
        "num_tasks": len(tasks),
        "mean_prompt_tokens": statistics.fmean(map(len, roots)),
        "rows": rows,
        "kv_sharing": sharing,
        "beam_speed": speed,
    }
    if args.plot_dir:
        result["plots"] = _plot(rows, Path(args.plot_dir))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return result
