"""Pushdown matching over bytes and token masks over a real vocabulary.

A parser state is a set of stacks (several when the grammar is ambiguous at this point); a
stack is a tuple of DFA states, bottom first: the top is where we are in the current rule, the
frames below are where each caller resumes. Before reading a byte a stack is *expanded*: an
accepting top may return to its caller, and call edges push the callee's start.

Masks, after xgrammar's split of context-independent and context-dependent tokens: for the top
DFA state alone, one numpy walk down the token trie (trie_walk.py) classifies every token as
accepted (its bytes stay inside the top rule), rejected (they leave it dead without ever
passing a point where the rule could return or call) or uncertain (they cross such a point).
Only the uncertain ones are walked through the full stack, in groups sharing a prefix.
Finished masks are cached per parser state as packed bits, so a repeated state costs one dict
lookup and a copy. A top state inside a big loop (a string body) takes its walk from the
vocabulary-wide cache in loops.py instead, and a position in a bounded repeat (a string with
maxLength) reads it off the walk its chain shares with all its positions (chains.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.runtime.chains import ChainIndex, ChainPosition
from intaglio.structured.runtime.loops import finish_walk, loop_top_walk
from intaglio.structured.runtime.trie_walk import TrieWalker
from intaglio.structured.runtime.vocab import TokenizerInfo

Stack = tuple[int, ...]
State = frozenset[Stack]

_MASK_CACHE_BYTES = 256 * 2**20
# Tokens a matcher can take back: more than any speculative step verifies.
_MAX_ROLLBACK = 64
_GROUP_MIN = 32
# A group of uncertain tokens this big with one stack left to read them finishes vectorised.
_VECTOR_GROUP = 256


class GrammarRuntime:
    """Everything matchers of one compiled grammar share: automaton, vocabulary, caches."""

    def __init__(self, automaton: Automaton, vocab: TokenizerInfo) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self.nbytes = -(-vocab.vocab_size // 8)
        self.initial: State = frozenset({(automaton.start,)})
        self._expand: dict[Stack, tuple[tuple[Stack, ...], bool]] = {}
        self._info: dict[State, tuple[tuple[Stack, ...], bool]] = {}
        self._advance: dict[tuple[State, int], State] = {}
        self._top: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}
        self._masks: OrderedDict[State, np.ndarray] = OrderedDict()
        # Per stack below a chain position and chain walk: which uncertain exits the full
        # parser state reads, aligned with the walk's ChainPosition.exits.unc_tok.
        self._chain_verdicts: dict[tuple[Stack, tuple[int, int, bool]], np.ndarray] = {}
        self._max_masks = max(64, _MASK_CACHE_BYTES // max(self.nbytes, 1))
        self.trie = vocab.trie
        self.chains = ChainIndex(automaton, vocab)
        self.walker = TrieWalker(automaton, vocab)
        # Uncertain tokens in a group this small are walked one by one (tests lower it).
        self.group_min = _GROUP_MIN
        self.vector_group = _VECTOR_GROUP

    # ------------------------------------------------------------ byte-level matching
    def expand(self, stack: Stack) -> tuple[tuple[Stack, ...], bool]:
        """Stacks reachable without reading a byte that can read one; and whether we may end."""
        got = self._expand.get(stack)
        if got is not None:
            return got
        a = self.automaton
        seen = {stack}
        work = [stack]
        consumers: list[Stack] = []
        can_end = False
        while work:
            st = work.pop()
            top = st[-1]
            if a.has_bytes[top]:
                consumers.append(st)
            nexts: list[Stack] = []
            if a.accepting[top]:
                if len(st) == 1:
                    can_end = True
                else:
                    nexts.append(st[:-1])
            for callee, ret in a.calls_of(top):
                nexts.append(st[:-1] + (ret, callee))
            for nx in nexts:
                if nx not in seen:
                    seen.add(nx)
                    work.append(nx)
        got = self._expand[stack] = (tuple(sorted(consumers)), can_end)
        return got

    def info(self, state: State) -> tuple[tuple[Stack, ...], bool]:
        got = self._info.get(state)
        if got is None:
            consumers: set[Stack] = set()
            can_end = False
            for st in state:
                c, e = self.expand(st)
                consumers.update(c)
                can_end |= e
            got = self._info[state] = (tuple(sorted(consumers)), can_end)
        return got

    def advance(self, state: State, byte: int) -> State:
        key = (state, byte)
        got = self._advance.get(key)
        if got is None:
            a = self.automaton
            out = set()
            for st in self.info(state)[0]:
                t = a.step(st[-1], byte)
                if t:
                    out.add(st[:-1] + (t,))
            got = self._advance[key] = frozenset(out)
        return got

    def advance_bytes(self, state: State, data: bytes) -> State:
        for b in data:
            state = self.advance(state, b)
            if not state:
                break
        return state

    # ------------------------------------------------------------ token masks
    def _top_walk(self, d: int, root: bool) -> tuple[np.ndarray, np.ndarray]:
        """(accepted ids, uncertain trie positions, sorted) for tokens read from DFA state d
        alone.

        Level by level down the token trie, visiting only the children of live nodes. A
        child that dies hands its whole subtree to the slow path if the walk passed a point
        where the rule could return or call (`crossed`), and rejects it otherwise.
        """
        key = (d, root)
        got = self._top.get(key)
        if got is None:
            # A big loop (a string body) is walked once per vocabulary and shared.
            got = loop_top_walk(self.automaton, self.vocab, d, root)
            if got is None:
                got = self.walker.walk(d, root)
            else:
                got = (got[0], np.sort(self.trie.rank[got[1]]))
            self._top[key] = got
        return got

    def _walk_uncertain(self, start: State, pos: np.ndarray, allowed: np.ndarray) -> None:
        """Set allowed[t] for the tokens t at trie positions `pos` (sorted) that the full
        parser state can read.

        Tokens sharing a prefix share its walk: groups of tokens (runs of the sorted order)
        are split by their next byte, one memoised `advance` per distinct prefix, so the many
        tokens that die a byte or two in (" the", " of", ... where a value may start) cost a
        few steps rather than one Python walk each. Small groups finish token by token; a big
        group whose prefix leaves one stack able to read on (` "` into a string) finishes as
        a top walk, vectorised, from that stack's top.
        """
        if not pos.size:
            return
        trie = self.trie
        toks = trie.order[pos]
        lens = trie.lengths[pos]
        advance = self.advance
        work = [(0, len(toks), start, 0)]
        while work:
            lo, hi, state, j = work.pop()
            if hi - lo <= self.group_min:
                self._walk_tokens(state, toks[lo:hi], j, allowed)
                continue
            # Tokens that end at this prefix sort first in their group.
            ended = int(np.count_nonzero(lens[lo:hi] == j))
            allowed[toks[lo : lo + ended]] = True
            lo += ended
            if lo == hi:
                continue
            if j and hi - lo >= self.vector_group:
                consumers = self.info(state)[0]
                if len(consumers) == 1:
                    self._finish_group(state, consumers[0], toks[lo:hi], j, allowed)
                    continue
            col = trie.columns[j][pos[lo:hi]]
            cuts = (np.flatnonzero(col[1:] != col[:-1]) + 1).tolist()
            for a, b in zip([0, *cuts], [*cuts, hi - lo], strict=True):
                nxt = advance(state, int(col[a]))
                if nxt:
                    work.append((lo + a, lo + b, nxt, j + 1))

    def _reads(self, state: State, data: bytes) -> bool:
        """Whether parser state `state` reads every byte of data (memoised byte steps)."""
        memo, advance = self._advance, self.advance
        cur = state
        for byte in data:
            nxt = memo.get((cur, byte))
            cur = advance(cur, byte) if nxt is None else nxt
            if not cur:
                return False
        return True

    def _walk_tokens(self, state: State, toks: np.ndarray, j: int, allowed: np.ndarray) -> None:
        """Token by token from byte j in parser state `state`."""
        tokens = self.vocab.token_bytes
        for t in toks.tolist():
            if self._reads(state, tokens[t][j:]):  # type: ignore[index]
                allowed[t] = True

    def _finish_group(
        self, state: State, stack: Stack, toks: np.ndarray, j: int, allowed: np.ndarray
    ) -> None:
        """Tokens read from byte j where `stack` is the only one that can read: its top rule
        decides alone (as in a top walk) unless a token passes a point where that rule could
        return or call, and only those go on through the full stack."""
        n = toks.size
        acc, unc = finish_walk(
            self.automaton,
            self.vocab,
            toks,
            np.full(n, j, dtype=np.int64),
            np.full(n, stack[-1], dtype=np.int64),
            np.zeros(n, dtype=bool),
            len(stack) == 1,
            first=j,
        )
        allowed[acc] = True
        self._walk_tokens(state, unc, j, allowed)

    def _chain_verdict(self, below: Stack, chain: ChainPosition) -> np.ndarray:
        """Whether the full parser state reads each uncertain exit of a chain walk. From
        the exit byte on, a token's walk is the same at every position (the exit byte
        read from d_exit), so this is done once per stack below and walk."""
        key = (below, chain.key)
        got = self._chain_verdicts.get(key)
        if got is not None:
            return got
        start: State = frozenset({below + (chain.d_exit,)})
        tokens, exits = self.vocab.token_bytes, chain.exits
        got = np.zeros(exits.unc_tok.size, dtype=bool)
        for k, (t, p) in enumerate(zip(exits.unc_tok.tolist(), exits.unc_pos.tolist())):
            got[k] = self._reads(start, tokens[t][p:])  # type: ignore[index]
        self._chain_verdicts[key] = got
        return got

    def mask(self, state: State) -> np.ndarray:
        """Packed bitmask (little bit order) of the tokens allowed in state, [ceil(V/8)] uint8."""
        got = self._masks.get(state)
        if got is not None:
            return got
        consumers, can_end = self.info(state)
        allowed = np.zeros(self.vocab.vocab_size, dtype=bool)
        for st in consumers:
            # A position in a bounded repeat (a string with maxLength) reads its tokens off
            # walks shared by all positions.
            chain = self.chains.position(st[-1], len(st) == 1)
            if chain is not None:
                for piece in chain.accepted:
                    allowed[piece] = True
                verdict = self._chain_verdict(st[:-1], chain)[chain.unc_lo : chain.unc_hi]
                allowed[chain.exits.unc_tok[chain.unc_lo : chain.unc_hi][verdict]] = True
                continue
            accepted, uncertain = self._top_walk(st[-1], len(st) == 1)
            allowed[accepted] = True
            unsure = uncertain[~allowed[self.trie.order[uncertain]]]
            self._walk_uncertain(frozenset({st}), unsure, allowed)
        if can_end:
            allowed[list(self.vocab.eos_token_ids)] = True
        packed = np.packbits(allowed, bitorder="little")
        self._masks[state] = packed
        if len(self._masks) > self._max_masks:
            self._masks.popitem(last=False)
        return packed


class GrammarMatcher:
    """One request's position in a grammar: accept sampled tokens, produce the next mask."""

    def __init__(self, runtime: GrammarRuntime) -> None:
        self.runtime = runtime
        self.state: State = runtime.initial
        self._ended = False  # EOS accepted
        # (state, ended) before each of the last accepted tokens, for rollback.
        self._history: deque[tuple[State, bool]] = deque(maxlen=_MAX_ROLLBACK)

    @property
    def can_end(self) -> bool:
        return self.runtime.info(self.state)[1]

    def is_terminated(self) -> bool:
        """True once nothing but the end can follow (or EOS was accepted)."""
        if self._ended:
            return True
        consumers, can_end = self.runtime.info(self.state)
        return can_end and not consumers

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (state unchanged) if the grammar forbids it."""
        rt = self.runtime
        if token_id in rt.vocab.eos_token_ids:
            if self.can_end and not self._ended:
                self._history.append((self.state, False))
                self._ended = True
                return True
            return False
        if not 0 <= token_id < rt.vocab.vocab_size or self._ended:
            return False
        data = rt.vocab.token_bytes[token_id]
        if not data:
            return False
        nxt = rt.advance_bytes(self.state, data)
        if not nxt:
            return False
        self._history.append((self.state, self._ended))
        self.state = nxt
        return True

    def rollback(self, num_tokens: int) -> None:
        if num_tokens > len(self._history):
            raise ValueError(f"cannot roll back {num_tokens} tokens; {len(self._history)} kept")
        for _ in range(num_tokens):
            self.state, self._ended = self._history.pop()

    def accept_bytes(self, data: bytes) -> bool:
        nxt = self.runtime.advance_bytes(self.state, data)
        if not nxt:
            return False
        self.state = nxt
        return True

    def fill_next_token_bitmask(self, out: np.ndarray) -> None:
        """Write the allowed-token bits into out ([>= ceil(V/8)] uint8, little bit order)."""
        if self._ended:
            out[:] = 0
            return
        packed = self.runtime.mask(self.state)
        n = min(packed.size, out.size)
        out[:n] = packed[:n]
        out[n:] = 0

    def allowed_token_ids(self) -> np.ndarray:
        bits = np.zeros(self.runtime.nbytes, dtype=np.uint8)
        self.fill_next_token_bitmask(bits)
        return np.flatnonzero(
            np.unpackbits(bits, bitorder="little")[: self.runtime.vocab.vocab_size]
        )
