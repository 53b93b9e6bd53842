"""Tiling a matrix op onto the matrix units: the tile shape, its traffic and its cycles.

A GEMM C[m, n] = A[m, k] B[k, n] (A: activations; B: weights, or the KV cache in attention)
runs as tiles tm x tk x tn, k innermost, accumulating C in fp32 in the tile buffer. Each step
loads an A tile and a B tile (double-buffered, so the next step's loads overlap this step's
compute); A is re-read for every column tile and B for every row tile, unless A fits the
buffer whole and stays ("A stationary"). C is written once. A small search over tile shapes
(multiples of the unit's block up to each dimension) keeps the fastest whose buffers fit, so
a larger buffer can only keep or improve the choice. Within a tile the units run whichever
orientation is faster (C, or C^T with the roles of the operands swapped).

Attention runs flash-style per (KV head, sequence): a query tile of tm rows (the GQA group's
query heads times new tokens) stays while key/value tiles of tn keys stream past; the scores
never leave the chip. K and V are re-read once per query tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intaglio.toolkit.onchip import MatrixUnit
from intaglio.toolkit.pipeline import pipeline_uniform

ACC_BYTES = 4  # fp32 accumulators
_MAX_CANDIDATES = 12


@dataclass(frozen=True)
class Feeds:
    """Where a matrix op's operands come from: bytes/s for A, B and C, the tile buffer."""

    a_bytes_s: float
    b_bytes_s: float
    c_bytes_s: float
    buffer_bytes: float
    buffer_bytes_s: float
    cycle_s: float  # one cycle of the matrix units at the op's dtype


@dataclass(frozen=True)
class TileChoice:
    tile: tuple[int, int, int]  # (tm, tk, tn); attention: (tm, head_dim, tn)
    problems_per_step: int  # independent problems (experts, heads) sharing a step
    a_stationary: bool
    total_steps: int  # tile steps over all problems
    cycles: float  # matrix-unit cycles, all repeats
    a_bytes: float  # traffic, all repeats
    b_bytes: float
    c_bytes: float
    buffer_bytes: float  # tile buffer the choice occupies
    load_s: float  # memory engine busy time, all repeats
    compute_s: float  # matrix units busy time (or tile-buffer bound), all repeats

    @property
    def time_s(self) -> float:
        """Alone on the chip, inputs ready at 0: the double-buffered pipeline's end."""
        n = self.total_steps
        return float(pipeline_uniform(n, self.load_s / n, self.compute_s / n, 0.0, 0.0)[1])


