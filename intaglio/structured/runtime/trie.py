"""The vocabulary as a byte trie in level order, so a mask walk touches shared prefixes once.

Tokens are sorted by their bytes; the tokens under any trie node are then one contiguous run
of that order, which lets a walk drop a dead subtree (or hand all of it to the slow path) as a
single range. All arrays are numpy, built once per vocabulary without a Python loop per token.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenate arange(lo[i], hi[i]) for all i, vectorised."""
    counts = hi - lo
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    return starts + np.arange(total)


class TokenTrie:
    def __init__(self, token_bytes: list[bytes | None]) -> None:
        ids = [i for i, b in enumerate(token_bytes) if b]
        ids.sort(key=lambda i: token_bytes[i])  # type: ignore[arg-type, return-value]
        self.order = np.array(ids, dtype=np.int64)  # sorted position -> token id
        self.rank = np.zeros(len(token_bytes), dtype=np.int64)  # token id -> sorted position
        self.rank[self.order] = np.arange(len(ids))
        lengths = np.array([len(token_bytes[i]) for i in ids], dtype=np.int64)  # type: ignore[arg-type]
        width = int(lengths.max(initial=0))
        flat = b"".join(token_bytes[i].ljust(width, b"\0") for i in ids)  # type: ignore[union-attr]
        matrix = np.frombuffer(flat, dtype=np.uint8).reshape(len(ids), width)
        # Level j holds the nodes for j-byte prefixes; level 0 is the root.
        self.byte: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.tok_lo: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.tok_hi: list[np.ndarray] = [np.array([len(ids)], np.int64)]
        self.end_lo: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.end_hi: list[np.ndarray] = [np.zeros(1, np.int64)]
        self.parent: list[np.ndarray] = [np.zeros(0, np.int64)]  # level j: index in j - 1
        self.child_lo: list[np.ndarray] = []
        self.child_hi: list[np.ndarray] = []
        # Nodes numbered across levels (level j starts at level_start[j]); end_node[pos] is
        # the node where the token at sorted position pos ends.
        self.level_start = [0, 1]
        self.end_node = np.zeros(len(ids), dtype=np.int64)
        node_of = np.zeros(len(ids), dtype=np.int64)  # each token's node at the previous level
        positions = np.arange(len(ids))
        for j in range(1, width + 1):
            sel = lengths >= j
            pos = positions[sel]
            parent = node_of[sel]
            byte = matrix[pos, j - 1].astype(np.int64)
            key = parent * 256 + byte  # non-decreasing, because tokens are sorted
            new = np.ones(len(key), dtype=bool)
            new[1:] = key[1:] != key[:-1]
            node = np.cumsum(new) - 1
            first = np.flatnonzero(new)
            last = np.append(first[1:], len(key)) - 1
            node_parent = parent[first]
            self.byte.append(byte[first])
            self.parent.append(node_parent)
            self.tok_lo.append(pos[first])
            self.tok_hi.append(pos[last] + 1)
            # Tokens ending at a node (several when two ids share the same bytes) form a run.
            ends_here = lengths[pos] == j
            end_lo = np.full(len(first), len(ids), dtype=np.int64)
            end_hi = np.zeros(len(first), dtype=np.int64)
            self.end_node[pos[ends_here]] = self.level_start[j] + node[ends_here]
            self.level_start.append(self.level_start[j] + len(first))
            np.minimum.at(end_lo, node[ends_here], pos[ends_here])
            np.maximum.at(end_hi, node[ends_here], pos[ends_here] + 1)
            self.end_lo.append(np.minimum(end_lo, end_hi))
            self.end_hi.append(end_hi)
            n_prev = len(self.byte[j - 1])
            self.child_lo.append(np.searchsorted(node_parent, np.arange(n_prev), side="left"))
            self.child_hi.append(np.searchsorted(node_parent, np.arange(n_prev), side="right"))
            node_of = node_of.copy()
            node_of[sel] = node
        self.depth = width
        # Byte j of every token in sorted order (0 past its end), one row per j: the tokens
        # of a trie subtree are a contiguous run, so a walk reads a column sequentially.
        self.columns = np.ascontiguousarray(matrix.T)
        self.lengths = lengths
        # Walks through DFA loops, shared by every grammar over this vocabulary (loops.py).
        self.loop_walks: OrderedDict[bytes, Any] = OrderedDict()
        self.subtree_walks: OrderedDict[bytes, Any] = OrderedDict()
