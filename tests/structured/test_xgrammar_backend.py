"""The optional xgrammar backend: same interface, same masks as ours on exact constraints."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from intaglio import LLM, SamplingParams
from intaglio.model.checkpoint import EMBEDDED_MODEL
from intaglio.structured import StructuredOutput
from intaglio.structured.compiler import StructuredOutputError
from tests.structured.helpers import EOS, byte_vocab, compile_spec

TOKENS = [b"ab", b"abc", b"12", b"3-", b"-a", b"bb", b'{"', b'":', b"true", b"}"]


def _packed(matcher, vocab_size: int) -> np.ndarray:
    out = np.zeros(-(-vocab_size // 8), dtype=np.uint8)
    matcher.fill_next_token_bitmask(out)
    return np.unpackbits(out, count=vocab_size, bitorder="little").astype(bool)


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # import xgrammar now fails
    with pytest.raises(StructuredOutputError, match="pip install xgrammar"):
        compile_spec(byte_vocab(TOKENS), regex="a+", backend="xgrammar")


@pytest.mark.parametrize("spec", [dict(regex=r"(ab|c)*\d{1,3}"), dict(choice=["abc", "ab-a"])])
def test_masks_equal_ours_along_random_walks(spec: dict) -> None:
    pytest.importorskip("xgrammar")
    vocab = byte_vocab(TOKENS)
    ours, theirs = compile_spec(vocab, **spec), compile_spec(vocab, backend="xgrammar", **spec)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = ours.matcher(), theirs.matcher()
        for _ in range(8):
            mask_a, mask_b = _packed(a, vocab.vocab_size), _packed(b, vocab.vocab_size)
            assert np.array_equal(mask_a, mask_b)
            token = int(rng.choice(np.flatnonzero(mask_a)))
            assert a.accept_token(token) and b.accept_token(token)
            if token == EOS:
                break
            if a.is_terminated():  # complete: ours ends here, xgrammar then allows only EOS
                assert np.flatnonzero(_packed(b, vocab.vocab_size)).tolist() == [EOS]
                break


def test_engine_generates_valid_json_with_xgrammar() -> None:
    pytest.importorskip("xgrammar")
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
    }
    spec = StructuredOutput(json_schema=schema, backend="xgrammar")
    outs = LLM(str(EMBEDDED_MODEL)).generate(
        ["def f(x):"] * 3,
        [SamplingParams(seed=i, max_tokens=60, structured=spec) for i in range(3)],
    )
    for out in outs:
        assert out.outputs[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.outputs[0].text), schema)
