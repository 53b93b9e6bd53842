"""Incremental detokenization: same text as a full decode, stops found across token boundaries."""

from __future__ import annotations

import pytest

from intaglio.engine.detokenizer import IncrementalDetokenizer

TEXT = "def fibonacci(n):\n    return n  # Caf\u00e9 \u4e2d\u6587 \U0001f600 done"


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint("llama")))


def _feed(tokenizer, stop=(), include=False):
    ids = tokenizer.encode(TEXT)
    detok = IncrementalDetokenizer(tokenizer, tuple(stop), include, skip_special=True)
    streamed = []
    for n in range(1, len(ids) + 1):
        hit = detok.update(ids[:n], final=n == len(ids))
        streamed.append(detok.stream_text(finished=hit is not None))
        if hit is not None:
            return detok, hit, streamed
    return detok, None, streamed


def test_incremental_text_equals_full_decode(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert len(ids) > 10  # many tokens, including ones that split multi-byte characters
    detok, hit, streamed = _feed(tokenizer)
    assert hit is None and detok.text == TEXT
    # Streamed text only ever grows, and never shows a half character.
    for before, after in zip(streamed, streamed[1:]):
        assert after.startswith(before)
    assert all("\ufffd" not in s for s in streamed)


def _boundary_stop(tokenizer) -> str:
    """A two-character stop string whose characters come from different tokens."""
    ids = tokenizer.encode(TEXT)
    pos = 0
    for a, b in zip(ids, ids[1:]):
        pa, pb = tokenizer.decode([a]), tokenizer.decode([b])
        pos += len(pa)
        if pa.isascii() and pb.isascii() and pa.strip() and pb.strip():
            return TEXT[pos - 1 : pos + 1]
    raise AssertionError("no boundary found")


def test_stop_string_spanning_tokens(tokenizer):
    stop = _boundary_stop(tokenizer)
    detok, hit, streamed = _feed(tokenizer, stop=[stop])
    assert hit == stop
    assert detok.text == TEXT[: TEXT.find(stop)]
    # While running, the stream held back anything that could have been the start of the stop.
    assert all(not s.endswith(stop[0]) or s == detok.text for s in streamed[:-1])
    detok, hit, _ = _feed(tokenizer, stop=[stop], include=True)
    assert detok.text == TEXT[: TEXT.find(stop) + len(stop)]


def test_stop_string_inside_one_token_and_unicode(tokenizer):
    detok, hit, _ = _feed(tokenizer, stop=["\u4e2d"])
    assert hit == "\u4e2d" and detok.text == TEXT[: TEXT.find("\u4e2d")]
