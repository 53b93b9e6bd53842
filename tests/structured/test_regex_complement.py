"""Complement of a regex as IR: brute force over every short string of a small alphabet."""

from __future__ import annotations

import itertools
import re

import pytest

from intaglio.structured.frontends.regex import regex_to_ir
from intaglio.structured.frontends.regex_complement import complement
from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.grammar.ir import NOTHING, Grammar

ALPHABET = "abc"
MASK = sum(1 << ord(c) for c in ALPHABET)


def _matches(node, text: str) -> bool:
    a = Automaton(Grammar({"root": node}))
    d = a.start
    for b in text.encode():
        d = a.step(d, b)
        if not d:
            return False
    return bool(a.accepting[d])


@pytest.mark.parametrize("pattern", ["ab", "a+", "a|bb", "(ab)*", ".{2,}b", "[^a]c?", ""])
def test_complement_is_exact_on_short_strings(pattern: str) -> None:
    node = complement(regex_to_ir(pattern), MASK)
    assert node is not None
    for n in range(6):
        for chars in itertools.product(ALPHABET, repeat=n):
            text = "".join(chars)
            assert _matches(node, text) == (re.fullmatch(pattern, text) is None), text


def test_complement_of_everything_is_empty() -> None:
    assert complement(regex_to_ir(".*"), MASK) == NOTHING


def test_complement_outside_the_alphabet_is_empty() -> None:
    node = complement(regex_to_ir("a"), MASK)
    assert not _matches(node, "d") and _matches(node, "b")


def test_too_large_complement_gives_none() -> None:
    # The DFA must remember the last nine characters: 2**9 states.
    assert complement(regex_to_ir("[abc]*a[abc]{8}"), MASK) is None
