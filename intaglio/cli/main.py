"""The `intaglio` command: generate text, chat, serve, run benchmarks and co-design studies."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from intaglio.cli import chat as chat_cli
from intaglio.cli import codesign as codesign_cli
from intaglio.cli import serve as serve_cli
from intaglio.cli.args import add_engine_flags, add_sampling_flags, engine_args, load_llm


def _generate(args: argparse.Namespace) -> int:

    prompts = list(args.prompt)
    if args.prompts_file:
        lines = Path(args.prompts_file).read_text().splitlines()
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        print("error: give at least one PROMPT or --prompts-file", file=sys.stderr)
        return 2
    loaded = load_llm(args)
    if loaded is None:
        return 2
    llm, params = loaded
    outputs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1 and not args.json)
    failed = 0
    for out in outputs:
        failed += out.error is not None
        if args.json:
            record = {
                "prompt": out.prompt,
                "error": out.error,
                "time_to_first_token": out.metrics.time_to_first_token,
                "decode_time": out.metrics.decode_time,
                "completions": [
                    {
                        "text": c.text,
                        "token_ids": c.token_ids,
                        "finish_reason": c.finish_reason,
                        "logprobs": (
                            [{str(t): lp for t, lp in e.items()} for e in c.logprobs]
                            if c.logprobs is not None
                            else None
                        ),
                    }
                    for c in out.outputs
                ],
            }
            print(json.dumps(record))
        elif out.error is not None:
            print(f"error: {out.error}", file=sys.stderr)
        else:
            for c in out.outputs:
                print(f"{out.prompt}{c.text}")
                if len(outputs) > 1 or len(out.outputs) > 1:
                    print("-" * 40)
    return 1 if failed else 0


def _bench_throughput(args: argparse.Namespace) -> int:
    from intaglio.bench.throughput import run_throughput_benchmark

    run_throughput_benchmark(args, engine_args(args))
    return 0


def _bench_scheduling(args: argparse.Namespace) -> int:
    from intaglio.bench.scheduling import run_scheduling_benchmark

    run_scheduling_benchmark(args, engine_args(args))
    return 0


def _bench_spec(args: argparse.Namespace) -> int:
    from intaglio.bench.spec import run_spec_benchmark

    run_spec_benchmark(args, engine_args(args))
    return 0


def _bench_search(args: argparse.Namespace) -> int:
    from intaglio.bench.search import run_search_benchmark

    run_search_benchmark(args, engine_args(args))
    return 0


def _bench_sampler(args: argparse.Namespace) -> int:
    from intaglio.bench.sampler import run_sampler_benchmark

    run_sampler_benchmark(args)
    return 0


def _bench_embed(args: argparse.Namespace) -> int:
    from intaglio.bench.embeddings import run_embed_benchmark

    run_embed_benchmark(args, engine_args(args))
    return 0


def _bench_moe(args: argparse.Namespace) -> int:
    from intaglio.bench.moe_layer import run_moe_benchmark

    run_moe_benchmark(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intaglio", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="complete prompts with a model")
    gen.add_argument("prompt", nargs="*", help="prompt text")
    gen.add_argument("--prompts-file", help="one prompt per line")
    gen.add_argument("--json", action="store_true", help="one JSON object per prompt")
    add_engine_flags(gen)
    add_sampling_flags(gen)
    gen.set_defaults(func=_generate)
    chat_cli.register(sub)
    serve_cli.register(sub)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    thr = bench_sub.add_parser("throughput", help="offline throughput versus HF transformers")
    from intaglio.bench.throughput import add_throughput_flags

    add_throughput_flags(thr)
    add_engine_flags(thr)
    thr.set_defaults(func=_bench_throughput)
    sched = bench_sub.add_parser(
        "scheduling", help="prefix caching, forks, priority and interleave policies"
    )
    from intaglio.bench.scheduling import add_scheduling_bench_flags

    add_scheduling_bench_flags(sched)
    add_engine_flags(sched)
    sched.set_defaults(func=_bench_scheduling)
    serve_cli.register_bench(bench_sub)
    spec = bench_sub.add_parser("spec", help="speculative decoding per proposer and batch size")
    from intaglio.bench.spec import add_spec_bench_flags

    add_spec_bench_flags(spec)
    add_engine_flags(spec)
    spec.set_defaults(func=_bench_spec)
    search = bench_sub.add_parser("search", help="search methods: accuracy against compute")
    from intaglio.bench.search import add_search_bench_flags

    add_search_bench_flags(search)
    add_engine_flags(search)
    search.set_defaults(func=_bench_search)
    moe = bench_sub.add_parser("moe", help="an MoE layer versus a dense layer of equal active size")
    from intaglio.bench.moe_layer import add_moe_flags

    add_moe_flags(moe)
    moe.set_defaults(func=_bench_moe)
    smp = bench_sub.add_parser("sampler", help="sampler cost per decode step, each sampler")
    from intaglio.bench.sampler import add_sampler_flags

    add_sampler_flags(smp)
    smp.set_defaults(func=_bench_sampler)
    embed = bench_sub.add_parser("embed", help="embeddings per second for short inputs")
    from intaglio.bench.embeddings import add_embed_bench_flags

    add_embed_bench_flags(embed)
    add_engine_flags(embed)
    embed.set_defaults(func=_bench_embed)
    codesign_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
