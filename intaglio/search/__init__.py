"""Inference-time compute scaling: search programs on the engine's shared KV.

`program.py` is the programming model (branches; gen, fork, select, score, prune, join),
`runner.py` runs programs on an LLMEngine's own batching with budgets and accounting, and each
method is a short file: `best_of_n.py`, `self_consistency.py`, `step_search.py` (step beam
search, REBASE), `mcts.py`. Beam search over tokens runs inside the engine itself
(`SamplingParams(use_beam_search=True)`, engine/beam_search.py).
"""

from intaglio.search.best_of_n import best_of_n
from intaglio.search.mcts import mcts
from intaglio.search.program import Branch, Pending, Search
from intaglio.search.runner import Budget, ProgramResult, ProgramRunner, ProgramStats, run_programs
from intaglio.search.scorers import Scorer, judge, mean_logprob, verifier
from intaglio.search.self_consistency import Vote, self_consistency
from intaglio.search.step_search import rebase, step_beam_search

__all__ = [
    "Branch",
    "Budget",
    "Pending",
    "ProgramResult",
    "ProgramRunner",
    "ProgramStats",
    "Scorer",
    "Search",
    "Vote",
    "best_of_n",
    "judge",
    "mcts",
    "mean_logprob",
    "rebase",
    "run_programs",
    "self_consistency",
    "step_beam_search",
    "verifier",
]
