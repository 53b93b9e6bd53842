"""Patterns with anchors inside a top-level alternation, against `re.search` on every short
string over a small alphabet."""

from __future__ import annotations

import itertools
import re

import pytest

from intaglio.structured.regex import top_level_branches
from tests.structured.helpers import byte_vocab, compile_spec

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