def _sizes(dim: int, grain: int) -> np.ndarray:
    """Candidate tile sizes along a dimension: the whole of it (rounded up to the grain),
    then halves, down to the grain."""
    size = int(-(-dim // grain) * grain)
    out: list[int] = []
    while size >= grain and len(out) < _MAX_CANDIDATES:
        out.append(size)
        size = size // 2 // grain * grain
    return np.array(out, dtype=np.float64)


def _edges(dim: float, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(number of tiles, size of the full ones, size of the last one)."""
    count = np.ceil(dim / tile)
    return count, tile, dim - (count - 1) * tile


def _cycles(unit: MatrixUnit, m: float, k: float, n: float, tm, tk, tn, tb) -> np.ndarray:  # noqa: ANN001
    """Exact cycles over one problem's tiles, edges included (8 classes of full or last m, k,
    n), when tb problems share each step. Each tile runs in the better orientation (C, or
    C^T = B^T A^T: which operand the units hold and which streams), as a compiler would
    choose; a skinny decode matmul streams the weights past the few stationary token rows."""
    total = np.zeros(np.broadcast(tm, tk, tn, tb).shape)
    cm, fm, lm = _edges(m, tm)
    ck, fk, lk = _edges(k, tk)
    cn, fn, ln = _edges(n, tn)
    for nm, sm in ((cm - 1, fm), (1.0, lm)):
        for nk, sk in ((ck - 1, fk), (1.0, lk)):
            for nn, sn in ((cn - 1, fn), (1.0, ln)):
                best = np.minimum(unit.cycles(sm, sk, sn, tb), unit.cycles(sn, sk, sm, tb))
                total = total + nm * nk * nn * best
    return total / tb  # per problem


def _batches(repeats: float) -> np.ndarray:
    """Problems per step: powers of two up to the number of problems, and all of them."""
    top = max(1, int(repeats))
    out = {top}
    size = 1
    while size < top and len(out) < _MAX_CANDIDATES:
        out.add(size)
        size *= 2
    return np.array(sorted(out), dtype=np.float64)


def _choose(
    what: str,
    feeds: Feeds,
    repeats: float,
    tiles: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    stay: np.ndarray,
    buffer: np.ndarray,
    traffic: tuple[np.ndarray, np.ndarray, np.ndarray],
    cycles: np.ndarray,
    steps: np.ndarray,
    fed_bytes: np.ndarray,
) -> TileChoice:
    """The fastest candidate whose buffers fit (all arrays per candidate, per problem)."""
    tm, tk, tn, tb = tiles
    a_t, b_t, c_t = traffic
    load = a_t / feeds.a_bytes_s + b_t / feeds.b_bytes_s + c_t / feeds.c_bytes_s
    compute = np.maximum(cycles * feeds.cycle_s, fed_bytes / feeds.buffer_bytes_s)
    total = np.maximum(1, np.round(steps * repeats / tb))
    time = pipeline_uniform(total, repeats * load / total, repeats * compute / total, 0, 0)[1]
    fits = buffer <= feeds.buffer_bytes
    if not fits.any():
        raise ValueError(
            f"no tile of {what} fits the tile buffer of {feeds.buffer_bytes / 2**20:.3g} MiB"
        )
    key = np.where(fits, time, np.inf)
    near = np.flatnonzero(key <= key.min() * (1 + 1e-12))
    i = int(near[np.argmin((a_t + b_t)[near])])  # equal times: the least traffic
    return TileChoice(
        (int(tm[i]), int(tk[i]), int(tn[i])),
        int(tb[i]),
        bool(stay[i]),
        int(total[i]),
        float(cycles[i] * repeats),
        float(a_t[i] * repeats),
        float(b_t[i] * repeats),
        float(c_t[i] * repeats),
        float(buffer[i]),
        float(load[i] * repeats),
        float(compute[i] * repeats),
    )


def tile_gemm(
    m: float,
    k: float,
    n: float,
    a: float,
    b: float,
    c: float,
    unit: MatrixUnit,
    feeds: Feeds,
    repeats: float = 1.0,
    tile: tuple[int, int, int] | None = None,
) -> TileChoice:
    """The fastest tiling of `repeats` GEMMs m x k x n (e.g. experts) with a, b, c bytes per
    element of A, B and C; tb of them may share a step (their folds spread over the units).
    `tile` fixes the tile shape (the search then only picks A stationary or not)."""
    m, k, n = max(1.0, float(np.ceil(m))), float(k), float(n)
    bm, bk, bn = unit.block
    sizes = (
        [np.array([float(t)]) for t in tile]
        if tile
        else [_sizes(int(m), bm), _sizes(int(k), bk), _sizes(int(n), bn)]
    )
    grid = np.meshgrid(
        *sizes,
        _batches(repeats),
        [False, True],
        indexing="ij",
    )
    tm, tk, tn, tb, stay = (x.ravel() for x in grid)
    tm, tk, tn, stay = np.minimum(tm, m), np.minimum(tk, k), np.minimum(tn, n), stay > 0
    rows, cols = np.ceil(m / tm), np.ceil(n / tn)
    a_tiles = np.where(stay, m * k * a, 2 * tm * tk * a)
    buffer = tb * (a_tiles + 2 * tk * tn * b + tm * tn * ACC_BYTES)
    traffic = (m * k * a * np.where(stay, 1.0, cols), k * n * b * rows, m * n * c + 0 * tm)
    steps = rows * cols * np.ceil(k / tk)
    fed = steps * (tm * tk * a + tk * tn * b)  # buffer -> units, per problem
    cycles = _cycles(unit, m, k, n, tm, tk, tn, tb)
    what = f"{m:.0f}x{k:.0f}x{n:.0f}"
    return _choose(
        what, feeds, repeats, (tm, tk, tn, tb), stay, buffer, traffic, cycles, steps, fed
    )


def tile_attention(
    rows: float,
    head_dim: int,
    keys: float,
    keys_read: float,
    a: float,
    kv: float,
    unit: MatrixUnit,
    feeds: Feeds,
    repeats: float = 1.0,
) -> TileChoice:
    """Flash attention for `repeats` (KV head, sequence) problems: `rows` query rows (the
    group's heads x new tokens), `keys` attended per query row on average, `keys_read` cached
    keys a single pass reads; K and V at `kv` bytes per element (the B operand)."""
    m, d, nk = max(1.0, float(np.ceil(rows))), float(head_dim), max(1.0, float(keys))
    bm, _, bn = unit.block
    grid = np.meshgrid(_sizes(int(m), bm), _sizes(int(nk), bn), _batches(repeats), indexing="ij")
    tm, tn, tb = (x.ravel() for x in grid)
    tm, tn = np.minimum(tm, m), np.minimum(tn, nk)
    q_tiles = np.ceil(m / tm)
    buffer = tb * (tm * d * a + 2 * 2 * tn * d * kv + tm * tn * ACC_BYTES + tm * d * ACC_BYTES)
    # Each query tile reads the keys its rows attend (at most all of them) as K and V.
    kv_traffic = 2 * d * kv * np.minimum(keys_read, q_tiles * (nk + tm))
    traffic = (m * d * a + 0 * tm, kv_traffic, m * d * a + 0 * tm)
    steps = q_tiles * np.ceil(nk / tn)
    fed = steps * (tm * d * a + 2 * tn * d * kv)
    cycles = _cycles(unit, m, d, nk, tm, d, tn, tb) + _cycles(unit, m, nk, d, tm, tn, d, tb)
    return _choose(
        "attention",
        feeds,
        repeats,
        (tm, np.full_like(tm, d), tn, tb),
        np.ones_like(tm, dtype=bool),
        buffer,
        traffic,
        cycles,
        steps,
        fed,
    )
