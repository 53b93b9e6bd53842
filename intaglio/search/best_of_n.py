"""Best-of-N: N samples of one prompt, sharing its KV, and the one a scorer ranks highest."""

from __future__ import annotations

from typing import Any

from intaglio.search.program import Branch, Search
from intaglio.search.scorers import Scorer


async def best_of_n(
    s: Search, root: Branch, n: int, scorer: Scorer, **sampling: Any
) -> Branch | None:
    """The best of `n` samples (ties go to the earlier sample). Under a budget the samples it
    cut short are scored as they are; None when nothing was generated."""
    candidates = [b for b in await s.gen_all(s.fork(root, n), **sampling) if b.num_generated]
    best: tuple[float, Branch] | None = None
    for branch in candidates:
        value = await scorer(s, branch)
        if best is None or value > best[0]:
            best = (value, branch)
    return None if best is None else best[1]
