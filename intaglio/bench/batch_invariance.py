"""How much a request's greedy answer depends on the rest of its batch, with and without the
batch-invariant mode.

    python -m intaglio.bench.batch_invariance [--model PATH] [--dtype bfloat16] \\
        [--num-requests 48] [--max-tokens 64] [--num-threads 1] [--batch-invariant]

Each chat request is answered alone (an idle engine, no prefix cache), then all of them at once
on one engine; the report counts answers whose tokens differ, the largest logprob difference
of the tokens both runs agree on, and the largest gap between the batch run's generation
logprobs and the same tokens' prompt logprobs (echo).
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

from intaglio.api.llm import LLM
from intaglio.sampling.params import SamplingParams

_TOPICS = (
    "the moon", "bread", "rivers", "chess", "volcanoes", "bees", "the violin", "glaciers",
    "trains", "tea", "owls", "deserts", "printing", "magnets", "coral reefs", "clocks",
)  # fmt: skip
_ASKS = ("Tell me three facts about {}.", "Explain {} to a child.", "Write a short poem about {}.")


def conversations(count: int) -> list[list[dict[str, str]]]:
    asks = itertools.cycle(a.format(t) for a in _ASKS for t in _TOPICS)
    return [[{"role": "user", "content": next(asks)}] for _ in range(count)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = dict(dtype=args.dtype, num_threads=args.num_threads)
    engine["batch_invariant"] = args.batch_invariant
    greedy = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, logprobs=0)
    solo_llm = LLM(args.model, prefix_caching=False, **engine)
    prompts = [solo_llm.chat_prompt(c) for c in conversations(args.num_requests)]
    t0 = time.perf_counter()
    solo = [solo_llm.generate([p], greedy)[0].outputs[0] for p in prompts]
    solo_s = time.perf_counter() - t0
    del solo_llm
    llm = LLM(args.model, max_num_seqs=args.num_requests, **engine)
    t0 = time.perf_counter()
    batch = [o.outputs[0] for o in llm.generate(prompts, greedy)]
    batch_s = time.perf_counter() - t0
    differ, lp_gap = 0, 0.0
    for a, b in zip(solo, batch):
        differ += a.token_ids != b.token_ids
        assert a.logprobs is not None and b.logprobs is not None
        for ta, tb, la, lb in zip(a.token_ids, b.token_ids, a.logprobs, b.logprobs):
            if ta != tb:
                break
            lp_gap = max(lp_gap, abs(la[ta] - lb[tb]))
    echo = SamplingParams(max_tokens=1, prompt_logprobs=0)
    echoed = llm.generate([p + o.token_ids for p, o in zip(prompts, batch)], echo)
    echo_gap = 0.0
    for p, o, e in zip(prompts, batch, echoed):
        assert o.logprobs is not None and e.prompt_logprobs is not None
        for t, gen, pro in zip(o.token_ids, o.logprobs, e.prompt_logprobs[len(p) :]):
            assert pro is not None
            echo_gap = max(echo_gap, abs(gen[t] - pro[t]))
    return {
        "batch_invariant": args.batch_invariant,
        "requests": len(prompts),
        "answers_differing": differ,
        "max_logprob_gap_same_tokens": lp_gap,
        "max_echo_vs_generation_gap": echo_gap,
        "solo_s": round(solo_s, 1),
        "batch_s": round(batch_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the default model)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--num-requests", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--batch-invariant", action="store_true")
    print(run(ap.parse_args()))


if __name__ == "__main__":
    main()
