"""Shared test tools: small vocabularies, random walks under a mask, shortest completions."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from intaglio.structured import GrammarCompiler, StructuredOutput, TokenizerInfo
from intaglio.structured.runtime.matcher import GrammarMatcher

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EOS = 0


def byte_vocab(extra: list[bytes] = ()) -> TokenizerInfo:
    """EOS, every single byte, then extra multi-byte tokens: any string is tokenizable."""
    tokens: list[bytes | None] = [None, *(bytes([b]) for b in range(256)), *extra]
    return TokenizerInfo(tokens, eos_token_ids=(EOS,))


def compile_spec(vocab: TokenizerInfo, **spec) -> object:
    return GrammarCompiler(vocab).compile(StructuredOutput(**spec))


def allowed(m: GrammarMatcher) -> np.ndarray:
    return m.allowed_token_ids()


def shortest_completion(m: GrammarMatcher, limit: int = 400, budget: int = 5000) -> bytes | None:
    """Bytes that take the matcher to a state where the grammar may end (BFS over states);
    None when the search budget runs out (deep nesting makes the state space large)."""
    rt = m.runtime
    a = rt.automaton
    seen = {m.state}
    queue = deque([(m.state, b"")])
    while queue:
        state, path = queue.popleft()
        consumers, can_end = rt.info(state)
        if can_end:
            return path
        if len(path) >= limit:
            return None
        for b in range(256):
            if not any(a.step(st[-1], b) for st in consumers):
                continue
            nxt = rt.advance(state, b)
            if nxt and nxt not in seen:
                if len(seen) > budget:
                    return None
                seen.add(nxt)
                queue.append((nxt, path + bytes([b])))
    raise AssertionError("no completion found: the matcher reached a dead end")


def generate(m: GrammarMatcher, rng: np.random.Generator, steps: int) -> bytes | None:
    """Random allowed tokens for `steps` tokens, then the shortest completion (None if the
    completion search gave up)."""
    vocab = m.runtime.vocab
    out = b""
    for _ in range(steps):
        if m.is_terminated():
            return out
        ids = allowed(m)
        assert ids.size, "a live matcher must allow some token"
        tok = int(rng.choice(ids))
        assert m.accept_token(tok)
        if tok in vocab.eos_token_ids:
            return out
        out += vocab.token_bytes[tok]
    tail = shortest_completion(m)
    if tail is None:
        return None
    assert m.accept_bytes(tail) or not tail
    assert m.can_end
    return out + tail


def accepts(m: GrammarMatcher, data: bytes) -> bool:
    return m.accept_bytes(data) and m.can_end


def assert_masks_equal_bytewise_walk(compiled, vocab: TokenizerInfo, steps: int, seed: int = 0):
    """Random walks under the mask; at each step the mask must equal the tokens whose bytes
    the matcher's state reads one by one."""
    rng = np.random.default_rng(seed)
    for _ in range(5):
        m = compiled.matcher()
        for _ in range(steps):
            got = set(m.allowed_token_ids().tolist()) - {EOS}
            want = {
                t
                for t, data in enumerate(vocab.token_bytes)
                if data and m.runtime.advance_bytes(m.state, data)
            }
            assert got == want
            if not want:
                break
            assert m.accept_token(int(rng.choice(sorted(want))))
