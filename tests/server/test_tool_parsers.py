"""Tool-call parsers on hand-written model outputs, whole and streamed piece by piece."""

from __future__ import annotations

import json

import pytest

from intaglio.server.tool_output import ToolCallOutput
from intaglio.server.tool_parsers import parse_forced_calls, parse_tool_calls
from intaglio.server.tools import ToolPlan

NAMES = {"get_weather", "add"}


def calls(text: str) -> tuple[str, list[tuple[str, dict]]]:
    content, parsed = parse_tool_calls(text, NAMES)
    return content, [(c.name, json.loads(c.arguments)) for c in parsed]


PARIS = ("get_weather", {"city": "Paris"})
ADD = ("add", {"a": 1, "b": [2, 3]})


@pytest.mark.parametrize(
    ("text", "content", "expected"),
    [
        # Hermes (Qwen, SmolLM2): one block per call, text before them is content.
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            "",
            [PARIS],
        ),
        (
            'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
            '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}\n'
            "</tool_call>\n",
            "Let me check.\n",
            [PARIS, ADD],
        ),
        # The closing tag missing at the end of the output; arguments given as JSON text.
        ('<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": [2, 3]}"}', "", [ADD]),
        # Llama 3 JSON: "parameters", after the python tag, several separated by ';'.
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}',
            "",
            [PARIS, ADD],
        ),
        ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', "", [PARIS]),
        # Pythonic (Llama 3.2 / 4).
        ('[get_weather(city="Paris"), add(a=1, b=[2, 3])]', "", [PARIS, ADD]),
        ("[get_weather(city='Paris')]", "", [PARIS]),
        # Not calls: left as content.
        ("The weather is nice.", "The weather is nice.", []),
        ('{"answer": 42}', '{"answer": 42}', []),
        ("[1, 2, 3]", "[1, 2, 3]", []),
        ("[unknown(x=1)]", "[unknown(x=1)]", []),  # not one of the tools
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Par',
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Par',
            [],
        ),  # cut short
        ("[get_weather(city=open('x'))]", "[get_weather(city=open('x'))]", []),  # not literal
        ("[get_weather(**kw)]", "[get_weather(**kw)]", []),
        (
            '<tool_call>{"name": "add", "arguments": [1]}</tool_call>',
            '<tool_call>{"name": "add", "arguments": [1]}</tool_call>',
            [],
        ),
    ],
)
def test_parse(text: str, content: str, expected: list) -> None:
    assert calls(text) == (content, expected)


def test_forced_output_is_one_call_or_a_list() -> None:
    one = parse_forced_calls('{"name": "add", "arguments": {"a": 1}}')
    assert one is not None and [(c.name, c.arguments) for c in one] == [("add", '{"a": 1}')]
    many = parse_forced_calls(
        '[{"name": "add", "arguments": {}}, {"name": "now", "arguments": {}}]'
    )
    assert many is not None and [c.name for c in many] == ["add", "now"]
    assert parse_forced_calls('[{"name": "add", "arguments": {"a"') is None  # cut short


def feed_in_pieces(text: str, mode: str, size: int) -> tuple[str, list[dict]]:
    out = ToolCallOutput(ToolPlan([{"function": {"name": n}} for n in NAMES], mode, None))
    content, calls = "", []
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    for i, piece in enumerate(pieces):
        sent, got = out.feed(piece, finished=i == len(pieces) - 1)
        content += sent
        calls += got
    return content, calls


@pytest.mark.parametrize(
    "text",
    [
        'Checking.\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>',
        "Plain text with a < sign and <tool_ but no call.",
        '[get_weather(city="Paris")]',
        '  {"name": "add", "parameters": {"a": 2}}',
        "<|python_tag|> not JSON after all",
        "<tool_call>",
    ],
)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_streamed_pieces_add_up_to_the_whole(text: str, size: int) -> None:
    whole_content, whole_calls = feed_in_pieces(text, "auto", len(text) or 1)
    content, streamed = feed_in_pieces(text, "auto", size)
    assert content == whole_content
    strip = [(c["function"]["name"], c["function"]["arguments"]) for c in streamed]
    assert strip == [(c["function"]["name"], c["function"]["arguments"]) for c in whole_calls]


def test_stream_holds_back_only_what_may_start_a_call() -> None:
    out = ToolCallOutput(ToolPlan([{"function": {"name": "add"}}], "auto", None))
    assert out.feed("Sure, I will <tool", finished=False) == ("Sure, I will ", [])
    assert out.feed("box> here", finished=False) == ("<toolbox> here", [])
    assert out.feed(" <tool_call>{", finished=False) == (" ", [])
    content, calls = out.feed('"name": "add", "arguments": {}}</tool_call>', finished=True)
    assert content == "" and [c["function"]["name"] for c in calls] == ["add"]
