"""A pattern that repeats one character class, with minLength/maxLength, is built as one
bounded repeat (a chain), and `item{m,}` as an open chain. Masks are checked against a
brute-force oracle, against the intersection path the fold replaces, and against the
direct trie walk; generated strings validate with jsonschema."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from intaglio.structured.frontends.regex import regex_to_ir
from intaglio.structured.grammar.ir import Intersect, Repeat, Seq
from intaglio.structured.json_schema.compiler import _STRING_EXCLUDE, json_schema_to_grammar
from intaglio.structured.json_schema.lengths import one_character
from tests.structured.helpers import EOS, assert_masks_equal_bytewise_walk, byte_vocab, compile_spec
from tests.structured.test_chains import EXTRA, _compare_walks, _complete, string_prefix_ok

CHARS = "abz09_.é€"  # the class of CLASS below, as characters
CLASS = "[a-z0-9_.é€]"
VOCAB_EXTRA = EXTRA + [b"abc", b"a.b", b"zz_", b"9" * 12, "é€a".encode(), b'a"', b"0_"]


def class_prefix_ok(data: bytes, lo: int, hi: int) -> bool:
    """Can data (from the opening quote) be completed to a string of lo..hi characters of
    the class [a-z0-9_.é€], with nothing after it?"""
    if not data.startswith(b'"'):
        return False
    body, closed = data[1:], False
    if b'"' in body:
        if body.index(b'"') != len(body) - 1:
            return False
        body, closed = body[:-1], True
    allowed = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789_.é€")
    i = n = 0
    while i < len(body):
        whole = [c.encode() for c in allowed if body.startswith(c.encode(), i)]
        if whole:
            i, n = i + len(whole[0]), n + 1
            continue
        tail = body[i:]
        if closed or not any(c.encode().startswith(tail) for c in allowed):
            return False
        return n + 1 <= hi  # cut inside one more character
    return lo <= n <= hi if closed else n <= hi


def _masks_vs_oracle(schema: dict, lo: int, hi: int, seed: int) -> None:
    vocab = byte_vocab(VOCAB_EXTRA)
    compiled = compile_spec(vocab, json_schema=schema)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        m = compiled.matcher()
        out = b""
        for _ in range(40):
            got = set(m.allowed_token_ids().tolist())
            want = {
                t for t, d in enumerate(vocab.token_bytes) if d and class_prefix_ok(out + d, lo, hi)
            }
            if class_prefix_ok(out, lo, hi) and out.endswith(b'"') and len(out) > 1:
                want.add(EOS)
            assert got == want, (schema, out)
            if got <= {EOS}:
                jsonschema.validate(json.loads(out), schema)
                break
            tok = int(rng.choice(sorted(got - {EOS})))
            assert m.accept_token(tok)
            out += vocab.token_bytes[tok]


def test_class_pattern_with_lengths_is_one_bounded_repeat() -> None:
    schema = {"type": "string", "pattern": f"^{CLASS}+$", "minLength": 3, "maxLength": 30}
    body = json_schema_to_grammar(schema).rules["root"]
    assert isinstance(body, Seq) and isinstance(body.items[1], Repeat)
    assert (body.items[1].min, body.items[1].max) == (3, 30)
    # The pattern's own bounds meet the schema's.
    schema = {"type": "string", "pattern": f"^{CLASS}{{2,12}}$", "minLength": 5}
    rep = json_schema_to_grammar(schema).rules["root"].items[1]
    assert (rep.min, rep.max) == (5, 12)
    # Not one class repeated: still the intersection.
    schema = {"type": "string", "pattern": f"^a{CLASS}+$", "maxLength": 9}
    assert isinstance(json_schema_to_grammar(schema).rules["root"].items[1], Intersect)


def test_one_character_rejects_escaped_and_multi_character_items() -> None:
    assert one_character(regex_to_ir(r"\S", exclude=_STRING_EXCLUDE))
    assert not one_character(regex_to_ir(r"\S"))  # controls are written escaped
    assert not one_character(regex_to_ir('["a]'))  # the quote is written escaped
    assert not one_character(regex_to_ir("ab"))
    assert not one_character(regex_to_ir("a?"))


@pytest.mark.parametrize(
    "pattern, lo, hi, want",
    [
        (f"^{CLASS}+$", 0, 8, (1, 8)),
        (f"^{CLASS}*$", 9, 9, (9, 9)),
        (f"^{CLASS}+$", 12, 14, (12, 14)),
        (f"^{CLASS}{{3,20}}$", 0, 10, (3, 10)),
        (f"^{CLASS}+$", 10, None, (10, 10**9)),
    ],
)
def test_folded_masks_equal_oracle(pattern: str, lo: int, hi: int | None, want: tuple) -> None:
    schema = {"type": "string", "pattern": pattern, "minLength": lo}
    if hi is not None:
        schema["maxLength"] = hi
    _masks_vs_oracle(schema, *want, seed=lo)


def test_folded_masks_equal_intersection() -> None:
    """`^C+$` folds; `^CC*$` (the same language) still goes through the intersection."""
    vocab = byte_vocab(VOCAB_EXTRA)
    folded = compile_spec(vocab, json_schema={"pattern": f"^{CLASS}+$", "maxLength": 10})
    product = compile_spec(vocab, json_schema={"pattern": f"^{CLASS}{CLASS}*$", "maxLength": 10})
    rng = np.random.default_rng(1)
    for _ in range(4):
        a, b = folded.matcher(), product.matcher()
        for _ in range(20):
            got = a.allowed_token_ids()
            assert np.array_equal(got, b.allowed_token_ids())
            ids = got[got != EOS]
            if not ids.size:
                break
            tok = int(rng.choice(ids))
            assert a.accept_token(tok) and b.accept_token(tok)


@pytest.mark.parametrize("lo", [8, 11])
def test_open_chain_masks_equal_oracle_and_trie_walk(lo: int) -> None:
    """minLength alone: `char{lo,}` is an open chain; at and past lo any length may follow."""
    vocab = byte_vocab(EXTRA)
    schema = {"type": "string", "minLength": lo}
    compiled = compile_spec(vocab, json_schema=schema)
    rng = np.random.default_rng(lo)
    for _ in range(4):
        m = compiled.matcher()
        out = b""
        for _ in range(40):
            got = set(m.allowed_token_ids().tolist())
            want = {
                t
                for t, d in enumerate(vocab.token_bytes)
                if d and string_prefix_ok(out + d, lo, 10**9)
            }
            if _complete(out, lo, 10**9):
                want.add(EOS)
            assert got == want, out
            if got <= {EOS}:
                jsonschema.validate(json.loads(out), schema)
                break
            tok = int(rng.choice(sorted(got - {EOS})))
            assert m.accept_token(tok)
            out += vocab.token_bytes[tok]
    obj = {"type": "object", "properties": {"a": {"type": "string", "minLength": lo}}}
    used = sum(_compare_walks(vocab, obj, b'{"a": "', 30, seed) for seed in range(3))
    assert used > 0  # the open chain decided these masks, equal to the direct walk


@pytest.mark.parametrize("pattern", [r"[a-c]{8,}", r"(ab|c){9,}d", r"\d{8,}x?"])
def test_open_regex_chain_masks_equal_bytewise_walk(pattern: str) -> None:
    vocab = byte_vocab([b"ab", b"abab", b"abc", b"cd", b"cccc", b"12345678", b"1234x"])
    compiled = compile_spec(vocab, regex=pattern)
    assert_masks_equal_bytewise_walk(compiled, vocab, steps=20)


@pytest.mark.parametrize("pattern", ["^[a-z]*", "[0-9]*$", "(ab)?", "^x?y*"])
def test_search_that_may_match_empty_matches_every_string(pattern: str) -> None:
    schema = {"type": "string", "pattern": pattern, "maxLength": 6}
    vocab = byte_vocab(EXTRA)
    compiled = compile_spec(vocab, json_schema=schema)
    for value in ["", "Z Z", "é€", "ab-~", "123456"]:  # patterns write no escapes
        m = compiled.matcher()
        data = json.dumps(value, ensure_ascii=False).encode()
        assert m.accept_bytes(data) and m.can_end, value
        jsonschema.validate(value, schema)
    body = json_schema_to_grammar({"type": "string", "pattern": pattern}).rules["root"]
    assert isinstance(body.items[1], Repeat) and (body.items[1].min, body.items[1].max) == (0, None)
    anchored = compile_spec(vocab, json_schema={"type": "string", "pattern": "^[a-z]*$"})
    assert not anchored.matcher().accept_bytes(b'"Z')
