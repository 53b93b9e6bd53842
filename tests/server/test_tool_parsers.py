"""Tool-call readers on hand-written model outputs, whole and fed in pieces of 1 and 3
characters: every piece size must find the same content and the same calls, character for
character (a stream's deltas add up to the whole response)."""

from __future__ import annotations

import pytest

from intaglio.server.tool_output import ToolCallOutput
from intaglio.server.tool_parsers import AutoReader, ForcedReader, Reader
from intaglio.server.tool_scanner import CallScanner
from intaglio.server.tools import ToolPlan

NAMES = {"get_weather", "add"}


def read(reader: Reader, text: str, size: int) -> tuple[str, list[tuple[str | None, str]]]:
    """(content, calls) of `text` fed in pieces of `size` characters."""
    content = ""
    for i in range(0, len(text), size):
        reader.feed(text[i : i + size])
        content += reader.take_content()
    reader.finish()
    return content + reader.take_content(), [(c.name, c.arguments) for c in reader.calls]


PARIS = ("get_weather", '{"city": "Paris"}')
ADD = ("add", '{"a": 1, "b": [2, 3]}')
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize(
    ("text", "content", "expected"),
    [
        # Hermes (Qwen, SmolLM2): one block per call, text before them is content.
        (f"<tool_call>\n{CALL}\n</tool_call>", "", [PARIS]),
        (
            f"Let me check.\n<tool_call>{CALL}</tool_call>\n<tool_call>\n"
            '{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}\n</tool_call>\n',
            "Let me check.\n",
            [PARIS, ADD],
        ),
        # The closing tag missing at the end; arguments given as JSON text (its content counts).
        ('<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": [2, 3]}"}', "", [ADD]),
        # The name after the arguments; no arguments at all; strings holding braces and quotes.
        ('<tool_call>{"arguments": {"city": "Paris"}, "name": "get_weather"}', "", [PARIS]),
        ('<tool_call>{"name": "add"}</tool_call>', "", [("add", "{}")]),
        (
            '<tool_call>{"name": "add", "arguments": {"q": "a}\\"{[", "n": -1.5e3, "t": null}}',
            "",
            [("add", '{"q": "a}\\"{[", "n": -1.5e3, "t": null}')],
        ),
        # Text after the calls is content too.
        (f"<tool_call>{CALL}</tool_call> Done.", " Done.", [PARIS]),
        # Llama 3 JSON: "parameters", after the python tag, several separated by ';'.
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "add", "parameters": {"a": 1, "b": [2, 3]}}',
            "",
            [PARIS, ADD],
        ),
        (f"  [{CALL}]", "", [PARIS]),
        # Pythonic (Llama 3.2 / 4): no JSON text exists, the arguments are serialized.
        ('[get_weather(city="Paris"), add(a=1, b=[2, 3])]', "", [PARIS, ADD]),
        ("[get_weather(city='Paris')]", "", [PARIS]),
        # Not calls: left as content.
        ("The weather is nice.", "The weather is nice.", []),
        ("Plain text with a < sign and <tool_ but no call.", None, []),
        ('{"answer": 42}', None, []),
        ('{"name": "get_weather", "parameters": {"city": ', None, []),  # cut short, read whole
        ("[1, 2, 3]", None, []),
        ("[unknown(x=1)]", None, []),  # not one of the tools
        ("[get_weather(city=open('x'))]", None, []),  # not literal
        ("[get_weather(**kw)]", None, []),
        ("<|python_tag|> not JSON after all", None, []),
        ("<tool_call>", None, []),
        ('<tool_call>{"name": "add", "arguments": [1]}</tool_call>', None, []),
        ('<tool_call>{"name": "add", "arguments": "[1]"}</tool_call>', None, []),
        ('<tool_call>{"nam": "add"}</tool_call>', None, []),
        # A block that is no call is content, and reading goes on after its tag.
        (
            f'<tool_call>{{"name": "nope"}}</tool_call>\n<tool_call>{CALL}</tool_call>',
            '<tool_call>{"name": "nope"}</tool_call>\n',
            [PARIS],
        ),
        (f"<tool_call><tool_call>{CALL}", "<tool_call>", [PARIS]),
        # Cut short once the call began: the call keeps the arguments written so far.
        (
            'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Par',
            "Sure. ",
            [("get_weather", '{"city": "Par')],
        ),
        # Broken after its call began: the call ends, the rest is content.
        ('<tool_call>{"name": "add", "arguments": {"a": 1} oops', "oops", [("add", '{"a": 1}')]),
    ],
)
@pytest.mark.parametrize("size", [1, 3, None])
def test_auto(text: str, content: str | None, expected: list, size: int | None) -> None:
    want = (text if content is None else content, expected)
    assert read(AutoReader(NAMES), text, size or len(text)) == want


