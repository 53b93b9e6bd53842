"""Grammar IR -> a recursive transition network: one byte NFA, determinised lazily.

Rules on a recursion cycle (and large rules used many times) stay *callable*: reaching them
pushes a frame, as a pushdown automaton does. Every other rule is inlined into its caller's
automaton. Inlining is continuation-passing (`build(node, next_state)`), and a rule inlined
twice before the same continuation is built once, so the optional-property chains of JSON
objects stay linear in size rather than exponential.

The DFA over NFA-state sets is built on demand: `table[d, b]` is the DFA state after byte b
(0 is the dead state), filled a row at a time the first time a walk reaches state d. Mask
computation indexes this table with numpy over the whole vocabulary at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from intaglio.structured.grammar.ir import (
    Alt,
    Bytes,
    Grammar,
    GrammarError,
    Intersect,
    Node,
    Ref,
    Repeat,
    Seq,
    refs_in,
)

MAX_NFA_STATES = 2_000_000
_INLINE_LIMIT = 4_000  # NFA-size estimate above which a rule used twice is called, not copied
# A bounded repeat of a regular item with at least this many copies is built as a chain
# (identical copies laid out at a fixed stride), whose masks runtime/chains.py shares across
# positions.
CHAIN_MIN_COPIES = 8


_NONE: tuple = ()
_ALL_BYTES = (1 << 256) - 1


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds

    def check(self) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise TimeoutError(f"grammar compilation exceeded {self.seconds} s")


@dataclass(frozen=True)
class ChainSpan:
    """`item{min,max}` built as max identical copies at a fixed stride of size + 1 states.

    Copy k of the layout (k = 0 is copy j = max - 1, the template every other copy is cloned
    from) holds the item's states at base + k * (size + 1), followed by its boundary state:
    the point where j items have been read (it may also leave to `exit` when j >= min). The
    item's last byte leads to the boundary just below the copy, base - 1 for the template,
    which moves on to `exit` after the max-th item. An open span (`item{min,}`, built with
    max = min copies) loops that last boundary back into the template, so from every
    position any number of further items may follow.
    """

    base: int
    size: int
    start: int  # the item's start state, local to a copy
    min: int
    max: int
    exit: int
    open: bool = False

    def copy_base(self, j: int) -> int:
        return self.base + (self.max - 1 - j) * (self.size + 1)


@dataclass
class _Estimate:
    size: int
    uses: int


def _callable_rules(grammar: Grammar) -> set[str]:
    """Rules on a reference cycle (Tarjan SCC), plus big rules referenced more than once."""
    graph = {name: sorted(refs_in(node)) for name, node in grammar.rules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: set[str] = {grammar.start}
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            if i < len(graph[v]):
                work.append((v, i + 1))
                w = graph[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            for w in graph[v]:
                if w in on_stack:
                    low[v] = min(low[v], low[w])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1 or v in graph[v]:
                    out.update(scc)
    # Size estimate of each rule once inlined; repeated big rules become calls.
    sizes: dict[str, int] = {}

    def size(node: Node) -> int:
        if isinstance(node, Bytes):
            return 1
        if isinstance(node, (Seq, Alt)):
            return 1 + sum(size(i) for i in node.items)
        if isinstance(node, Repeat):
            copies = max(node.min, node.max if node.max is not None else 1, 1)
            return 1 + copies * size(node.item)
        if isinstance(node, Intersect):
            return size(node.left) * size(node.right)
        if node.name in out:
            return 1
        if node.name not in sizes:
            sizes[node.name] = size(grammar.rules[node.name])
        return sizes[node.name]

    uses: dict[str, int] = {}
    for node in grammar.rules.values():
        _count_refs(node, uses)
    for name in grammar.rules:
        if name not in out and uses.get(name, 0) > 1 and size(grammar.rules[name]) > _INLINE_LIMIT:
            out.add(name)
    return out


def _count_refs(node: Node, uses: dict[str, int]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Ref):
            uses[n.name] = uses.get(n.name, 0) + 1
        elif isinstance(n, (Seq, Alt)):
            stack.extend(n.items)
        elif isinstance(n, Repeat):
            stack.append(n.item)


class Automaton:
    """The compiled grammar: NFA with call edges, plus its lazily built DFA table."""

    def __init__(self, grammar: Grammar, deadline: Deadline | None = None) -> None:
        grammar.check()
        self.deadline = deadline or Deadline(None)
        self.start_rule = grammar.start
        self._grammar = grammar  # only while building: the IR is not kept alive afterwards
        self.callable = sorted(_callable_rules(grammar))
        self.rule_id = {name: i for i, name in enumerate(self.callable)}
        # Tuples, not lists: tuples of ints drop out of the garbage collector's tracking, so
        # a large automaton does not lengthen every later full collection (mask-time pauses).
        self.eps: list[tuple[int, ...]] = []
        self.edges: list[tuple[tuple[int, int], ...]] = []  # (byte mask, target)
        self.calls: list[tuple[tuple[int, int], ...]] = []  # (callee rule id, return target)
        self.accept_nfa: set[int] = set()
        self._inline_memo: dict[tuple[str, int], int] = {}
        self._byte_states: dict[tuple[int, int], int] = {}
        self._inlining: set[str] = set()
        self._no_chain = 0  # > 0 while building inside a chain copy or a product
        self._regular: dict[int, bool] = {}
        self.chains: list[ChainSpan] = []
        self.rule_start: list[int] = []
        for name in self.callable:
            accept = self._new()
            self.accept_nfa.add(accept)
            self.rule_start.append(self._build(grammar.rules[name], accept))
        self._inline_memo.clear()
        self._byte_states.clear()
        self._regular.clear()
        del self._grammar
        self._trim()
        self._check_left_recursion()
        self._mask_bytes: dict[int, np.ndarray] = {}
        # Lazy DFA; state 0 is dead (an empty set) and loops to itself.
        self.sets: list[frozenset[int]] = []
        self.index: dict[frozenset[int], int] = {}
        self._closures: dict[frozenset[int], int] = {}
        self.table = np.zeros((64, 256), dtype=np.int32)
        self.row_done = np.zeros(64, dtype=bool)
        self.accepting = np.zeros(64, dtype=bool)
        self.exitable = np.zeros(64, dtype=bool)  # accepting or has call edges
        self.has_bytes = np.zeros(64, dtype=bool)
        self._calls_of: list[tuple[tuple[int, int], ...] | None] = []
        self._intern(frozenset())
        self.row_done[0] = True
        self.start = self.closure([self.rule_start[self.rule_id[grammar.start]]])

    # ------------------------------------------------------------ NFA construction
    def _new(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise GrammarError(f"grammar too large (more than {MAX_NFA_STATES} automaton states)")
        # A shared empty tuple until a state gets edges: no allocation per state.
        self.eps.append(_NONE)
        self.edges.append(_NONE)
        self.calls.append(_NONE)
        return len(self.eps) - 1

    def _build(self, node: Node, nxt: int) -> int:
        """NFA fragment for node, continuing into state nxt; returns its start state."""
        if isinstance(node, Bytes):
            key = (node.mask, nxt)  # shared, so UTF-8 continuation tails are built once
            s = self._byte_states.get(key, -1)
            if s < 0:
                s = self._byte_states[key] = self._new()
                if node.mask:
                    self.edges[s] = (key,)
            return s
        if isinstance(node, Seq):
            for item in reversed(node.items):
                nxt = self._build(item, nxt)
            return nxt
        if isinstance(node, Alt):
            s = self._new()
            self.eps[s] = tuple(self._build(item, nxt) for item in node.items)
            return s
        if isinstance(node, Repeat):
            self.deadline.check()
            if node.max is not None and node.max >= CHAIN_MIN_COPIES and self._chainable(node):
                return self._build_chain(node, nxt)
            if node.max is None and node.min >= CHAIN_MIN_COPIES and self._chainable(node):
                # m counted copies whose last loops: a chain, not m distinct positions each
                # needing its own vocabulary walk.
                return self._build_chain(Repeat(node.item, node.min, node.min), nxt, True)
            cur = nxt
            if node.max is None:
                loop = self._new()
                self.eps[loop] = (nxt, self._build(node.item, loop))
                cur = loop
            else:
                for _ in range(node.max - node.min):
                    s = self._new()
                    self.eps[s] = (nxt, self._build(node.item, cur))
                    cur = s
            for _ in range(node.min):
                cur = self._build(node.item, cur)
            return cur
        if isinstance(node, Intersect):
            return self._product(node, nxt)
        if node.name in self.rule_id:
            s = self._new()
            self.calls[s] = ((self.rule_id[node.name], nxt),)
            return s
        memo_key = (node.name, nxt)
        if memo_key not in self._inline_memo:
            self._inline_memo[memo_key] = self._build(self._grammar.rules[node.name], nxt)
        return self._inline_memo[memo_key]

    def _chainable(self, node: Repeat) -> bool:
        if self._no_chain:
            return False
        got = self._regular.get(id(node.item))
        if got is None:
            got = self._regular[id(node.item)] = not refs_in(node.item)
        return got

    def _build_chain(self, node: Repeat, nxt: int, open_end: bool = False) -> int:
        """Build one copy of the item, then clone it max - 1 times by offset, so every
        position is provably the same automaton (see ChainSpan for the layout). open_end:
        more items may follow the max-th (`item{max,}`)."""
        copies = node.max
        assert copies is not None, "a chain is a bounded repeat (callers bound an open one)"
        end = self._new()
        self.eps[end] = (nxt,)
        base = len(self.eps)
        saved, self._byte_states = self._byte_states, {}  # the copy shares no state outside
        self._no_chain += 1
        try:
            start = self._build(node.item, end)
        finally:
            self._no_chain -= 1
            self._byte_states = saved
        size = len(self.eps) - base
        if start == end:  # the item matches only the empty string, so the repeat does too
            return nxt
        stride = size + 1
        if base + copies * stride > MAX_NFA_STATES:
            raise GrammarError(f"grammar too large (more than {MAX_NFA_STATES} automaton states)")
        # The copy's states only lead to each other and to `end`, the boundary just below
        # it; copy k is the template shifted by k strides, its `end` included.
        eps = self.eps[base:] + [_NONE]
        masks = [tuple(m for m, _ in e) for e in self.edges[base:]] + [_NONE]
        targets = [tuple(t for _, t in e) for e in self.edges[base:]] + [_NONE]
        self.eps.append(_NONE)
        self.edges.append(_NONE)
        self.calls.append(_NONE)
        nothing = [_NONE] * stride
        for k in range(1, copies):
            self.deadline.check()
            add = (k * stride).__add__
            self.eps.extend([tuple(map(add, e)) if e else _NONE for e in eps])
            self.edges.extend(
                [tuple(zip(m, map(add, t))) if m else _NONE for m, t in zip(masks, targets)]
            )
            self.calls.extend(nothing)
        span = ChainSpan(base, size, start - base, node.min, copies, nxt, open_end)
        if open_end:
            self.eps[end] = (start, nxt)
        for j in range(copies):
            b = span.copy_base(j) + size
            first = b - size + span.start
            self.eps[b] = (first, nxt) if j >= node.min else (first,)
        self.chains.append(span)
        return span.copy_base(0) + size

    def _trim(self) -> None:
        """Drop NFA edges into states that can never reach their rule's end, so that every
        live DFA state can still be completed (masks must never allow a dead end).

        One backward search from the rules' ends: a call edge counts once its return state
        is live and its callee productive (its start live); calls seen before their callee
        turned productive wait for it."""
        n = len(self.eps)
        preds: list[list[int]] = [[] for _ in range(n)]
        call_preds: dict[int, list[tuple[int, int]]] = {}  # return state -> (source, callee)
        for s, (eps, edges, calls) in enumerate(zip(self.eps, self.edges, self.calls)):
            for t in eps:
                preds[t].append(s)
            for _, t in edges:
                preds[t].append(s)
            for rule, t in calls:
                call_preds.setdefault(t, []).append((s, rule))
        starts: dict[int, list[int]] = {}
        for r, start in enumerate(self.rule_start):
            starts.setdefault(start, []).append(r)
        live = bytearray(n)
        productive: set[int] = set()
        waiting: dict[int, list[int]] = {}
        work = list(self.accept_nfa)
        for t in work:
            live[t] = 1
        while work:
            t = work.pop()
            found = list(preds[t])
            for r in starts.get(t, ()):
                productive.add(r)
                found.extend(waiting.pop(r, ()))
            for src, rule in call_preds.get(t, ()):
                if rule in productive:
                    found.append(src)
                else:
                    waiting.setdefault(rule, []).append(src)
            for src in found:
                if not live[src]:
                    live[src] = 1
                    work.append(src)
        # Only states with a move into a dead state, or a call to an unproductive rule,
        # change.
        touched = {src for t in range(n) if not live[t] for src in preds[t]}
        touched.update(src for t, ps in call_preds.items() if not live[t] for src, _ in ps)
        touched.update(src for ps in waiting.values() for src in ps)
        for s in touched:
            self.eps[s] = tuple(t for t in self.eps[s] if live[t])
            self.edges[s] = tuple((m, t) for m, t in self.edges[s] if live[t])
            self.calls[s] = tuple((r, t) for r, t in self.calls[s] if live[t] and r in productive)
        if not live[self.rule_start[self.rule_id[self.start_rule]]]:
            raise GrammarError("the grammar matches no string at all")

    def _product(self, node: Intersect, nxt: int) -> int:
        """Product automaton of two regular fragments, built eagerly over closed state sets."""
        ends = (self._new(), self._new())
        self._no_chain += 1  # the operands' states never reach a DFA state: no chain spans
        try:
            starts = (self._build(node.left, ends[0]), self._build(node.right, ends[1]))
        finally:
            self._no_chain -= 1

        closures: dict[frozenset[int], frozenset[int]] = {}

        def close(states: frozenset[int]) -> frozenset[int]:
            got = closures.get(states)
            if got is None:
                seen, work = set(states), list(states)
                while work:
                    for m in self.eps[work.pop()]:
                        if m not in seen:
                            seen.add(m)
                            work.append(m)
                got = closures[states] = frozenset(seen)
            return got

        moved: dict[frozenset[int], list[tuple[int, frozenset[int]]]] = {}

        def moves(states: frozenset[int]) -> list[tuple[int, frozenset[int]]]:
            """(byte class, closed targets): the bytes of a class all lead to the same states.
            Classes refine the edges' masks, so a set costs its edges, not 256 bytes; each
            operand's sets recur across many pairs, so they are computed once."""
            got = moved.get(states)
            if got is None:
                got = moved[states] = _classes(states)
            return got

        def _classes(states: frozenset[int]) -> list[tuple[int, frozenset[int]]]:
            classes: list[tuple[int, set[int]]] = []
            for n in states:
                if self.calls[n]:
                    raise GrammarError("an intersection may not contain rule references")
                for mask, t in self.edges[n]:
                    refined = []
                    for cls, targets in classes:
                        inside = cls & mask
                        if inside:
                            refined.append((inside, targets | {t}))
                            mask &= ~inside
                        if cls & ~inside:
                            refined.append((cls & ~inside, targets))
                    if mask:
                        refined.append((mask, {t}))
                    classes = refined
            return [(cls, close(frozenset(targets))) for cls, targets in classes]

        first = (close(frozenset({starts[0]})), close(frozenset({starts[1]})))
        index = {first: self._new()}
        work = [first]
        while work:
            self.deadline.check()
            pair = work.pop()
            s = index[pair]
            if ends[0] in pair[0] and ends[1] in pair[1]:
                self.eps[s] = (*self.eps[s], nxt)
            mb = moves(pair[1])
            grouped: dict[tuple[frozenset[int], frozenset[int]], int] = {}
            for cls_a, ta in moves(pair[0]):
                for cls_b, tb in mb:
                    both = cls_a & cls_b
                    if both:
                        grouped[ta, tb] = grouped.get((ta, tb), 0) | both
            for target, mask in grouped.items():
                if target not in index:
                    index[target] = self._new()
                    work.append(target)
                self.edges[s] = (*self.edges[s], (mask, index[target]))
        return index[first]

    def _eps_reach(self, starts: list[int], nullable: set[int]) -> tuple[set[int], bool]:
        """Callees reachable without consuming a byte from starts, and whether accept is."""
        seen = set(starts)
        work = list(starts)
        callees: set[int] = set()
        accept = False
        while work:
            n = work.pop()
            accept |= n in self.accept_nfa
            nexts = list(self.eps[n])
            for rule, target in self.calls[n]:
                callees.add(rule)
                if rule in nullable:
                    nexts.append(target)
            for m in nexts:
                if m not in seen:
                    seen.add(m)
                    work.append(m)
        return callees, accept

    def _check_left_recursion(self) -> None:
        nullable: set[int] = set()
        changed = True
        while changed:
            changed = False
            for r, start in enumerate(self.rule_start):
                if r not in nullable and self._eps_reach([start], nullable)[1]:
                    nullable.add(r)
                    changed = True
        first = {r: self._eps_reach([s], nullable)[0] for r, s in enumerate(self.rule_start)}
        for r in first:  # a rule reaching itself before any byte never makes progress
            seen, work = set(), list(first[r])
            while work:
                x = work.pop()
                if x == r:
                    raise GrammarError(
                        f"rule {self.callable[r]!r} is left-recursive; rewrite it with "
                        'repetition, e.g. expr ::= term (("+" | "-") term)*'
                    )
                if x not in seen:
                    seen.add(x)
                    work.extend(first[x])

    # ------------------------------------------------------------ lazy DFA
    def closure(self, states: list[int] | set[int]) -> int:
        key = frozenset(states)
        got = self._closures.get(key)
        if got is not None:
            return got
        seen = set(states)
        work = list(states)
        while work:
            for m in self.eps[work.pop()]:
                if m not in seen:
                    seen.add(m)
                    work.append(m)
        # Keep only states that do something, so equivalent sets share one DFA state.
        core = frozenset(n for n in seen if self.edges[n] or self.calls[n] or n in self.accept_nfa)
        d = self._intern(core)
        self._closures[key] = d
        return d

    def _intern(self, core: frozenset[int]) -> int:
        d = self.index.get(core)
        if d is not None:
            return d
        d = len(self.sets)
        self.sets.append(core)
        self.index[core] = d
        self._calls_of.append(None)
        if d >= len(self.row_done):
            grow = len(self.row_done)
            self.table = np.concatenate([self.table, np.zeros((grow, 256), np.int32)])
            for name in ("row_done", "accepting", "exitable", "has_bytes"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, bool)]))
        self.accepting[d] = bool(core & self.accept_nfa)
        self.exitable[d] = self.accepting[d] or any(self.calls[n] for n in core)
        # After trimming every edge leads somewhere live, so any edge means a live byte.
        self.has_bytes[d] = any(self.edges[n] for n in core)
        return d

    def calls_of(self, d: int) -> tuple[tuple[int, int], ...]:
        """(callee start state, return state) pairs of DFA state d."""
        got = self._calls_of[d]
        if got is None:
            pairs = {
                (self.closure([self.rule_start[rule]]), self.closure([target]))
                for n in self.sets[d]
                for rule, target in self.calls[n]
            }
            got = self._calls_of[d] = tuple(sorted(pairs))
        return got

    def _bytes_of(self, mask: int) -> np.ndarray:
        got = self._mask_bytes.get(mask)
        if got is None:
            bits = np.frombuffer(mask.to_bytes(32, "little"), dtype=np.uint8)
            got = self._mask_bytes[mask] = np.flatnonzero(np.unpackbits(bits, bitorder="little"))
        return got

    def fill_rows(self, states: np.ndarray) -> None:
        """Make sure table rows exist for every DFA state in `states`."""
        for d in np.unique(states[~self.row_done[states]]).tolist():
            self._fill_row(d)

    def _fill_row(self, d: int) -> None:
        """Determinise one row. Bytes are grouped by the set of NFA targets they reach by
        refining a partition of the 256 bytes with each target's byte mask (256-bit ints),
        so a row costs a few big-int operations per target rather than a step per byte."""
        self.deadline.check()
        by_target: dict[int, int] = {}
        for n in self.sets[d]:
            for mask, t in self.edges[n]:
                by_target[t] = by_target.get(t, 0) | mask
        blocks: list[tuple[int, list[int]]] = [(_ALL_BYTES, [])]
        for t, mask in by_target.items():
            split: list[tuple[int, list[int]]] = []
            for block, ts in blocks:
                inside = block & mask
                if inside:
                    split.append((inside, [*ts, t]))
                    if inside != block:
                        split.append((block & ~mask, ts))
                else:
                    split.append((block, ts))
            blocks = split
        row = np.zeros(256, dtype=np.int32)
        for block, ts in blocks:
            if ts:
                row[self._bytes_of(block)] = self.closure(ts)
        self.table[d] = row
        self.row_done[d] = True

    def step(self, d: int, byte: int) -> int:
        if not self.row_done[d]:
            self._fill_row(d)
        return int(self.table[d, byte])
