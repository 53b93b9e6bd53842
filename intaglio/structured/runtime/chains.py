"""Token walks through a bounded repeat (`item{min,max}`), shared by all of its positions.

A JSON string with maxLength 512 is 512 copies of one character automaton: every position
is its own DFA state, none on a cycle, so neither the mask cache nor the loop walk of
loops.py helps, and each first visit used to cost a full trie walk. But the automaton
builds such a repeat as identical copies (automaton.ChainSpan), so one walk over the
vocabulary through the *item* automaton, restarting it after each complete item and
counting items, answers every position at once:

- a token that stays inside after c complete items (and part of one more, if it ends
  mid-item) is allowed at position j exactly when j + c (+ 1) <= max;
- a token that leaves at a boundary after c items (a byte the continuation reads there, the
  closing quote of a string) is allowed only if min <= j + c <= max, and then as far as the
  rest of it gets from the continuation: that part is independent of j and is walked once
  per grammar, in the same vectorised way as the loop exits.

The vocabulary walk is cached on the token trie, keyed by the item's automaton, so every
bounded string of every grammar over that vocabulary shares it. The union is exactly the
direct trie walk from the position's DFA state (tests compare the two).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import numpy as np

from intaglio.structured.grammar.automaton import Automaton, ChainSpan
from intaglio.structured.runtime.loops import finish_walk
from intaglio.structured.runtime.trie import TokenTrie, expand_ranges
from intaglio.structured.runtime.vocab import TokenizerInfo

_LOCK = threading.Lock()
_ITEM_DFAS: dict[tuple, ItemDFA | None] = {}
_ITEM_DFA_ENTRIES = 256
_CACHE_ENTRIES = 32  # shared with the loop walks on the trie


@dataclass
class ItemDFA:
    """The item's automaton over copy-local NFA states: state 1 is the boundary (no item
    begun), 0 is dead; done[s, b] marks the byte that completes an item (back to state 1)."""

    table: np.ndarray  # [n + 1, 256] int32
    done: np.ndarray  # [n + 1, 256] bool
    index: dict[frozenset[int], int]  # copy-local core set -> state


@dataclass
class ChainWalk:
    """A vocabulary walk from one item state. Tokens that stay inside are sorted by `need`,
    the number of items their position must still have room for; exits are sorted by the
    number of complete items before the exit byte (at byte `pos`)."""

    inside_tok: np.ndarray
    inside_need: np.ndarray
    exit_tok: np.ndarray
    exit_pos: np.ndarray
    exit_count: np.ndarray


def _item_key(a: Automaton, span: ChainSpan) -> tuple:
    """The template copy's structure with copy-local targets (-1: the item is complete)."""
    base, end = span.base, span.base - 1

    def loc(t: int) -> int:
        return -1 if t == end else t - base

    return (
        span.start,
        tuple(tuple(loc(t) for t in a.eps[n]) for n in range(base, base + span.size)),
        tuple(tuple((m, loc(t)) for m, t in a.edges[n]) for n in range(base, base + span.size)),
    )


def _build_item_dfa(key: tuple) -> ItemDFA | None:
    """Determinise the item; None when positions would not be told apart by item count alone
    (an item that may be empty, or whose end may also continue inside it)."""
    start, eps, edges = key

    def close(states: set[int]) -> tuple[frozenset[int], bool]:
        seen, work, complete = set(states), list(states), False
        while work:
            n = work.pop()
            if n < 0:
                complete = True
                continue
            for t in eps[n]:
                if t not in seen:
                    seen.add(t)
                    work.append(t)
        return frozenset(n for n in seen if n >= 0 and edges[n]), complete

    first, complete = close({start})
    if complete or not first:
        return None
    index = {first: 1}
    order = [first]
    rows: list[np.ndarray] = []
    finish: list[np.ndarray] = []
    for core in order:
        by_byte: dict[int, set[int]] = {}
        for n in core:
            for m, t in edges[n]:
                b = m
                while b:
                    low = b & -b
                    by_byte.setdefault(low.bit_length() - 1, set()).add(t)
                    b ^= low
        row = np.zeros(256, dtype=np.int32)
        done = np.zeros(256, dtype=bool)
        for byte, targets in by_byte.items():
            inner, complete = close(targets)
            if complete and inner:
                return None  # an item could end here or go on: not a plain count
            if complete:
                row[byte], done[byte] = 1, True
            elif inner:
                if inner == first:
                    return None  # the boundary re-entered mid-item: exits would be wrong
                if inner not in index:
                    index[inner] = len(order) + 1
                    order.append(inner)
                row[byte] = index[inner]
        rows.append(row)
        finish.append(done)
    table = np.zeros((len(order) + 1, 256), dtype=np.int32)
    table[1:] = rows
    done = np.zeros((len(order) + 1, 256), dtype=bool)
    done[1:] = finish
    return ItemDFA(table, done, index)


