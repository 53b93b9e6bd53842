"""Regex constraints: masks equal a brute-force oracle (the `regex` module's partial matches)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from intaglio.structured import GrammarError
from tests.structured.helpers import EOS, byte_vocab, compile_spec, generate

regex_oracle = pytest.importorskip("regex")

PATTERNS = [
    r"(ab|a)*c",
    r"\d{2,4}-[a-f]+",
    r"(foo|bar|fo)+\.?",
    r"[^a-c\n]{1,3}x",
    r"(\+|-)?(0|[1-9]\d*)(\.\d+)?",
    r"[α-ω]+é?",
    r"a{0,3}b{2}|c",
]
_TOKENS = [
    b"ab",
    b"abc",
    b"fo",
    b"foo",
    b"bar",
    b"o.",
    b"12",
    b"3-",
    b"-a",
    b"\xce\xb1",
    b"\xce",
    b"\xb1\xce",
    b"\xc3\xa9",
    b"+0",
    b".5",
    b"aab",
    b"bb",
    b"cx",
    b"xx",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_mask_equals_brute_force(pattern: str) -> None:
    vocab = byte_vocab(_TOKENS)
    compiled = compile_spec(vocab, regex=pattern)
    rng = np.random.default_rng(0)
    for _ in range(4):
        m = compiled.matcher()
        prefix = b""
        for _ in range(6):
            got = set(m.allowed_token_ids().tolist())
            want: set[int] = set()
            skipped: set[int] = set()
            for t, data in enumerate(vocab.token_bytes):
                if data is None:
                    continue
                try:
                    text = (prefix + data).decode()
                except UnicodeDecodeError:
                    # Mid-character: allowed iff some completion of the character works.
                    text = None
                if text is not None and regex_oracle.fullmatch(
                    pattern, text, partial=True, flags=regex_oracle.ASCII
                ):
                    want.add(t)
                elif text is None and _needs_one_byte(prefix + data) is False:
                    skipped.add(t)  # 3- and 4-byte characters: too many completions to try
                elif text is None and _partial_bytes_ok(pattern, prefix + data):
                    want.add(t)
            if _valid(prefix) and re.fullmatch(pattern, prefix.decode(), re.ASCII):
                want.add(EOS)
            assert got - skipped == want, (pattern, prefix)
            if got == {EOS} or not got:
                break
            tok = int(rng.choice(sorted(got)))
            if tok == EOS:
                break
            assert m.accept_token(tok)
            prefix += vocab.token_bytes[tok]


def _valid(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False


def _needs_one_byte(data: bytes) -> bool:
    """True if data ends with the first byte of a 2-byte character."""
    return 0xC2 <= data[-1] <= 0xDF


def _partial_bytes_ok(pattern: str, data: bytes) -> bool:
    """A byte string ending mid-character: try every way to finish that character."""
    for cp in range(0x80, 0x800):  # the patterns here only use 2-byte characters
        enc = chr(cp).encode()
        for k in range(1, len(enc)):
            if data.endswith(enc[:k]):
                try:
                    text = (data[: len(data) - k] + enc).decode()
                except UnicodeDecodeError:
                    continue
                if regex_oracle.fullmatch(pattern, text, partial=True, flags=regex_oracle.ASCII):
                    return True
    return False


@pytest.mark.parametrize("pattern", PATTERNS + [r"[a-z]{3}@[a-z]+\.(com|org)", r"\w+\s\S{2}"])
def test_generated_text_fullmatches(pattern: str) -> None:
    vocab = byte_vocab(_TOKENS)
    compiled = compile_spec(vocab, regex=pattern)
    rng = np.random.default_rng(1)
    for _ in range(20):
        text = generate(compiled.matcher(), rng, steps=int(rng.integers(0, 12))).decode()
        assert re.fullmatch(pattern, text), (pattern, text)


@pytest.mark.parametrize(
    "pattern, fragment",
    [(r"(a)\1", "backreference"), (r"a(?=b)", "lookaround"), (r"a\b", "\\b"), (r"*a", "repeat")],
)
def test_unsupported_regex_is_a_clear_error(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="regex"):
        compile_spec(byte_vocab(), regex=pattern)
    assert issubclass(GrammarError, ValueError)
