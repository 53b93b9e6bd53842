"""Token walks through a loop of the DFA, shared by every grammar that has the same loop.

A cold mask is dominated by the trie walk from a state where almost every token survives: the
inside of a JSON string, where the whole vocabulary stays alive for many levels. Such a state
sits on a cycle (its strongly connected component, SCC: the string body with its UTF-8 and
escape states), and the same cycle appears in every schema with a free string. So the walk is
split at the cycle's boundary:

- inside the SCC the walk depends only on the SCC's own transitions (relabelled canonically
  from the entry state), so its result is computed once per vocabulary and shape and cached
  on the token trie: tokens that stay inside (accepted), die inside after passing a point
  where the rule could return or call (uncertain), or leave it (exits, with where and how);
- the few tokens that leave (those holding a closing quote, say) finish from the exit state
  in a short vectorised walk over the grammar's own table.

The union is exactly what the direct trie walk from the entry state gives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.runtime.trie import TokenTrie, expand_ranges
from intaglio.structured.runtime.vocab import TokenizerInfo

# A state's loop is worth sharing when this many bytes keep it inside (JSON strings: ~190).
MIN_LOOP_BYTES = 64
_REGION_DEPTH = 3  # UTF-8 sequences return within 3 bytes; longer escapes just exit
_REGION_STATES = 32
_CACHE_ENTRIES = 32
_SUBTREE_ENTRIES = 512  # subtree walks are small: where a string opens mid-token (` "`)
_EXIT = -1
_CACHE_LOCK = threading.Lock()


@dataclass
class LoopWalk:
    """A walk's outcome inside one SCC shape, in token ids; exit_src is a local state."""

    accepted: np.ndarray
    uncertain: np.ndarray
    exit_tok: np.ndarray
    exit_pos: np.ndarray
    exit_src: np.ndarray
    exit_crossed: np.ndarray


def loop_shape(
    a: Automaton, d: int, root: bool
) -> tuple[bytes, list[int], np.ndarray, np.ndarray] | None:
    """(cache key, local -> DFA state, local table, local `exits` flags) for d's SCC.

    The SCC is found inside the states within _REGION_DEPTH bytes of d; any subset of the true
    SCC is correct (edges out of it are exits), a smaller one only sends more tokens down the
    exit path. None when too few bytes keep d inside its SCC to be worth it.
    """
    a.fill_rows(np.array([d], dtype=np.int64))
    if int((a.table[d] > 0).sum()) < MIN_LOOP_BYTES:
        return None  # cheap pre-check: not even d's live bytes are enough
    region = [d]
    seen = {d}
    frontier = [d]
    succ: dict[int, list[int]] = {}  # live successors, in order of their first byte
    for _ in range(_REGION_DEPTH):
        if not frontier:
            break
        nxt_frontier = []
        a.fill_rows(np.array(frontier, dtype=np.int64))
        for s in frontier:
            succ[s] = _successors(a, s)
            for t in succ[s]:
                if t not in seen and len(region) < _REGION_STATES:
                    seen.add(t)
                    region.append(t)
                    nxt_frontier.append(t)
        frontier = nxt_frontier
    a.fill_rows(np.array(region, dtype=np.int64))
    for s in region:
        if s not in succ:
            succ[s] = _successors(a, s)
    inside = _reaching(succ, region, {d})  # d's SCC: the states of the region that reach d
    if inside == {d} and d not in succ[d]:
        inside = _entry(a, succ, d, region)
    # Canonical labels: breadth first from d, children by byte.
    local = {d: 1}
    order = [d]
    for s in order:
        for t in succ[s]:
            if t in inside and t not in local:
                local[t] = len(order) + 1
                order.append(t)
    lut = np.full(len(a.table), _EXIT, dtype=np.int32)
    lut[0] = 0
    for s, i in local.items():
        lut[s] = i
    table = np.zeros((len(order) + 1, 256), dtype=np.int32)
    table[1:] = lut[a.table[order]]
    if int((table[1] > 0).sum()) < MIN_LOOP_BYTES:
        return None
    ex = a.exitable & ~a.accepting if root else a.exitable
    exits = np.zeros(len(order) + 1, dtype=bool)
    exits[1:] = ex[order]
    key = table.tobytes() + exits.tobytes()
    return key, order, table, exits


def _successors(a: Automaton, s: int) -> list[int]:
    """The live states one byte after s, ordered by the first byte leading to each."""
    targets, first = np.unique(a.table[s], return_index=True)
    return [int(t) for t in targets[np.argsort(first)] if t]


def _reaching(succ: dict[int, list[int]], region: list[int], seeds: set[int]) -> set[int]:
    """The states of the region that reach a seed (backward closure inside the region)."""
    out = set(seeds)
    changed = True
    while changed:
        changed = False
        for s in region:
            if s not in out and not out.isdisjoint(succ[s]):
                out.add(s)
                changed = True
    return out


def _entry(a: Automaton, succ: dict[int, list[int]], d: int, region: list[int]) -> set[int]:
    """For a state d on no cycle that leads into one (the first character of a string with
    minLength 1): d, the SCC that most of d's bytes enter, and the states in between (the
    rest of d's multi-byte characters), whose every byte enters that set."""
    row = a.table[d]
    t = int(np.bincount(row[row > 0]).argmax())
    ahead = {t}
    frontier = [t]
    while frontier:  # the region's states reachable from t
        frontier = [u for s in frontier for u in succ.get(s, ()) if u in succ and u not in ahead]
        ahead.update(frontier)
    loop = _reaching(succ, region, {t}) & ahead
    if loop == {t} and t not in succ[t]:
        return {d}  # t is on no cycle either (a chain of positions): nothing to share
    out = loop | {d}
    changed = True
    while changed:
        changed = False
        for s in region:
            if s not in out and succ[s] and out.issuperset(succ[s]):
                out.add(s)
                changed = True
    return out