def item_dfa(a: Automaton, span: ChainSpan) -> ItemDFA | None:
    key = _item_key(a, span)
    with _LOCK:
        if key in _ITEM_DFAS:
            return _ITEM_DFAS[key]
    got = _build_item_dfa(key)
    with _LOCK:
        _ITEM_DFAS[key] = got
        if len(_ITEM_DFAS) > _ITEM_DFA_ENTRIES:
            _ITEM_DFAS.pop(next(iter(_ITEM_DFAS)))
    return got


def walk_chain(trie: TokenTrie, item: ItemDFA, exits: np.ndarray, start: int) -> ChainWalk:
    """The trie walk from item state `start`, counting complete items (cached per vocabulary,
    item automaton, exit bytes and start state)."""
    key = b"chain" + bytes([start % 256, start // 256]) + exits.tobytes()
    key += item.table.tobytes() + item.done.tobytes()
    cache = trie.loop_walks
    with _LOCK:
        got = cache.get(key)
        if got is not None:
            cache.move_to_end(key)
            return got
    table, done = item.table, item.done
    nodes = np.zeros(1, dtype=np.int64)
    states = np.full(1, start, dtype=np.int64)
    counts = np.zeros(1, dtype=np.int64)
    in_pos: list[np.ndarray] = []
    in_need: list[np.ndarray] = []
    ex_lo: list[np.ndarray] = []
    ex_hi: list[np.ndarray] = []
    ex_pos: list[np.ndarray] = []
    ex_cnt: list[np.ndarray] = []
    for j in range(1, trie.depth + 1):
        lo, hi = trie.child_lo[j - 1][nodes], trie.child_hi[j - 1][nodes]
        child = expand_ranges(lo, hi)
        if not child.size:
            break
        src = np.repeat(states, hi - lo)
        cnt = np.repeat(counts, hi - lo)
        byte = trie.byte[j][child]
        out = (src == 1) & exits[byte]  # exit bytes never continue the item (checked)
        leave = child[out]
        ex_lo.append(trie.tok_lo[j][leave])
        ex_hi.append(trie.tok_hi[j][leave])
        ex_pos.append(np.full(leave.size, j - 1, dtype=np.int64))
        ex_cnt.append(cnt[out])
        nxt = table[src, byte]
        live = nxt > 0
        nodes, states = child[live], nxt[live].astype(np.int64)
        counts = cnt[live] + done[src[live], byte[live]]
        e_lo, e_hi = trie.end_lo[j][nodes], trie.end_hi[j][nodes]
        in_pos.append(expand_ranges(e_lo, e_hi))
        in_need.append(np.repeat(counts + (states != 1), e_hi - e_lo))
    need = np.concatenate(in_need)
    order = np.argsort(need, kind="stable")
    lo, hi = np.concatenate(ex_lo), np.concatenate(ex_hi)
    ex_count = np.repeat(np.concatenate(ex_cnt), hi - lo)
    ex_order = np.argsort(ex_count, kind="stable")
    got = ChainWalk(
        inside_tok=trie.order[np.concatenate(in_pos)[order]],
        inside_need=need[order],
        exit_tok=trie.order[expand_ranges(lo, hi)][ex_order],
        exit_pos=np.repeat(np.concatenate(ex_pos), hi - lo)[ex_order],
        exit_count=ex_count[ex_order],
    )
    with _LOCK:
        cache[key] = got
        if len(cache) > _CACHE_ENTRIES:
            cache.popitem(last=False)
    return got


@dataclass
class _Finished:
    """A walk's exits finished from the continuation: accepted / uncertain tokens, each
    sorted by item count."""

    acc_tok: np.ndarray
    acc_count: np.ndarray
    unc_tok: np.ndarray
    unc_count: np.ndarray
    unc_pos: np.ndarray  # the exit byte's position in each uncertain token


@dataclass
class ChainPosition:
    """A chain position's top walk: accepted tokens (in pieces, views of shared arrays), and
    the uncertain ones as a window [unc_lo, unc_hi) of `exits.unc_*`, shared by every
    position of the walk `key`; their bytes from `unc_pos` on are read from d_exit."""

    accepted: tuple[np.ndarray, ...]
    exits: _Finished
    unc_lo: int
    unc_hi: int
    key: tuple[int, int, bool]
    d_exit: int


class ChainIndex:
    """Per grammar: which DFA states are chain positions, and their masks' top walks."""

    def __init__(self, automaton: Automaton, vocab: TokenizerInfo) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self.spans = sorted(automaton.chains, key=lambda s: s.base)
        self._bases = [s.base for s in self.spans]
        self._where: dict[int, tuple[int, int, int] | None] = {}
        self._items: dict[int, ItemDFA | None] = {}
        self._finished: dict[tuple[int, int, bool], _Finished] = {}

    def locate(self, d: int) -> tuple[int, int, int] | None:
        """(span index, items read j, item state) when DFA state d is a chain position."""
        if d in self._where:
            return self._where[d]
        got = self._where[d] = self._locate(d) if self.spans else None
        return got

    def _locate(self, d: int) -> tuple[int, int, int] | None:
        a = self.automaton
        where: tuple[int, int] | None = None
        local: set[int] = set()
        rest: set[int] = set()
        for n in a.sets[d]:
            i = bisect.bisect_right(self._bases, n) - 1
            span = self.spans[i] if i >= 0 else None
            if span is None or n >= span.base + span.max * (span.size + 1):
                rest.add(n)
                continue
            k, off = divmod(n - span.base, span.size + 1)
            at = (i, span.max - 1 - k)
            if off == span.size or (where is not None and where != at):
                return None  # a boundary state in a core, or two positions at once
            where = at
            local.add(off)
        if where is None:
            return None
        i, j = where
        item = self.item(i)
        if item is None:
            return None
        state = item.index.get(frozenset(local), 0)
        if not state:
            return None
        span = self.spans[i]
        # The boundary may also leave, exactly from min on: its core is the item's start
        # plus the continuation's. Anything else is not this position alone.
        exit_core = a.sets[a.closure([span.exit])]
        if span.open and state == 1 and j == span.max - 1 and rest and rest == exit_core:
            return (i, span.max, 1)  # an open span's last boundary, looped back: j = max
        want = exit_core if state == 1 and j >= span.min else frozenset()
        return (i, j, state) if rest == want else None

    def item(self, i: int) -> ItemDFA | None:
        if i not in self._items:
            a, span = self.automaton, self.spans[i]
            got = item_dfa(a, span)
            if got is not None:
                # Exit bytes must not also continue the item, or a boundary's byte would be
                # read both ways at once (one DFA state holding two positions).
                d_exit = a.closure([span.exit])
                a.fill_rows(np.array([d_exit]))
                if (got.table[1][a.table[d_exit] > 0] > 0).any():
                    got = None
            self._items[i] = got
        return self._items[i]

    def position(self, d: int, root: bool) -> ChainPosition | None:
        """The mask's top walk from DFA state d, or None if d is not a chain position (or
        its continuation could return or call, which the count-only walk does not track)."""
        where = self.locate(d)
        if where is None:
            return None
        i, j, state = where
        a, span = self.automaton, self.spans[i]
        d_exit = a.closure([span.exit])
        ex = a.exitable & ~a.accepting if root else a.exitable
        if ex[d_exit]:
            return None
        item = self._items[i]
        assert item is not None
        walk = walk_chain(self.vocab.trie, item, a.table[d_exit] > 0, state)
        fin = self._finished.get((i, state, root))
        if fin is None:
            fin = self._finished[(i, state, root)] = self._finish(walk, d_exit, root)
        # An open span has room for any number of items.
        room = np.iinfo(np.int64).max - 1 if span.open else span.max - j
        inside = walk.inside_tok[: np.searchsorted(walk.inside_need, room, side="right")]
        lo = max(span.min - j, 0)
        a_lo, a_hi = np.searchsorted(fin.acc_count, [lo, room + 1]).tolist()
        u_lo, u_hi = np.searchsorted(fin.unc_count, [lo, room + 1]).tolist()
        return ChainPosition(
            (inside, fin.acc_tok[a_lo:a_hi]), fin, u_lo, u_hi, (i, state, root), d_exit
        )

    def _finish(self, walk: ChainWalk, d_exit: int, root: bool) -> _Finished:
        """Finish every exit from the continuation (its exit byte read from d_exit, which
        reads it as every boundary that may leave does)."""
        n = walk.exit_tok.size
        acc, unc = finish_walk(
            self.automaton,
            self.vocab,
            walk.exit_tok,
            walk.exit_pos,
            np.full(n, d_exit, dtype=np.int64),
            np.zeros(n, dtype=bool),
            root,
        )
        status = np.zeros(self.vocab.vocab_size, dtype=np.int8)
        status[acc] = 1
        status[unc] = 2
        verdict = status[walk.exit_tok]
        ok, maybe = verdict == 1, verdict == 2
        return _Finished(
            walk.exit_tok[ok],
            walk.exit_count[ok],
            walk.exit_tok[maybe],
            walk.exit_count[maybe],
            walk.exit_pos[maybe],
        )
