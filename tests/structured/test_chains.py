"""Bounded repeats (strings with maxLength): masks read off the shared chain walk are exact.

Checked three ways: against an independent oracle for JSON string prefixes (UTF-8 and escapes
decoded by hand, lengths counted in characters), against the direct trie walk from the same
DFA state, and against a bytewise walk of every token for regexes with bounded repeats.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from intaglio.structured import TokenizerInfo
from intaglio.structured.frontends.regex import regex_to_ir
from intaglio.structured.grammar.automaton import CHAIN_MIN_COPIES, Automaton
from intaglio.structured.grammar.ir import Grammar
from tests.structured.helpers import (
    DATA,
    EOS,
    assert_masks_equal_bytewise_walk,
    byte_vocab,
    compile_spec,
)

# Quotes mid-token, escapes (whole, cut, surrogate), UTF-8 of 2-4 bytes (whole and cut), and
# long ASCII runs that cross maxLength in one token.
EXTRA = [
    b'a"', b'""', b'ab"', b'"}', b"\\n", b'\\"', b"\\u00e9", b"\\u", b"\\u00", b"\\ud8",
    b"\\uD7ff", b"\\x", b"\xc3\xa9", b"\xc3", b"\xa9a", b"\xe2\x82\xac", b"\xe2\x82", b"\xac",
    b"\xf0\x9f\x98\x80", b"\xf0\x9f", b"\xed\xa0\x80", b"\xed\x9f\xbf", b"abcdefghij",
    b"x" * 20, b"\xc3\xa9\xc3\xa9\xc3\xa9", b"a\\n", b"a\\u00e9b", b'abc"', b"\x01",
]  # fmt: skip

BOUNDS = [(0, 8), (3, 10), (9, 9), (0, 40), (12, 50)]


def _char_prefix(data: bytes, i: int) -> tuple[int, bool] | None:
    """Read one string character at data[i:]: (bytes used, complete?) or None if invalid.
    Incomplete means the data ends inside a character that some bytes could finish."""
    b = data[i]
    if b == 0x5C:  # escape
        rest = data[i + 1 : i + 6]
        if not rest:
            return 1, False
        if rest[:1] in [bytes([c]) for c in b'"\\/bfnrt']:
            return 2, True
        if rest[:1] != b"u":
            return None
        hexes = rest[1:5]
        if any(chr(c) not in "0123456789abcdefABCDEF" for c in hexes):
            return None
        if hexes[:1] in (b"d", b"D") and len(hexes) > 1 and hexes[1:2] not in b"01234567":
            return None  # a surrogate: not one character on its own
        return 2 + len(hexes), len(hexes) == 4
    if b < 0x20 or b == 0x22:
        return None
    n = 1 if b < 0x80 else 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4
    seq = data[i : i + n]
    if len(seq) == n:
        options = [seq]
    else:  # only a lead byte's first continuation is restricted (overlongs, surrogates)
        options = [seq + bytes([c]) + b"\x80" * (n - len(seq) - 1) for c in range(0x80, 0xC0)]
    for full in options:
        try:
            full.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return len(seq), len(seq) == n
    return None


def string_prefix_ok(data: bytes, lo: int, hi: int) -> bool:
    """Can data (starting with the opening quote) be completed to a JSON string literal of
    lo..hi characters, with nothing after it?"""
    if not data.startswith(b'"'):
        return False
    i, chars = 1, 0
    while i < len(data):
        if data[i] == 0x22:
            return i == len(data) - 1 and lo <= chars <= hi
        got = _char_prefix(data, i)
        if got is None:
            return False
        used, complete = got
        chars += 1
        if not complete:
            return i + used == len(data) and chars <= hi
        i += used
    return chars <= hi


def _complete(data: bytes, lo: int, hi: int) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, str) and lo <= len(value) <= hi


@pytest.mark.parametrize("lo, hi", BOUNDS)
def test_bounded_string_masks_equal_oracle(lo: int, hi: int) -> None:
    vocab = byte_vocab(EXTRA)
    compiled = compile_spec(vocab, json_schema={"type": "string", "minLength": lo, "maxLength": hi})
    rng = np.random.default_rng(lo * 100 + hi)
    chain_states = 0
    for _ in range(4):
        m = compiled.matcher()
        out = b""
        for _ in range(30):
            rt = m.runtime
            chain_states += sum(
                rt.chains.position(st[-1], len(st) == 1) is not None for st in rt.info(m.state)[0]
            )
            got = set(m.allowed_token_ids().tolist())
            want = {
                t
                for t, data in enumerate(vocab.token_bytes)
                if data and string_prefix_ok(out + data, lo, hi)
            }
            if _complete(out, lo, hi):
                want.add(EOS)
            assert got == want, (lo, hi, out)
            if got <= {EOS}:
                break
            tok = int(rng.choice(sorted(got - {EOS})))
            assert m.accept_token(tok)
            out += vocab.token_bytes[tok]
    assert chain_states > 0  # the chain path decided these masks


@pytest.mark.parametrize("lo, hi", [(0, 8), (9, 9), (2, 30)])
def test_length_edges(lo: int, hi: int) -> None:
    """At exactly maxLength only the closing quote may follow; before minLength it may not."""
    vocab = byte_vocab(EXTRA)
    compiled = compile_spec(vocab, json_schema={"type": "string", "minLength": lo, "maxLength": hi})
    quote = vocab.token_bytes.index(b'"')
    for n in range(hi + 1):
        m = compiled.matcher()
        assert m.accept_bytes(b'"' + "é".encode() * n)
        allowed = set(m.allowed_token_ids().tolist())
        assert (quote in allowed) == (n >= lo)
        assert (vocab.token_bytes.index(b"a") in allowed) == (n < hi)
        assert (vocab.token_bytes.index(b"\\u00e9") in allowed) == (n < hi)
    m = compiled.matcher()
    assert not m.accept_bytes(b'"' + b"a" * (hi + 1))


def _trie_walk_ids(rt, d: int, root: bool) -> tuple[set[int], set[int]]:
    acc, unc = rt.walker.walk(d, root)
    return set(acc.tolist()), set(rt.trie.order[unc].tolist())


def _compare_walks(vocab: TokenizerInfo, schema: dict, prefix: bytes, steps: int, seed: int) -> int:
    m = compile_spec(vocab, json_schema=schema).matcher()
    assert m.accept_bytes(prefix)
    rt = m.runtime
    rng = np.random.default_rng(seed)
    used = 0
    for _ in range(steps):
        for st in rt.info(m.state)[0]:
            root = len(st) == 1
            pos = rt.chains.position(st[-1], root)
            if pos is None:
                continue
            used += 1
            acc = set(np.concatenate(pos.accepted).tolist())
            unc = set(pos.exits.unc_tok[pos.unc_lo : pos.unc_hi].tolist())
            assert (acc, unc) == _trie_walk_ids(rt, st[-1], root)
        ids = m.allowed_token_ids()
        ids = ids[~np.isin(ids, vocab.eos_token_ids)]
        if not ids.size:
            break
        assert m.accept_token(int(rng.choice(ids)))
    return used


SCHEMAS = [
    # Called string rules (maxLength > 32): the closing quote leaves the rule, so tokens
    # like '",' are uncertain and go through the full stack.
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 40}}},
    {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 4},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_chain_walk_equals_trie_walk_on_small_vocab(schema: dict) -> None:
    vocab = byte_vocab(EXTRA + [b'",', b'", "', b'"]', b'"}', b'"a"'])
    prefix = b'{"a": "' if schema["type"] == "object" else b'["'
    used = sum(_compare_walks(vocab, schema, prefix, 30, seed) for seed in range(3))
    assert used > 0


@pytest.mark.skipif(not (DATA / "tokenizers" / "gpt2").is_dir(), reason="no tokenizer data")
def test_chain_walk_equals_trie_walk_on_gpt2_vocab_and_is_shared() -> None:
    vocab = TokenizerInfo.from_vocab_json(
        DATA / "tokenizers" / "gpt2" / "vocab.json", eos_token_ids=(50256,)
    )
    assert _compare_walks(vocab, SCHEMAS[0], b'{"a": "', 10, 0) > 0
    cache = vocab.trie.loop_walks
    before = len(cache)
    # Another bounded string elsewhere reuses the walk: no new cache entry for it.
    other = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 300}}
    m = compile_spec(vocab, json_schema=other).matcher()
    assert m.accept_bytes(b'["ab')
    assert m.runtime.chains.position(m.runtime.info(m.state)[0][0][-1], False) is not None
    m.allowed_token_ids()
    assert len(cache) == before


# Bounded repeats in regexes: chains of other items, and ones the count-only walk refuses
# (an exit byte that also continues the item, an item matching empty) falling back.
PATTERNS = [r"[a-z]{0,12}x", r"(ab){2,10}c", r"[a-z]{0,10}[a-c]", r"(a?b){0,9}", r"\d{8,9}"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_chain_masks_equal_bytewise_walk(pattern: str) -> None:
    vocab = byte_vocab([b"ab", b"abab", b"aba", b"bc", b"abc", b"xyz", b"x", b"1234", b"12345"])
    compiled = compile_spec(vocab, regex=pattern)
    assert_masks_equal_bytewise_walk(compiled, vocab, steps=12)


def test_bounded_repeat_is_a_chain_of_identical_copies() -> None:
    a = Automaton(Grammar({"root": regex_to_ir("(ab|c){3,12}d")}))
    (span,) = a.chains
    assert (span.min, span.max) == (3, 12) and CHAIN_MIN_COPIES <= span.max
    stride = span.size + 1
    for j in range(span.max):
        base = span.copy_base(j)
        assert base == span.base + (span.max - 1 - j) * stride
        for k in range(span.size):  # every copy's edges are the template's, shifted
            want = [(m, t - span.base + base if t >= span.base else base - 1)
                    for m, t in a.edges[span.base + k]]  # fmt: skip
            assert list(a.edges[base + k]) == want
    assert Automaton(Grammar({"root": regex_to_ir("(ab){0,3}")})).chains == []
