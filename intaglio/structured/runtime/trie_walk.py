"""The direct walk of one DFA state down the token trie: which tokens its rule accepts alone.

Level by level down the token trie (trie.py), visiting only the children of live nodes. A
child that dies hands its whole subtree to the slow path if the walk passed a point where the
rule could return or call (`crossed`), and rejects it otherwise. While most nodes of a level
are alive the level is stepped whole; a few long tokens left finish in plain Python; a big
subtree that enters a loop mid-token (` "` opening a string) takes a shared loop walk.
"""

from __future__ import annotations

import numpy as np

from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.runtime.loops import loop_shape, loop_top_walk
from intaglio.structured.runtime.trie import expand_ranges
from intaglio.structured.runtime.vocab import TokenizerInfo

# Below this many live trie nodes and tokens under them, a walk finishes in Python.
_TAIL_NODES = 16
_TAIL_TOKENS = 128
# A trie level is stepped whole while at least this share of the level above is alive.
_DENSE_SHARE = 0.25
# A live trie node with this many tokens under it, in a loop state, takes a shared walk.
_LOOP_SUBTREE = 256


class TrieWalker:
    """Per grammar: DFA rows as lists and loop shapes, for walks from any of its states."""

    def __init__(self, automaton: Automaton, vocab: TokenizerInfo) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self.trie = vocab.trie
        self._py_rows: dict[int, tuple[list[int], bool, bool]] = {}
        self._shapes: dict[tuple[int, bool], tuple | None] = {}  # loop shape of a DFA state
        self.loop_subtree = _LOOP_SUBTREE  # tests lower it

    def walk(self, d: int, root: bool) -> tuple[np.ndarray, np.ndarray]:
        """The direct walk from d over the whole token trie with this grammar's table:
        (accepted ids, uncertain trie positions, sorted)."""
        a, trie = self.automaton, self.trie
        # At the root nothing can return, so only call edges make a token uncertain.
        states = np.array([d], dtype=np.int64)
        crossed = np.zeros(1, dtype=bool)
        accepted: list[np.ndarray] = []
        unc_lo: list[np.ndarray] = []
        unc_hi: list[np.ndarray] = []
        # Dense levels: while most nodes are alive, step every node of the level at once (the
        # dead state loops to itself), which beats gathering the children of live nodes.
        first = 1
        while first <= trie.depth:
            live_prev = int(np.count_nonzero(states))
            if not live_prev or (first > 1 and live_prev < _DENSE_SHARE * states.size):
                break
            j, parent = first, trie.parent[first]
            parent_state = states[parent]
            todo = parent_state[~a.row_done[parent_state]]
            if todo.size:
                a.fill_rows(todo)
            exits = a.exitable & ~a.accepting if root else a.exitable
            parent_cross = crossed[parent]
            if j > 1:
                parent_cross = parent_cross | exits[parent_state]
            flat = (parent_state << 8) | trie.byte[j]
            nxt = np.take(a.table.reshape(-1), flat).astype(np.int64)
            handoff = np.flatnonzero((nxt == 0) & (parent_state != 0) & parent_cross)
            if handoff.size:
                unc_lo.append(trie.tok_lo[j][handoff])
                unc_hi.append(trie.tok_hi[j][handoff])
            live = np.flatnonzero(nxt)
            accepted.append(expand_ranges(trie.end_lo[j][live], trie.end_hi[j][live]))
            states, crossed = nxt, parent_cross
            first += 1
        nodes = np.flatnonzero(states)
        states, crossed = states[nodes], crossed[nodes]
        for j in range(first, trie.depth + 1):
            if j > 1:
                nodes, states, crossed = self._loop_subtrees(
                    j - 1, nodes, states, crossed, root, accepted, (unc_lo, unc_hi)
                )
            if nodes.size <= _TAIL_NODES:
                tok_lo, tok_hi = trie.tok_lo[j - 1][nodes], trie.tok_hi[j - 1][nodes]
                if int((tok_hi - tok_lo).sum()) <= _TAIL_TOKENS:
                    # A few long tokens left: finishing them in Python beats a numpy pass
                    # per remaining level.
                    acc_tail, unc_tail = self._finish_tail(
                        j - 1, states, crossed, tok_lo, tok_hi, root
                    )
                    accepted.append(acc_tail)
                    unc_lo.append(unc_tail)
                    unc_hi.append(unc_tail + 1)
                    break
            lo, hi = trie.child_lo[j - 1][nodes], trie.child_hi[j - 1][nodes]
            counts = hi - lo
            child = expand_ranges(lo, hi)
            if not child.size:
                break
            a.fill_rows(states)
            exits = a.exitable & ~a.accepting if root else a.exitable
            parent_cross = crossed | exits[states] if j > 1 else crossed
            parent_state = np.repeat(states, counts)
            parent_cross = np.repeat(parent_cross, counts)
            nxt = a.table[parent_state, trie.byte[j][child]]
            dead = nxt == 0
            handoff = child[dead & parent_cross]
            if handoff.size:
                unc_lo.append(trie.tok_lo[j][handoff])
                unc_hi.append(trie.tok_hi[j][handoff])
            live = ~dead
            nodes, states, crossed = child[live], nxt[live], parent_cross[live]
            accepted.append(expand_ranges(trie.end_lo[j][nodes], trie.end_hi[j][nodes]))
        empty = np.zeros(0, dtype=np.int64)
        acc = trie.order[np.concatenate(accepted)] if accepted else empty
        if not unc_lo:
            return acc, empty
        lo, hi = np.concatenate(unc_lo), np.concatenate(unc_hi)
        order = np.argsort(lo, kind="stable")  # disjoint subtrees: sorted ranges, sorted run
        return acc, expand_ranges(lo[order], hi[order])

    def _loop_subtrees(
        self,
        depth: int,
        nodes: np.ndarray,
        states: np.ndarray,
        crossed: np.ndarray,
        root: bool,
        accepted: list[np.ndarray],
        uncertain: tuple[list[np.ndarray], list[np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hand big subtrees whose walk enters a loop (` "` opening a string) to the shared
        subtree walks of loops.py; returns the nodes left to this walk. Found tokens are
        appended as trie positions (uncertain ones as one-token ranges)."""
        trie = self.trie
        big = trie.tok_hi[depth][nodes] - trie.tok_lo[depth][nodes] >= self.loop_subtree
        todo = np.flatnonzero(big & ~crossed)
        if not todo.size:
            return nodes, states, crossed
        keep = np.ones(nodes.size, dtype=bool)
        for i in todo.tolist():
            d = int(states[i])
            key = (d, root)
            if key not in self._shapes:
                self._shapes[key] = loop_shape(self.automaton, d, root)
            shape = self._shapes[key]
            if shape is None:
                continue
            got = loop_top_walk(self.automaton, self.vocab, d, root, int(nodes[i]), depth, shape)
            assert got is not None
            accepted.append(trie.rank[got[0]])
            unc = trie.rank[got[1]]
            uncertain[0].append(unc)
            uncertain[1].append(unc + 1)
            keep[i] = False
        return nodes[keep], states[keep], crossed[keep]

    def _py_row(self, d: int) -> tuple[list[int], bool, bool]:
        """DFA state d's row as a list, and whether d may exit (return or call) or accept."""
        got = self._py_rows.get(d)
        if got is None:
            a = self.automaton
            a.step(d, 0)  # fills the row
            got = self._py_rows[d] = (
                a.table[d].tolist(),
                bool(a.exitable[d]),
                bool(a.accepting[d]),
            )
        return got

    def _finish_tail(
        self,
        depth: int,
        states: np.ndarray,
        crossed: np.ndarray,
        tok_lo: np.ndarray,
        tok_hi: np.ndarray,
        root: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Walk the remaining bytes of the tokens under a few live nodes (sorted positions),
        in plain Python: DFA rows as lists, so a byte costs a list index, not numpy calls."""
        trie, tokens, row_of = self.trie, self.vocab.token_bytes, self._py_row
        accepted: list[int] = []
        uncertain: list[int] = []
        for st, cr, lo, hi in zip(
            states.tolist(), crossed.tolist(), tok_lo.tolist(), tok_hi.tolist(), strict=True
        ):
            for pos, t in enumerate(trie.order[lo:hi].tolist(), lo):
                data = tokens[t]
                if len(data) == depth:  # type: ignore[arg-type]
                    continue  # ended at this node: counted already
                s, c = st, cr
                for k in range(depth, len(data)):  # type: ignore[arg-type]
                    row, exits, accepts = row_of(s)
                    if k >= 1 and exits and not (root and accepts):
                        c = True
                    s = row[data[k]]  # type: ignore[index]
                    if not s:
                        if c:
                            uncertain.append(pos)
                        break
                else:
                    accepted.append(pos)
        return np.array(accepted, dtype=np.int64), np.array(uncertain, dtype=np.int64)