def walk_loop(
    trie: TokenTrie,
    key: bytes,
    table: np.ndarray,
    exits: np.ndarray,
    node: int = 0,
    depth: int = 0,
) -> LoopWalk:
    """The trie walk from local state 1 through `table`, over the whole trie or the subtree of
    one node (index `node` at level `depth`) entered in that state (cached per vocabulary,
    shape and node)."""
    cache, size = trie.loop_walks, _CACHE_ENTRIES
    if depth:
        cache, size = trie.subtree_walks, _SUBTREE_ENTRIES
        key += np.array([node, depth], dtype=np.int64).tobytes()
    with _CACHE_LOCK:  # grammars on several threads share it
        got = cache.get(key)
        if got is not None:
            cache.move_to_end(key)
            return got
    nodes = np.full(1, node, dtype=np.int64)
    states = np.ones(1, dtype=np.int64)
    crossed = np.zeros(1, dtype=bool)
    acc: list[np.ndarray] = []
    unc_lo: list[np.ndarray] = []
    unc_hi: list[np.ndarray] = []
    ex_lo: list[np.ndarray] = []
    ex_hi: list[np.ndarray] = []
    ex_pos: list[np.ndarray] = []
    ex_src: list[np.ndarray] = []
    ex_cr: list[np.ndarray] = []
    for j in range(depth + 1, trie.depth + 1):
        lo, hi = trie.child_lo[j - 1][nodes], trie.child_hi[j - 1][nodes]
        counts = hi - lo
        child = expand_ranges(lo, hi)
        if not child.size:
            break
        cross = crossed | exits[states] if j > 1 else crossed
        src = np.repeat(states, counts)
        cross = np.repeat(cross, counts)
        nxt = table[src, trie.byte[j][child]]
        dead = nxt == 0
        gone = child[dead & cross]
        unc_lo.append(trie.tok_lo[j][gone])
        unc_hi.append(trie.tok_hi[j][gone])
        out = nxt == _EXIT
        leave = child[out]
        ex_lo.append(trie.tok_lo[j][leave])
        ex_hi.append(trie.tok_hi[j][leave])
        ex_pos.append(np.full(leave.size, j - 1, dtype=np.int64))
        ex_src.append(src[out])
        ex_cr.append(cross[out])
        live = nxt > 0
        nodes, states, crossed = child[live], nxt[live].astype(np.int64), cross[live]
        acc.append(expand_ranges(trie.end_lo[j][nodes], trie.end_hi[j][nodes]))
    lo, hi = np.concatenate(ex_lo), np.concatenate(ex_hi)
    counts = hi - lo
    got = LoopWalk(
        accepted=trie.order[np.concatenate(acc)],
        uncertain=trie.order[expand_ranges(np.concatenate(unc_lo), np.concatenate(unc_hi))],
        exit_tok=trie.order[expand_ranges(lo, hi)],
        exit_pos=np.repeat(np.concatenate(ex_pos), counts),
        exit_src=np.repeat(np.concatenate(ex_src), counts),
        exit_crossed=np.repeat(np.concatenate(ex_cr), counts),
    )
    with _CACHE_LOCK:
        cache[key] = got
        if len(cache) > size:
            cache.popitem(last=False)
    return got


def finish_walk(
    a: Automaton,
    vocab: TokenizerInfo,
    tok: np.ndarray,
    pos: np.ndarray,
    state: np.ndarray,
    crossed: np.ndarray,
    root: bool,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(accepted, uncertain) token ids for tokens resumed at byte `pos` in DFA `state`.

    One numpy step per byte position over the tokens still alive; `crossed` follows the trie
    walk's rule (reading a byte after the `first` from a state where the rule could exit).
    """
    lengths, matrix = vocab.lengths, vocab.matrix
    acc: list[np.ndarray] = []
    unc: list[np.ndarray] = []
    while tok.size:
        ended = pos >= lengths[tok]
        acc.append(tok[ended])
        keep = ~ended
        tok, pos, state, crossed = tok[keep], pos[keep], state[keep], crossed[keep]
        if not tok.size:
            break
        a.fill_rows(state)
        ex = a.exitable & ~a.accepting if root else a.exitable
        crossed = crossed | (ex[state] & (pos > first))
        nxt = a.table[state, matrix[tok, pos]].astype(np.int64)
        dead = nxt == 0
        unc.append(tok[dead & crossed])
        live = ~dead
        tok, pos, state, crossed = tok[live], pos[live] + 1, nxt[live], crossed[live]
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.concatenate(acc) if acc else empty,
        np.concatenate(unc) if unc else empty,
    )


def loop_top_walk(
    a: Automaton,
    vocab: TokenizerInfo,
    d: int,
    root: bool,
    node: int = 0,
    depth: int = 0,
    shape: tuple[bytes, list[int], np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(accepted, uncertain) token ids from DFA state d via its shared SCC walk, or None when
    d's loop is too small to be worth it. With a node: the tokens under that trie node (at
    level `depth`), their first `depth` bytes already read into d with no exit passed."""
    shape = shape or loop_shape(a, d, root)
    if shape is None:
        return None
    key, order, table, exits = shape
    w = walk_loop(vocab.trie, key, table, exits, node, depth)
    glob = np.array([0, *order], dtype=np.int64)
    acc, unc = finish_walk(a, vocab, w.exit_tok, w.exit_pos, glob[w.exit_src], w.exit_crossed, root)
    return np.concatenate([w.accepted, acc]), np.concatenate([w.uncertain, unc])
