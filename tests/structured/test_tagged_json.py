"""Free text with tagged JSON blocks (the grammar of `auto` tool calls with strict tools):
hand-written outputs, and random walks that must give text without the tag or blocks whose
JSON validates against the schema."""

from __future__ import annotations

import json
import time

import jsonschema
import numpy as np
import pytest

from intaglio.structured import GrammarCompiler, StructuredOutput, StructuredOutputError
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import TaggedJson
from tests.structured.helpers import DATA, accepts, byte_vocab, compile_spec, generate

BEGIN, END = "<tool_call>", "</tool_call>"
ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}, "days": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}
SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"name": {"const": "weather"}, "arguments": ARGS},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"name": {"const": "now"}, "arguments": {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        },
    ]
}
CALL = b'{"name": "weather", "arguments": {"city": "Paris"}}'


def spec(max_blocks: int | None = None) -> StructuredOutput:
    return StructuredOutput(tagged_json=TaggedJson(BEGIN, END, SCHEMA, max_blocks))


@pytest.fixture(scope="module")
def grammar() -> object:
    return GrammarCompiler(byte_vocab()).compile(spec())


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (b"", True),
        ("Plain words, caf\u00e9 and a < sign, <tool_ and <tool_cal>.".encode(), True),
        (b"<<tool_call" + b"x", True),  # a tag begun twice, never finished
        (b"</tool_call> is allowed in text", True),
        (b"Let me check.\n<tool_call>\n" + CALL + b"\n</tool_call>", True),
        (b"<tool_call>" + CALL + b"</tool_call>\n<tool_call>" + CALL + b"</tool_call>\n", True),
        (b'<tool_call>{"name": "now", "arguments": {}}</tool_call>', True),
        (b"<tool_call>", False),  # the block must be finished
        (b"text <tool_call> more text", False),  # the tag opens a call, nothing else
        (b'<tool_call>{"name": "rain", "arguments": {}}</tool_call>', False),  # not a tool
        (b'<tool_call>{"name": "weather", "arguments": {}}</tool_call>', False),  # city missing
        (b"<tool_call>" + CALL + b"</tool_call> and then text", False),  # calls end the answer
        (b"\xff\xfe", False),  # not UTF-8
    ],
)
def test_hand_written(grammar: object, text: bytes, ok: bool) -> None:
    assert accepts(grammar.matcher(), text) is ok  # type: ignore[attr-defined]


def test_max_blocks_bounds_the_calls() -> None:
    one = compile_spec(byte_vocab(), tagged_json=TaggedJson(BEGIN, END, SCHEMA, 1))
    block = b"<tool_call>" + CALL + b"</tool_call>"
    assert accepts(one.matcher(), b"Sure. " + block + b"\n")  # type: ignore[attr-defined]
    assert not accepts(one.matcher(), block + block)  # type: ignore[attr-defined]


def test_a_tag_whose_first_character_repeats_is_refused() -> None:
    with pytest.raises(StructuredOutputError, match="first character must occur only once"):
        compile_spec(byte_vocab(), tagged_json=TaggedJson("<a<", ">", SCHEMA))


def test_spec_from_a_dict() -> None:
    got = StructuredOutput.from_value({"tagged_json": {"begin": BEGIN, "end": END, "schema": {}}})
    assert got.kind == "tagged_json" and got.tagged_json == TaggedJson(BEGIN, END, "{}")


def check_output(text: str) -> int:
    """Asserts the output is text without the tag, then valid blocks; returns their number."""
    if BEGIN not in text:
        return 0
    rest = text[text.index(BEGIN) :]
    decoder = json.JSONDecoder()
    blocks = 0
    while rest.strip():
        assert rest.lstrip("\n").startswith(BEGIN), rest
        rest = rest.lstrip("\n")[len(BEGIN) :].removeprefix("\n")
        call, end = decoder.raw_decode(rest)
        jsonschema.validate(call, SCHEMA)
        rest = rest[end:].removeprefix("\n")
        assert rest.startswith(END), rest
        rest = rest[len(END) :]
        blocks += 1
    return blocks


@pytest.mark.parametrize("seed", range(8))
def test_random_walks_write_text_or_valid_calls(grammar: object, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = grammar.matcher()  # type: ignore[attr-defined]
    prefix = b"Words first. " + BEGIN.encode() if seed % 2 else b""  # half open a block
    assert m.accept_bytes(prefix)
    out = generate(m, rng, 40)
    assert out is not None
    blocks = check_output((prefix + out).decode())
    assert blocks >= 1 if prefix else True


@pytest.mark.skipif(not (DATA / "tokenizers" / "qwen2").exists(), reason="needs shared data")
def test_compiles_fast_on_a_real_vocabulary_with_the_tags_as_tokens() -> None:
    """Qwen 2.5 has `<tool_call>` and `</tool_call>` as tokens of their own: the walks under
    the grammar use them, and compiling (first mask included) stays far under the limit."""
    info = TokenizerInfo.from_vocab_json(DATA / "tokenizers" / "qwen2" / "vocab.json")
    eos = len(info.token_bytes)
    tokens = [*info.token_bytes, None, BEGIN.encode(), END.encode()]
    vocab = TokenizerInfo(tokens, eos_token_ids=(eos,))
    t0 = time.perf_counter()
    compiled = GrammarCompiler(vocab).compile(spec())
    assert time.perf_counter() - t0 < 5.0
    rng = np.random.default_rng(0)
    for seed in range(4):
        m = compiled.matcher()
        if seed % 2:
            assert m.accept_token(eos + 1)  # the tag token opens a block
        out = generate(m, rng, 30)
        assert out is not None
        text = ((BEGIN.encode() if seed % 2 else b"") + out).decode()
        assert check_output(text) >= seed % 2
