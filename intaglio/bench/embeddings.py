"""`intaglio bench embed`: embeddings per second for a batch of short inputs.

The inputs are short English sentences (about ten tokens each), embedded in one `LLM.embed`
call; the figure is the median of `--repeats` timed calls after one warm-up. With `--hf`,
HF transformers embeds the same inputs with the same weights (the model's forward in one
right-padded batch, then the same pooling), and the table gives its rate beside ours and how
closely the two sets of vectors agree.

    intaglio bench embed --num-threads 2 --hf
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from intaglio.sampling.pooling import POOLING_TYPES

_SUBJECTS = ("The cat", "A small robot", "My neighbour", "The old train", "Every student")
_VERBS = ("walks to", "paints", "writes about", "dreams of")
_PLACES = ("the river", "a quiet library", "the busy market", "the mountains at dawn")


def short_inputs(num: int) -> list[str]:
    """`num` distinct short sentences."""
    combos = itertools.cycle(itertools.product(_SUBJECTS, _VERBS, _PLACES))
    return [f"{s} {v} {p} ({i})." for i, (s, v, p) in zip(range(num), combos)]


def add_embed_bench_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("embeddings benchmark")
    g.add_argument("--num-inputs", type=int, default=64, help="inputs per call (default 64)")
    g.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    g.add_argument("--pooling", choices=POOLING_TYPES, default="last", help="default last")
    g.add_argument("--hf", action="store_true", help="also time HF transformers (same weights)")
    g.add_argument("--json-out", type=Path, default=None, help="write the results as JSON")


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _hf_embed(model: Any, tokenizer: Any, texts: list[str], pooling: str) -> torch.Tensor:
    """HF's forward over one right-padded batch, pooled and normalized as ours is."""
    ids = [tokenizer.encode(t) for t in texts]
    lengths = torch.tensor([len(i) for i in ids])
    width = int(lengths.max())
    batch = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    with torch.no_grad():
        hidden = model.model(input_ids=batch, attention_mask=mask).last_hidden_state.float()
    if pooling == "last":
        vectors = hidden[torch.arange(len(ids)), lengths - 1]
    else:
        vectors = (hidden * mask[..., None]).sum(1) / lengths[:, None]
    return torch.nn.functional.normalize(vectors, dim=-1)


def run_embed_benchmark(args: argparse.Namespace, engine_args: dict[str, Any]) -> dict[str, Any]:
    from intaglio import LLM
    from intaglio.executor.model_executor import ModelExecutor

    llm = LLM(args.model, **engine_args)
    texts = short_inputs(args.num_inputs)
    num_tokens = sum(len(llm.tokenizer.encode(t)) for t in texts)

    def ours() -> list[Any]:
        return llm.embed(texts, pooling=args.pooling)

    seconds = _median_seconds(ours, args.repeats)
    executor = llm.engine.executor
    assert isinstance(executor, ModelExecutor)
    result: dict[str, Any] = {
        "model": llm.model_path.name,
        "dtype": str(executor.model.compute_dtype),
        "num_threads": torch.get_num_threads(),
        "num_inputs": len(texts),
        "input_tokens": num_tokens,
        "pooling": args.pooling,
        "intaglio_s": seconds,
        "intaglio_embeddings_per_s": len(texts) / seconds,
        "intaglio_tokens_per_s": num_tokens / seconds,
    }
    if args.hf:
        import transformers as tf

        path = llm.model_path  # a GGUF file (transformers dequantizes it) or an HF folder
        gguf = {"gguf_file": path.name} if path.is_file() else {}
        folder = path.parent if path.is_file() else path
        model = tf.AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, **gguf
        ).eval()
        hf_seconds = _median_seconds(
            lambda: _hf_embed(model, llm.tokenizer, texts, args.pooling), args.repeats
        )
        ref = _hf_embed(model, llm.tokenizer, texts, args.pooling)
        got = torch.tensor([o.embedding for o in ours()])
        result.update(
            hf_s=hf_seconds,
            hf_embeddings_per_s=len(texts) / hf_seconds,
            min_cosine_vs_hf=float((got * ref).sum(-1).min()),
        )
    _print(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['num_inputs']} inputs, {r['input_tokens']} tokens, {r['pooling']} pooling, "
        f"{r['dtype']}, {r['num_threads']} threads"
    )
    print(f"{'engine':<14}{'seconds':>10}{'embeddings/s':>15}")
    print(f"{'intaglio':<14}{r['intaglio_s']:>10.3f}{r['intaglio_embeddings_per_s']:>15.1f}")
    if "hf_s" in r:
        print(f"{'transformers':<14}{r['hf_s']:>10.3f}{r['hf_embeddings_per_s']:>15.1f}")
        print(f"lowest cosine similarity to transformers' vectors: {r['min_cosine_vs_hf']:.6f}")
