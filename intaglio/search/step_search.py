"""Step-level tree search: grow solutions one reasoning step at a time, guided by a value function.

A step is what one gen produces up to a step delimiter (a newline by default); a branch is
complete when its gen ended any other way (EOS, a stop token, the length limit). After each
round the value function (any Scorer: a process reward model, a judge, a toy that knows the
answer) scores the new steps, and the method decides what to expand:

- `step_beam_search`: keep the `width` best incomplete branches, expand each `expand` times;
- `rebase`: REBASE (Wu et al., 2024): share a fixed number of expansions among all incomplete
  branches in proportion to softmax(value / temperature), so strong branches get many children
  and weak ones none; each completed branch takes one expansion out of the budget.

Both return the completed branch of highest value (or, when the budget ran out first, the best
branch so far), and fork every expansion from its parent's KV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from intaglio.search.program import Branch, Search
from intaglio.search.scorers import Scorer

STEP_DELIMITERS = ("\n",)


def is_complete(branch: Branch, delimiters: Sequence[str] = STEP_DELIMITERS) -> bool:
    return branch.finish_reason is not None and branch.stop_reason not in delimiters


async def expand_steps(
    s: Search, parents: list[tuple[Branch, int]], delimiters: Sequence[str], sampling: dict
) -> list[Branch]:
    """One step on each parent, `count` times each (forks of its KV); empty steps dropped."""
    forks = [c for parent, count in parents if count > 0 for c in s.fork(parent, count)]
    if not forks:
        return []
    step = {**sampling, "stop": list(delimiters), "include_stop_str_in_output": True}
    return [b for b in await s.gen_all(forks, **step) if b.num_generated]


async def _values(s: Search, value: Scorer, branches: list[Branch]) -> list[float]:
    return [await value(s, b) for b in branches]


def _best(scored: list[tuple[float, Branch]]) -> Branch | None:
    return max(scored, key=lambda vb: vb[0])[1] if scored else None


async def step_beam_search(
    s: Search,
    root: Branch,
    value: Scorer,
    width: int = 4,
    expand: int = 4,
    max_steps: int = 8,
    delimiters: Sequence[str] = STEP_DELIMITERS,
    **sampling: Any,
) -> Branch | None:
    frontier = [root]
    complete: list[tuple[float, Branch]] = []
    last: list[tuple[float, Branch]] = []
    for _ in range(max_steps):
        children = await expand_steps(s, [(b, expand) for b in frontier], delimiters, sampling)
        scored = sorted(zip(await _values(s, value, children), children), key=lambda vb: -vb[0])
        last = scored or last
        complete += [(v, b) for v, b in scored if is_complete(b, delimiters)]
        frontier = [b for v, b in scored if not is_complete(b, delimiters)][:width]
        if not frontier or s.exhausted:
            break
    return _best(complete) or _best(last)


def allocate(values: list[float], budget: int, temperature: float) -> list[int]:
    """REBASE's allocation: expansions in proportion to softmax(value / T), rounded so they sum
    to `budget` (largest remainders first)."""
    if not values or budget <= 0:
        return [0] * len(values)
    top = max(values)
    weights = [math.exp((v - top) / temperature) for v in values]
    total = sum(weights)
    shares = [budget * w / total for w in weights]
    counts = [int(x) for x in shares]
    by_remainder = sorted(range(len(values)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: budget - sum(counts)]:
        counts[i] += 1
    return counts


async def rebase(
    s: Search,
    root: Branch,
    value: Scorer,
    budget: int = 16,
    temperature: float = 0.2,
    max_steps: int = 8,
    delimiters: Sequence[str] = STEP_DELIMITERS,
    **sampling: Any,
) -> Branch | None:
    frontier: list[tuple[float, Branch]] = [(0.0, root)]
    complete: list[tuple[float, Branch]] = []
    last: list[tuple[float, Branch]] = []
    for _ in range(max_steps):
        left = budget - len(complete)
        if left <= 0 or not frontier or s.exhausted:
            break
        counts = allocate([v for v, _ in frontier], left, temperature)
        children = await expand_steps(
            s, [(b, c) for (_, b), c in zip(frontier, counts)], delimiters, sampling
        )
        scored = list(zip(await _values(s, value, children), children))
        last = scored or last
        complete += [(v, b) for v, b in scored if is_complete(b, delimiters)]
        frontier = [(v, b) for v, b in scored if not is_complete(b, delimiters)]
    return _best(complete) or _best(last)
