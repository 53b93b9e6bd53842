"""How hard the search task suite is for a model: greedy, pass@N and majority vote per kind.

    python scripts/measure_search_tasks.py --num 40 --samples 16 --temperature 0.8

Greedy accuracy is one temperature-0 answer per task; pass@N counts a task solved when any of N
samples passes `Task.check`; the majority vote takes the most common extracted answer of the N.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from intaglio.api.llm import LLM
from intaglio.bench.search_tasks import KINDS, make_tasks
from intaglio.sampling.params import SamplingParams

MAX_TOKENS = {"arithmetic": 32, "string": 32, "python": 80}


def majority(answers: list[str | None]) -> str | None:
    """The most common of the answers given (the first seen wins a tie)."""
    votes = Counter(a for a in answers if a is not None)
    return votes.most_common(1)[0][0] if votes else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the project's default model")
    parser.add_argument("--num", type=int, default=40, help="tasks per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--verbose", action="store_true", help="print every task's results")
    args = parser.parse_args()

    llm = LLM(args.model, seed=args.seed)
    print(f"{'kind':<11} {'greedy':>7} {'pass@N':>7} {'vote':>7} {'prompt':>7} {'gen':>6} {'s':>5}")
    for kind in args.kinds:
        tasks = make_tasks(args.num, args.seed, [kind])
        chats = [t.messages() for t in tasks]
        start = time.perf_counter()
        greedy = llm.chat(chats, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS[kind]))
        sampled = llm.chat(
            chats,
            SamplingParams(
                n=args.samples,
                temperature=args.temperature,
                max_tokens=MAX_TOKENS[kind],
                seed=args.seed,
            ),
        )
        seconds = time.perf_counter() - start
        right = passed = voted = 0
        generated = 0
        for task, g, s in zip(tasks, greedy, sampled):
            texts = [o.text for o in s.outputs]
            answers = [task.extract(t) for t in texts]
            good = task.check(g.outputs[0].text)
            hits = sum(a == task.answer for a in answers)
            right += good
            passed += hits > 0
            voted += majority(answers) == task.answer
            generated += sum(len(o.token_ids) for o in s.outputs)
            if args.verbose:
                reply = g.outputs[0].text
                print(f"  {good:d} {hits:>2}/{len(texts)} {task.question!r} -> {reply!r}")
        n = len(tasks)
        prompt = sum(len(g.prompt_token_ids) for g in greedy) / n
        print(
            f"{kind:<11} {right / n:>7.0%} {passed / n:>7.0%} {voted / n:>7.0%} "
            f"{prompt:>7.0f} {generated / (n * args.samples):>6.1f} {seconds:>5.0f}"
        )


if __name__ == "__main__":
    main()
