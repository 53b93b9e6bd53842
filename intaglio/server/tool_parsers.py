"""A model's text output -> the tool calls in it, for the formats instruction-tuned models use.

- Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call
  (Qwen 2.5 / 3, SmolLM2, Hermes); the closing tag may be missing at the end of the output.
- Llama 3 JSON: the whole output is `{"name": ..., "parameters": {...}}` (or `"arguments"`),
  optionally after `<|python_tag|>`, several separated by `;`, or a JSON list of them.
- Pythonic: the whole output is a list of calls, `[get_weather(city="Paris"), f()]` (Llama 3.2
  and 4's pythonic format), with literal arguments.

Calls are found only where one begins (`call_start`): the text before it is content, and a
call that does not parse, or names a function not among the request's tools, leaves the whole
output as content. The same split serves streaming (chat.py holds back the text from where a
call may begin), so streamed and whole responses agree.
"""

from __future__ import annotations

import ast
import json
import uuid
from dataclasses import dataclass
from typing import Any

HERMES_START = "<tool_call>"
HERMES_END = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object


def call_start(text: str) -> int | None:
    """Where tool calls begin in `text`, or None when no call has begun (yet)."""
    lead = text.lstrip()
    if lead.startswith(PYTHON_TAG) or lead[:1] in ("{", "["):
        return 0
    at = text.find(HERMES_START)
    return None if at < 0 else at


def undecided_tail(text: str) -> int:
    """How many trailing characters of `text` (in which no call has begun) might still turn out
    to be the start of one; a stream holds them back."""
    lead = text.lstrip()
    if not lead or PYTHON_TAG.startswith(lead):
        return len(text)  # all whitespace so far, or the python tag being written
    for keep in range(min(len(HERMES_START) - 1, len(text)), 0, -1):
        if HERMES_START.startswith(text[-keep:]):
            return keep
    return 0


def parse_tool_calls(text: str, tool_names: set[str]) -> tuple[str, list[ParsedCall]]:
    """(content, calls): the text before the calls, and the calls; ([text], []) if none."""
    start = call_start(text)
    if start is None:
        return text, []
    body = text[start:].strip()
    if body.startswith(HERMES_START):
        calls = _hermes(body)
    else:
        body = body.removeprefix(PYTHON_TAG).strip()
        calls = _json_calls(body)
        if calls is None and body.startswith("["):
            calls = _pythonic(body)
    if not calls or any(c.name not in tool_names for c in calls):
        return text, []
    return text[:start], calls


def parse_forced_calls(text: str) -> list[ParsedCall] | None:
    """The calls of an output written under the forced-call grammar (tools.py): one call
    object, or a JSON list of them; None if it is not that (cut short by max_tokens)."""
    return _json_calls(text.strip())


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(obj: Any) -> ParsedCall | None:
    """A call from a decoded {"name", "arguments" | "parameters"} object."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as JSON text
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], json.dumps(args, ensure_ascii=False))


def _hermes(body: str) -> list[ParsedCall] | None:
    calls = []
    decoder = json.JSONDecoder()
    rest = body
    while rest:
        if not rest.startswith(HERMES_START):
            return None
        inner = rest[len(HERMES_START) :].lstrip()
        try:
            obj, end = decoder.raw_decode(inner)
        except json.JSONDecodeError:
            return None
        call = _call(obj)
        if call is None:
            return None
        calls.append(call)
        rest = inner[end:].lstrip()
        if rest.startswith(HERMES_END):
            rest = rest[len(HERMES_END) :].lstrip()
        elif rest:
            return None  # something else follows an unclosed block
    return calls


def _json_calls(body: str) -> list[ParsedCall] | None:
    """One JSON call object, several separated by `;`, or a JSON list of them."""
    decoder = json.JSONDecoder()
    objects: list[Any] = []
    rest = body
    while rest:
        try:
            obj, end = decoder.raw_decode(rest)
        except json.JSONDecodeError:
            return None
        objects.extend(obj if isinstance(obj, list) else [obj])
        rest = rest[end:].strip().removeprefix(";").strip()
    calls = [_call(obj) for obj in objects]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _pythonic(body: str) -> list[ParsedCall] | None:
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(tree, ast.List) or not tree.elts:
        return None
    calls = []
    for node in tree.elts:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
            return None
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        if None in args:  # `**kwargs`
            return None
        try:
            arguments = json.dumps(args, ensure_ascii=False)
        except (TypeError, ValueError):  # sets, bytes, complex: no JSON for them
            return None
        calls.append(ParsedCall(node.func.id, arguments))
    return calls