@pytest.mark.parametrize(
    ("text", "content", "expected"),
    [
        ('{"name": "add", "arguments": {"a": 1}}', "", [("add", '{"a": 1}')]),
        (
            '[{"name": "add", "arguments": {}}, {"name": "get_weather", "arguments": {"x": [1]}}]',
            "",
            [("add", "{}"), ("get_weather", '{"x": [1]}')],
        ),
        # Cut short by max_tokens: what was written of the calls; before any call: content.
        ('[{"name": "add", "arguments": {"a"', "", [("add", '{"a"')]),
        ('[{"name": "ad', '[{"name": "ad', []),
    ],
)
@pytest.mark.parametrize("size", [1, 3, None])
def test_forced(text: str, content: str, expected: list, size: int | None) -> None:
    assert read(ForcedReader(NAMES), text, size or len(text)) == (content, expected)


def test_scanner_commits_once_the_arguments_begin_and_then_grows_them() -> None:
    s = CallScanner(NAMES)
    prefix = '{"name": "add", "arguments": '
    for ch in prefix:
        assert s.feed(ch) and not s.committed and not s.not_call
    grown = []
    for ch in '{"a": [1, 2]}':
        assert s.feed(ch) and s.committed
        grown.append(s.arguments)
    assert grown[0] == "{" and grown[-1] == '{"a": [1, 2]}' and len(set(grown)) == len(grown)
    assert s.feed("}") and s.done and not s.feed(" ")


def test_scanner_finds_no_call_as_soon_as_it_can() -> None:
    s = CallScanner(NAMES)
    for ch in '{"name": "other"':
        s.feed(ch)
    assert s.not_call and not s.committed


def feed_output(text: str, mode: str, size: int) -> tuple[str, list[dict], int]:
    """(content, deltas, how many chunks carried argument pieces) of a stream of `text`."""
    out = ToolCallOutput(ToolPlan([{"function": {"name": n}} for n in NAMES], mode, None))
    content, deltas, with_arguments = "", [], 0
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    for i, piece in enumerate(pieces):
        sent, got = out.feed(piece, finished=i == len(pieces) - 1)
        content += sent
        deltas += got
        with_arguments += any(d["function"].get("arguments") for d in got)
    return content, deltas, with_arguments


def assemble(deltas: list[dict]) -> list[tuple[str, str]]:
    calls: dict[int, list[str]] = {}
    for d in deltas:
        if "id" in d:  # a call's first delta: everything but later argument pieces
            assert d["index"] not in calls and d["type"] == "function"
            assert d["id"].startswith("call_")
            calls[d["index"]] = [d["function"]["name"], d["function"]["arguments"]]
        else:
            assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
            calls[d["index"]][1] += d["function"]["arguments"]
    return [(name, arguments) for name, arguments in (calls[i] for i in sorted(calls))]


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (f'Checking.\n<tool_call>\n{CALL}\n</tool_call>\n<tool_call>{{"name": "add"}}', "auto"),
        ('[get_weather(city="Paris")]', "auto"),
        ('  {"name": "add", "parameters": {"a": 2}}', "auto"),
        (f'[{CALL}, {{"name": "add", "arguments": {{"a": 1, "b": [2, 3]}}}}]', "forced"),
    ],
)
@pytest.mark.parametrize("size", [1, 3])
def test_streamed_deltas_add_up_to_the_whole(text: str, mode: str, size: int) -> None:
    whole_content, whole_deltas, _ = feed_output(text, mode, len(text))
    content, deltas, with_arguments = feed_output(text, mode, size)
    assert content == whole_content
    assert assemble(deltas) == assemble(whole_deltas)
    if "<tool_call>" in text or mode == "forced":  # arguments arrive in many pieces
        assert with_arguments > 5


def test_stream_holds_back_only_what_may_start_a_call() -> None:
    out = ToolCallOutput(ToolPlan([{"function": {"name": "add"}}], "auto", None))
    assert out.feed("Sure, I will <tool", finished=False) == ("Sure, I will ", [])
    assert out.feed("box> here", finished=False) == ("<toolbox> here", [])
    assert out.feed(' <tool_call>{"name": "add", ', finished=False) == (" ", [])
    _, first = out.feed('"arguments": {"a', finished=False)
    assert [d["function"] for d in first] == [{"name": "add", "arguments": '{"a'}]
    assert out.feed('": 1}}</tool_call>', finished=True) == (
        "",
        [{"index": 0, "function": {"arguments": '": 1}'}}],
    )
