"""A double-buffered load/compute pipeline: when its last load and last compute finish.

A tiled op runs n steps; step j loads its tiles (l_j seconds on the memory engine) into one of
two buffer slots, then computes on them (c_j seconds on a compute unit). A load waits for the
previous load and for its slot to be freed (the compute two steps back); a compute waits for
its load, the previous compute and, for the first step, for the op's inputs to be ready.

`pipeline_exact` runs that recurrence step by step (the instruction trace of one op);
`pipeline_uniform` is its closed form for n equal steps: the longest path through the
recurrence's dependency graph, used for whole model steps where ops have thousands of tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pipeline_exact(
    loads: Sequence[float], computes: Sequence[float], load_from: float, ready: float
) -> list[tuple[float, float, float, float]]:
    """(load start, load end, compute start, compute end) of each step."""
    out: list[tuple[float, float, float, float]] = []
    load_end, comp_end = load_from, ready
    for j, (load, compute) in enumerate(zip(loads, computes)):
        slot_free = out[j - 2][3] if j >= 2 else load_from
        load_start = max(load_end, slot_free)
        load_end = load_start + load
        comp_start = max(comp_end, load_end)
        comp_end = comp_start + compute
        out.append((load_start, load_end, comp_start, comp_end))
    return out


def pipeline_uniform(n: Any, load: Any, compute: Any, load_from: Any, ready: Any) -> Any:
    """(last load's end, last compute's end) of n >= 1 steps of `load` and `compute` seconds,
    loads free to start at `load_from`, the first compute not before `ready` (numbers or
    numpy arrays, broadcast)."""
    n = np.maximum(n, 1)
    # The last load waits for the previous loads, and each load j for its slot (compute j - 2);
    # the paths through a slot are linear in j, so the first and last such slot bound them.
    first = _compute_end(1, load, compute, load_from, ready) + (n - 2) * load
    last = _compute_end(n - 2, load, compute, load_from, ready) + load
    load_end = load_from + n * load
    load_end = np.where(n >= 3, np.maximum(load_end, np.maximum(first, last)), load_end)
    return load_end, _compute_end(n, load, compute, load_from, ready)


def _compute_end(n: Any, ld: Any, c: Any, a: Any, r: Any) -> Any:
    # Longest paths: all loads then one compute, one load then all computes, waiting on the
    # inputs then all computes, and (n >= 3) one compute, then loads held back by the buffer.
    end = np.maximum(np.maximum(a + n * ld + c, a + ld + n * c), r + n * c)
    return np.where(n >= 3, np.maximum(end, r + 2 * c + (n - 2) * ld), end)
