"""The complement of a regular language, as grammar IR (for JSON Schema `not: {pattern}`).

The language is determinised over a small byte alphabet (the DFA is read from our automaton),
its accepting states are flipped, and the DFA is turned back into an expression by state
elimination. Both steps can blow up, so each is bounded and gives None past its bound.
"""

from __future__ import annotations

from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.grammar.ir import (
    EMPTY,
    NOTHING,
    Alt,
    Bytes,
    Grammar,
    Node,
    Repeat,
    Seq,
    alt,
    seq,
)

MAX_DFA_STATES = 64
MAX_NODES = 20_000  # size of the expression once written out as a tree


def complement(node: Node, alphabet: int) -> Node | None:
    """Strings over the bytes in `alphabet` (a 256-bit mask of single-byte characters) that
    `node` does not match; None when the automaton or the expression would be too large."""
    a = Automaton(Grammar({"root": node}))
    symbols = [b for b in range(256) if alphabet >> b & 1]
    index = {a.start: 0}
    order = [a.start]
    edges: list[dict[int, int]] = []  # per state: target -> byte mask
    for d in order:  # grows while we walk it
        out: dict[int, int] = {}
        for b in symbols:
            t = a.step(d, b)
            if t not in index:
                if len(order) >= MAX_DFA_STATES:
                    return None
                index[t] = len(order)
                order.append(t)
            out[index[t]] = out.get(index[t], 0) | (1 << b)
        edges.append(out)
    finals = [i for i, d in enumerate(order) if not a.accepting[d]]
    return _eliminate(edges, finals)


def _eliminate(edges: list[dict[int, int]], finals: list[int]) -> Node | None:
    """State elimination: r[i][j] is the expression for paths i -> j through the states not
    eliminated yet; a fresh start (n) and end (n + 1) are joined by the result."""
    n = len(edges)
    r: dict[int, dict[int, Node]] = {i: {} for i in range(n + 2)}
    for i, row in enumerate(edges):
        for j, mask in row.items():
            r[i][j] = Bytes(mask)
    r[n][0] = EMPTY
    for f in finals:
        r[f][n + 1] = _union(r[f].get(n + 1), EMPTY)
    sizes: dict[int, tuple[Node, int]] = {}
    remaining = set(range(n))
    while remaining:
        # Eliminate the state with the fewest paths through it first.
        k = min(
            remaining,
            key=lambda s: sum(s in r[i] for i in r if i != s) * len([j for j in r[s] if j != s]),
        )
        remaining.discard(k)
        loop = r[k].pop(k, None)
        star = Repeat(loop, 0, None) if loop is not None else EMPTY
        outs = r.pop(k)
        for i in list(r):
            into = r[i].pop(k, None)
            if into is None:
                continue
            for j, out in outs.items():
                path = seq(into, star, out)
                r[i][j] = _union(r[i].get(j), path)
                if _size(r[i][j], sizes) > MAX_NODES:
                    return None
    return r[n].get(n + 1, NOTHING)  # no path: every string matches, the complement is empty


def _union(old: Node | None, new: Node) -> Node:
    return new if old is None else alt(old, new)


def _size(node: Node, memo: dict[int, tuple[Node, int]]) -> int:
    """Tree size (shared subexpressions counted at every use, as the automaton builds them).
    The memo keeps each node alive, so its id cannot be reused by another."""
    key = id(node)
    if key in memo:
        return memo[key][1]
    if isinstance(node, (Seq, Alt)):
        got = 1 + sum(_size(i, memo) for i in node.items)
    elif isinstance(node, Repeat):
        got = 1 + _size(node.item, memo)
    else:
        got = 1
    memo[key] = (node, got)
    return got
