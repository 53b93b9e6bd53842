"""Self-consistency: sample N answers, extract each one's final answer, take the majority.

Votes count one each, or with confidence weighting the probability the model gave its own
trace (exp of its mean token log-probability). With early stopping the vote ends, and the
samples still running are pruned, once the leader cannot be caught: its lead exceeds what the
unfinished samples could still add to the runner-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from intaglio.search.program import Branch, Search


@dataclass
class Vote:
    answer: str | None  # None when no sample gave an answer
    weights: dict[str, float] = field(default_factory=dict)  # answer -> its votes
    branches: list[Branch] = field(default_factory=list)  # the finished samples, in order
    num_finished: int = 0  # samples that counted before the vote ended


def tally(answers: list[str | None], weights: list[float]) -> dict[str, float]:
    """Votes per answer; a sample without an answer does not vote."""
    votes: dict[str, float] = {}
    for answer, weight in zip(answers, weights):
        if answer is not None:
            votes[answer] = votes.get(answer, 0.0) + weight
    return votes


def leader(votes: dict[str, float]) -> str | None:
    """The most voted answer; a tie goes to the answer that reached its count first."""
    return max(votes, key=lambda a: votes[a]) if votes else None


def is_decided(votes: dict[str, float], num_unfinished: int, max_weight: float = 1.0) -> bool:
    """No outcome of the unfinished samples can change the leader."""
    ranked = sorted(votes.values(), reverse=True)
    if not ranked:
        return num_unfinished == 0
    runner_up = ranked[1] if len(ranked) > 1 else 0.0
    return ranked[0] - runner_up > num_unfinished * max_weight


async def self_consistency(
    s: Search,
    root: Branch,
    n: int,
    extract: Callable[[str], str | None],
    weighted: bool = False,
    early_stop: bool = True,
    **sampling: Any,
) -> Vote:
    pendings = s.launch(s.fork(root, n), **sampling)
    # (pending, sample) -> the finished branch and its answer, in the order they finished;
    # each answer is extracted once (an extractor may run code).
    seen: dict[tuple[int, int], tuple[Branch, str | None]] = {}
    while True:
        await s.wait(pendings, num_samples=len(seen) + 1)
        for p, pending in enumerate(pendings):
            for i, branch in pending.finished_results():
                if (p, i) not in seen:
                    seen[p, i] = (branch, extract(branch.text))
        branches = [b for b, _ in seen.values()]
        weights = [math.exp(b.mean_logprob) if weighted else 1.0 for b in branches]
        votes = tally([a for _, a in seen.values()], weights)
        unfinished = n - len(branches)
        if unfinished == 0 or (early_stop and is_decided(votes, unfinished)):
            for pending in pendings:
                s.prune(pending)
            return Vote(leader(votes), votes, branches, len(branches))
