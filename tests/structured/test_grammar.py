"""Context-free grammars: generated text parses with an independent parser (Python's `ast`)."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from intaglio.structured import StructuredOutputError
from tests.structured.helpers import accepts, byte_vocab, compile_spec, generate

ARITHMETIC_GBNF = r"""
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")" | "-" factor
number ::= ("0" | [1-9] [0-9]*) ("." [0-9]+)?
"""

# A small statement language: a subset of Python that `ast.parse` is the oracle for.
MINI_LANG_LARK = r"""
start: stmt ("\n" stmt)*
stmt: assign | while_stmt | if_stmt | "pass"
assign: NAME " = " expr
while_stmt: "while " cond ": " simple (";" " "? simple)*
if_stmt: "if " cond ": " simple [" else: " simple]
simple: assign | "pass" | "break"
cond: expr (" < " | " == " | " > ") expr
expr: term ((" + " | " - ") term)*
term: atom ((" * " | " // ") atom)*
atom: NAME | INT | "(" expr ")" | call
call: NAME "(" [expr ("," " "? expr)*] ")"
NAME: /[a-z][0-9_]{0,3}/
INT: /0|[1-9][0-9]{0,4}/
"""

_TOKENS = [
    b"(",
    b")",
    b"1",
    b"12",
    b"+",
    b"*(",
    b"))",
    b"x",
    b" = ",
    b"while ",
    b"if ",
    b": ",
    b"pass",
    b" + ",
    b"(1",
    b"\n",
    b"if",
    b" else: ",
]


@pytest.mark.parametrize("steps", [0, 5, 20])
def test_arithmetic_outputs_parse(steps: int) -> None:
    compiled = compile_spec(byte_vocab(_TOKENS), grammar=ARITHMETIC_GBNF)
    rng = np.random.default_rng(steps)
    for _ in range(15):
        text = generate(compiled.matcher(), rng, steps).decode()
        ast.parse(text, mode="eval")  # raises SyntaxError if not an expression


def test_arithmetic_accepts_and_rejects() -> None:
    compiled = compile_spec(byte_vocab(), grammar=ARITHMETIC_GBNF)
    for good in ["1", "(1+2)*3", "-(4.5/2)-7", "((((1))))"]:
        assert accepts(compiled.matcher(), good.encode()), good
    for bad in ["", "1+", "(1", "1..2", "()", "1)"]:
        assert not accepts(compiled.matcher(), bad.encode()), bad


@pytest.mark.parametrize("steps", [3, 30])
def test_mini_language_outputs_parse(steps: int) -> None:
    compiled = compile_spec(byte_vocab(_TOKENS), grammar=MINI_LANG_LARK)
    rng = np.random.default_rng(steps)
    for _ in range(10):
        text = generate(compiled.matcher(), rng, steps).decode()
        ast.parse(text)


def test_mask_matches_bytewise_reference() -> None:
    """Every token the vectorised mask allows (and only those) survives a byte-by-byte walk."""
    vocab = byte_vocab(_TOKENS)
    compiled = compile_spec(vocab, grammar=ARITHMETIC_GBNF)
    rng = np.random.default_rng(3)
    for _ in range(5):
        m = compiled.matcher()
        for _ in range(15):
            got = set(m.allowed_token_ids().tolist())
            want = {
                t
                for t, data in enumerate(vocab.token_bytes)
                if data and m.runtime.advance_bytes(m.state, data)
            }
            if m.can_end:
                want.add(0)
            assert got == want
            tok = int(rng.choice(sorted(got)))
            if tok == 0:
                break
            m.accept_token(tok)


@pytest.mark.parametrize(
    "text, message",
    [
        ('expr ::= expr "+" "1" | "1"', "left-recursive"),
        ("root ::= missing", "undefined rule"),
        ('root ::= "a"\n%ignore WS', "directive"),
        ('root ::= ("a"', "missing"),
    ],
)
def test_bad_grammars_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(StructuredOutputError, match=message):
        compile_spec(byte_vocab(), grammar=text)
