"""Patterns with anchors inside a top-level alternation (against `re.search` on every short
string over a small alphabet), and `propertyNames` patterns checked on the names we write."""

from __future__ import annotations

import itertools
import json
import re

import jsonschema
import numpy as np
import pytest

from intaglio.structured import StructuredOutputError
from intaglio.structured.frontends.regex import top_level_branches
from tests.structured.helpers import byte_vocab, compile_spec, generate

PATTERNS = [r"(?:$|^[a-z][a-z0-9]*)", r"^a$|b", r"(^ab|c$)", r"^a|b$|^$", r"(?:^[0-9]+$|x)"]


def test_top_level_branches_respect_groups_classes_and_escapes() -> None:
    assert top_level_branches(r"(?:$|^a)") == ["$", "^a"]
    assert top_level_branches(r"(a)|(b)") == ["(a)", "(b)"]
    assert top_level_branches(r"[|]a\|b(c|d)") == [r"[|]a\|b(c|d)"]
    assert top_level_branches(r"(a|b)c") == [r"(a|b)c"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_anchored_branches_accept_exactly_what_re_search_accepts(pattern: str) -> None:
    vocab = byte_vocab()
    compiled = compile_spec(vocab, json_schema={"type": "string", "pattern": pattern})
    for n in range(4):
        for chars in itertools.product("ab1x", repeat=n):
            text = "".join(chars)
            m = compiled.matcher()
            whole = m.accept_bytes(f'"{text}"'.encode()) and m.can_end
            assert whole == bool(re.search(pattern, text)), (pattern, text)


NAMES = {"pattern": "^[a-z_][a-z0-9_]*$"}


def test_property_names_hold_when_every_written_name_matches() -> None:
    schema = {
        "type": "object",
        "propertyNames": NAMES,
        "properties": {"ab_1": {"type": "integer"}, "c": {"type": "string", "maxLength": 3}},
        "required": ["ab_1"],
        "additionalProperties": False,
    }
    compiled = compile_spec(byte_vocab(), json_schema=schema)
    rng = np.random.default_rng(0)
    for _ in range(10):
        text = generate(compiled.matcher(), rng, steps=int(rng.integers(0, 20)))
        jsonschema.validate(json.loads(text), schema)


def test_free_keys_follow_the_property_names_pattern() -> None:
    schema = {
        "type": "object",
        "propertyNames": {"$ref": "#/$defs/key"},
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "integer"},
        "$defs": {"key": {"type": "string", "pattern": "^[a-z]{1,3}$"}},
    }
    compiled = compile_spec(byte_vocab([b'"', b"1"]), json_schema=schema)
    assert compiled.matcher().accept_bytes(b'{"a":1,"bc":2}')
    for bad in (b'{"a":1,"Bc":2}', b'{"abcd":2}', b'{"a":1,"a":"x"}'):
        m = compiled.matcher()
        assert not (m.accept_bytes(bad) and m.can_end), bad
    rng = np.random.default_rng(1)
    for _ in range(10):
        text = generate(compiled.matcher(), rng, steps=int(rng.integers(0, 30)))
        jsonschema.validate(json.loads(text), schema)


def test_patterns_combined_by_allof_and_anchors_inside_a_group() -> None:
    schema = {"allOf": [{"type": "string", "pattern": "^a"}, {"pattern": "(^[ab]{2,3}$)"}]}
    compiled = compile_spec(byte_vocab(), json_schema=schema)
    for n in range(5):
        for chars in itertools.product("ab1", repeat=n):
            text = "".join(chars)
            m = compiled.matcher()
            whole = m.accept_bytes(f'"{text}"'.encode()) and m.can_end
            assert whole == jsonschema.Draft202012Validator(schema).is_valid(text), text


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"propertyNames": NAMES, "properties": {"Bad": {}}}, "may not match propertyNames"),
        ({"propertyNames": NAMES, "required": ["x-y"]}, "may not match propertyNames"),
        ({"propertyNames": {"maxLength": 3}}, "'propertyNames'"),
    ],
)
def test_property_names_we_cannot_guarantee_are_refused(schema: dict, message: str) -> None:
    with pytest.raises(StructuredOutputError, match=message):
        compile_spec(byte_vocab(), json_schema={"type": "object", **schema})
