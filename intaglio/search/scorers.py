"""Scorers: how a method ranks finished branches. A scorer is `async (search, branch) -> float`.

Three kinds, as best-of-N uses them: the branch's own mean log-probability; a user function of
the generated text (a verifier: an answer checker, unit tests); and the same model prompted to
judge, scored from its log-probabilities (a reward model served by the same engine).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from intaglio.search.program import Branch, Search

Scorer = Callable[[Search, Branch], Awaitable[float]]


async def mean_logprob(s: Search, branch: Branch) -> float:
    """Mean log-probability per generated token (vLLM's best_of ranks by the sum)."""
    return branch.mean_logprob


def verifier(check: Callable[[str], float | bool]) -> Scorer:
    """Score the generated text with a function: True/False or a number, higher is better."""

    async def score(s: Search, branch: Branch) -> float:
        return float(check(branch.text))

    return score


def judge(question: str, yes: str = " Yes", no: str = " No") -> Scorer:
    """The model as its own reward model: after the branch and `question`, the probability it
    gives `yes` against `no`, normalised over the two."""

    async def score(s: Search, branch: Branch) -> float:
        asked = s.extend(branch, question)
        lp_yes, lp_no = await s.score(asked, yes), await s.score(asked, no)
        return 1.0 / (1.0 + math.exp(lp_no - lp_yes))

    return score
