"""Cold-mask paths: the shared loop walk (string bodies) equals the direct trie walk and is
shared; uncertain tokens walked in prefix groups (vectorised or not) get the same verdict as
a bytewise walk."""

from __future__ import annotations

import numpy as np
import pytest

from intaglio.structured import TokenizerInfo
from intaglio.structured.runtime.loops import loop_top_walk
from tests.structured.helpers import DATA, byte_vocab, compile_spec

# Tokens that leave a string body mid-token, escape, or split UTF-8 characters.
EXTRA = [
    b'ab"', b'"}', b'", "', b'"]', b'\\n', b'\\"x', b'\\u00e9', b'\\u', b"\xc3", b"\xa9x",
    b"\xc3\xa9", b"\xe2\x82", b"\xac\"", b"hello world", b'": "', b'"a', b"\x01", b"12",
    b'"}x', b'"}}', b'"},',
]  # fmt: skip

SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}},
    {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    # Recursive: the string body sits in a called rule, where exits make tokens uncertain.
    {"type": "object", "properties": {"s": {"type": "string"}, "c": {"$ref": "#"}}},
    {"type": "string", "pattern": "^[^0-9]*x$"},
    # The first character of a non-empty string (and of a free key) is on no cycle: an entry
    # state walked together with the loop it leads into.
    {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
    {"type": "object", "additionalProperties": {"type": "integer"}},
]


def _check_states(
    vocab: TokenizerInfo, schema: dict, steps: int, seed: int, prefix: bytes = b""
) -> int:
    """Walk randomly; at every state compare the loop walk with the trie walk. Returns how
    many states took the loop path."""
    m = compile_spec(vocab, json_schema=schema).matcher()
    assert m.accept_bytes(prefix)
    rt = m.runtime
    rng = np.random.default_rng(seed)
    used = 0
    for _ in range(steps):
        for st in rt.info(m.state)[0]:
            root = len(st) == 1
            got = loop_top_walk(rt.automaton, vocab, st[-1], root)
            if got is None:
                continue
            used += 1
            acc, unc = rt.walker.walk(st[-1], root)
            for g, w in zip(got, (acc, vocab.trie.order[unc]), strict=True):
                assert set(g.tolist()) == set(w.tolist())
        ids = m.allowed_token_ids()
        ids = ids[~np.isin(ids, vocab.eos_token_ids)]
        if not ids.size:
            break
        assert m.accept_token(int(rng.choice(ids)))
    return used


@pytest.mark.parametrize("schema", SCHEMAS)
def test_loop_walk_equals_trie_walk_on_small_vocab(schema: dict) -> None:
    vocab = byte_vocab(EXTRA)
    used = sum(_check_states(vocab, schema, 30, seed) for seed in range(4))
    if "c" in schema.get("properties", {}):  # inside the called (non-root) copy
        used += _check_states(vocab, schema, 10, 0, prefix=b'{"c": {"s": "')
    assert used > 0  # the loop path was exercised


@pytest.mark.skipif(not (DATA / "tokenizers" / "gpt2").is_dir(), reason="no tokenizer data")
def test_loop_walk_equals_trie_walk_on_gpt2_vocab_and_is_shared() -> None:
    vocab = TokenizerInfo.from_vocab_json(
        DATA / "tokenizers" / "gpt2" / "vocab.json", eos_token_ids=(50256,)
    )
    assert _check_states(vocab, SCHEMAS[0], 12, 0, prefix=b'{"a": "') > 0
    cache = vocab.trie.loop_walks
    before = len(cache)
    # Another schema with a free string reuses the walk: no new cache entry for it.
    other = {"type": "object", "properties": {"zz": {"type": "string"}}, "required": ["zz"]}
    m = compile_spec(vocab, json_schema=other).matcher()
    assert m.accept_bytes(b'{"zz": "')
    m.allowed_token_ids()
    assert len(cache) == before


def test_entry_state_takes_the_loop_path() -> None:
    vocab = byte_vocab(EXTRA)
    for schema, prefix in [(SCHEMAS[4], b'["'), (SCHEMAS[5], b'{"')]:
        m = compile_spec(vocab, json_schema=schema).matcher()
        assert m.accept_bytes(prefix)
        (st,) = m.runtime.info(m.state)[0]
        a = m.runtime.automaton
        assert not (a.table[st[-1]] == st[-1]).any()  # not on a cycle itself
        assert loop_top_walk(a, vocab, st[-1], len(st) == 1) is not None


@pytest.mark.parametrize("vector_group", [10**9, 1])
@pytest.mark.parametrize(
    "schema, prefix",
    [(s, b"") for s in SCHEMAS] + [(SCHEMAS[2], b'{"c": '), (SCHEMAS[2], b'{"c": {"c": {"s": "x"')],
)
def test_grouped_uncertain_walk_equals_bytewise_walk(
    schema: dict, prefix: bytes, vector_group: int
) -> None:
    words = [b"a", b"ab", b"1", b"}", b"},", b"}}", b"]", b'"', b'"x', b"null", b'{"', b'{"c": {']
    vocab = byte_vocab(EXTRA + [p + w for p in (b"", b" ", b"  ", b", ", b'": ') for w in words])
    for seed in range(3):
        m = compile_spec(vocab, json_schema=schema).matcher()
        assert m.accept_bytes(prefix)
        m.runtime.group_min = 0  # every uncertain token goes through the prefix groups
        m.runtime.vector_group = vector_group  # 1: every group with one stack left, vectorised
        rng = np.random.default_rng(seed)
        for _ in range(25):
            got = set(m.allowed_token_ids().tolist())
            want = {
                t
                for t, data in enumerate(vocab.token_bytes)
                if data and m.runtime.advance_bytes(m.state, data)
            }
            assert got - set(vocab.eos_token_ids) == want
            ids = np.array(sorted(want))
            if not ids.size:
                break
            assert m.accept_token(int(rng.choice(ids)))


@pytest.mark.skipif(not (DATA / "tokenizers" / "gpt2").is_dir(), reason="no tokenizer data")
def test_subtree_loop_walks_equal_plain_trie_walk() -> None:
    """Where a string opens mid-token (` "ab`), subtrees handed to the shared loop walks give
    the same walk as stepping them level by level."""
    vocab = TokenizerInfo.from_vocab_json(
        DATA / "tokenizers" / "gpt2" / "vocab.json", eos_token_ids=(50256,)
    )
    diverted = 0
    cases = [(SCHEMAS[0], b'{"a":'), (SCHEMAS[1], b"["), (SCHEMAS[4], b'["x",'), (SCHEMAS[5], b"{")]
    for seed, (schema, prefix) in enumerate(cases):
        m = compile_spec(vocab, json_schema=schema).matcher()
        assert m.accept_bytes(prefix)
        rt = m.runtime
        rng = np.random.default_rng(seed)
        for _ in range(4):
            for st in rt.info(m.state)[0]:
                root = len(st) == 1
                rt.walker.loop_subtree = 10**9
                want = rt.walker.walk(st[-1], root)
                rt.walker.loop_subtree = 8
                before = len(vocab.trie.subtree_walks)
                got = rt.walker.walk(st[-1], root)
                diverted += len(vocab.trie.subtree_walks) > before
                for g, w in zip(got, want, strict=True):
                    assert sorted(g.tolist()) == sorted(w.tolist())
            ids = m.allowed_token_ids()
            ids = ids[~np.isin(ids, vocab.eos_token_ids)]
            if not ids.size:
                break
            assert m.accept_token(int(rng.choice(ids)))
    assert diverted > 0
