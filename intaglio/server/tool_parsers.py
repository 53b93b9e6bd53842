"""A model's answer -> content and tool calls, read as it arrives, in the formats
instruction-tuned models use.

- Hermes (Qwen 2.5 / 3, SmolLM2, Hermes): `<tool_call>{"name": ..., "arguments": {...}}
  </tool_call>`, one block per call; the closing tag may be missing at the end. Read as it
  comes: text before a block is content, each call is committed once its name is complete
  (tool_scanner.py) and its arguments then grow.
- Llama 3 JSON: the whole answer is `{"name": ..., "parameters": {...}}` (or `"arguments"`),
  optionally after `<|python_tag|>`, several separated by `;`, or a JSON list of them.
- Pythonic (Llama 3.2 / 4): the whole answer is `[get_weather(city="Paris"), f()]`, with
  literal arguments. These two are read once the answer is complete.
- Forced calls (tools.py's grammar): a JSON call object or a list of them, read as it comes.

Every reader takes text in pieces (`feed`), then `finish()`; `take_content()` hands out the
text found to be no call since it was last asked, and `calls` are the committed calls. Each
decision depends only on the text read so far, so pieces of any size give what the whole
text gives. A Hermes block that turns out to be no call (not JSON, a function not among the
tools) is content, and reading goes on after its tag; text after the calls is content too; a
call cut short keeps the arguments written so far.
"""

from __future__ import annotations

import ast
import json
import uuid
from dataclasses import dataclass
from typing import Protocol

from intaglio.server.tool_scanner import CallScanner

HERMES_START = "<tool_call>"
HERMES_END = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_WHITESPACE = " \t\n\r"


class Call(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def arguments(self) -> str: ...  # JSON text of an object (see tool_scanner.py)


class Reader(Protocol):
    def take_content(self) -> str: ...

    @property
    def calls(self) -> list[Call]: ...

    def feed(self, text: str) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class HermesReader:
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.calls: list[Call] = []
        self._content: list[str] = []
        self._state = "text"  # text, tag (after <tool_call>), object, close, between (blocks)
        self._held = ""  # read but not content yet: a partial tag, or a block not yet a call
        self._scanner: CallScanner | None = None

    def take_content(self) -> str:
        out = "".join(self._content)
        self._content.clear()
        return out

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self._state == "text" and not self._held:  # plain text up to a possible tag
                j = text.find(HERMES_START[0], i)
                j = len(text) if j < 0 else j
                if j > i:
                    self._content.append(text[i:j])
                    i = j
                    continue
            replay = self._step(text[i])
            i += 1
            if replay:  # read again in the state the step ended in
                text, i = replay + text[i:], 0

    def finish(self) -> None:
        if self._state in ("text", "tag", "object"):  # a committed call holds nothing back
            self._content.append(self._held)
        self._held = ""

    def _step(self, ch: str) -> str:
        """Read one character; returns text to read again (a block that is no call)."""
        state = self._state
        if state == "object":
            return self._object_char(ch)
        self._held += ch
        if state == "text":
            if self._held == HERMES_START:
                self._state = "tag"
                return ""
            keep = _partial_tag(self._held, HERMES_START)
            self._content.append(self._held[: len(self._held) - keep])
            self._held = self._held[len(self._held) - keep :]
            return ""
        if state == "tag":
            if ch in _WHITESPACE:
                return ""
            self._held = self._held[:-1]
            self._scanner, self._state = CallScanner(self.names), "object"
            return self._object_char(ch)
        # close / between: whitespace, then the closing tag (close) or a next block (between)
        lead = self._held.lstrip(_WHITESPACE)
        tag = HERMES_END if state == "close" else HERMES_START
        if lead == tag:
            self._held = HERMES_START if state == "between" else ""
            self._state = "tag" if state == "between" else "between"
            return ""
        if not lead or tag.startswith(lead):
            return ""
        replay, self._held = self._held, ""
        self._state = "between" if state == "close" else "text"
        return replay

    def _object_char(self, ch: str) -> str:
        scanner = self._scanner
        assert scanner is not None
        was_committed = scanner.committed
        consumed = scanner.feed(ch)
        if not scanner.committed:
            if scanner.not_call:  # the tag is text; what followed it is read again
                self._content.append(HERMES_START)
                replay, self._held, self._state = self._held[len(HERMES_START) :] + ch, "", "text"
                return replay
            self._held += ch
            return ""
        if not was_committed:
            self.calls.append(scanner)
            self._held = ""
        if consumed:
            return ""
        # The object closed before this character, or broke after its call was committed.
        self._state = "close" if scanner.done else "between"
        return ch


def _partial_tag(text: str, tag: str) -> int:
    """How many trailing characters of `text` may be the start of `tag`."""
    for keep in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-keep:]):
            return keep
    return 0


class JsonCallsReader:
    """One JSON call object, a JSON list of them, or several objects separated by `;`."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.calls: list[Call] = []
        self.failed = False
        self._state = "start"  # start, item (an object expected), object, after, end
        self._in_list = False
        self._scanner: CallScanner | None = None

    def feed(self, text: str) -> None:
        for ch in text:
            if self.failed:
                return
            self.failed = not self._step(ch)

    @property
    def complete(self) -> bool:
        """Whether what was read is whole calls, every one with valid JSON arguments."""
        ended = self._state == "end" or (self._state == "after" and not self._in_list)
        if self.failed or not ended or not self.calls:
            return False
        return all(_is_object(c.arguments) for c in self.calls)

    def _step(self, ch: str) -> bool:
        if self._state == "object":
            scanner = self._scanner
            assert scanner is not None
            consumed = scanner.feed(ch)
            if scanner.committed and (not self.calls or self.calls[-1] is not scanner):
                self.calls.append(scanner)
            if scanner.done:
                self._state = "after"
            return consumed and not scanner.not_call
        if ch in _WHITESPACE:
            return True
        if self._state == "start" and ch == "[":
            self._in_list, self._state = True, "item"
        elif self._state in ("start", "item") and ch == "{":
            self._scanner, self._state = CallScanner(self.names), "object"
            return self._scanner.feed(ch)
        elif self._state == "after" and ch == ("," if self._in_list else ";"):
            self._state = "item"
        elif self._state == "after" and self._in_list and ch == "]":
            self._state = "end"
        else:
            return False
        return True


class ForcedReader:
    """An answer written under the forced-call grammar: calls as they come, no content (all
    of it is content only if no call was made, e.g. cut short by max_tokens early on)."""

    def __init__(self, names: set[str]) -> None:
        self._text: list[str] = []
        self._content = ""
        self._json = JsonCallsReader(names)

    @property
    def calls(self) -> list[Call]:
        return self._json.calls

    def take_content(self) -> str:
        out, self._content = self._content, ""
        return out

    def feed(self, text: str) -> None:
        self._text.append(text)
        self._json.feed(text)

    def finish(self) -> None:
        if not self.calls:
            self._content = "".join(self._text)


class AutoReader:
    """`tool_choice: auto`: Hermes blocks as they come; an answer that opens with `{`, `[` or
    the python tag is read as a whole once complete (Llama 3 JSON, pythonic)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self._head = ""  # the answer's opening, until it tells the format
        self._whole = False
        self._hermes: HermesReader | None = None
        self._calls: list[Call] = []
        self._content = ""  # a whole answer that holds no calls

    @property
    def calls(self) -> list[Call]:
        return self._hermes.calls if self._hermes is not None else self._calls

    def take_content(self) -> str:
        if self._hermes is not None:
            return self._hermes.take_content()
        out, self._content = self._content, ""
        return out

    def feed(self, text: str) -> None:
        if self._hermes is not None:
            self._hermes.feed(text)
            return
        self._head += text
        lead = self._head.lstrip(_WHITESPACE)
        if self._whole or not lead:
            return
        if lead.startswith(PYTHON_TAG) or lead[0] in "{[":
            self._whole = True
        elif not PYTHON_TAG.startswith(lead):
            self._start_hermes()

    def finish(self) -> None:
        if self._whole:
            calls = _whole_calls(self._head, self.names)
            if calls is None:
                self._content = self._head
            else:
                self._calls = calls
            return
        if self._hermes is None:
            self._start_hermes()
        assert self._hermes is not None
        self._hermes.finish()

    def _start_hermes(self) -> None:
        self._hermes = HermesReader(self.names)
        self._hermes.feed(self._head)


def _whole_calls(text: str, names: set[str]) -> list[Call] | None:
    """Llama 3 JSON calls or pythonic calls making up the whole answer, or None."""
    body = text.strip().removeprefix(PYTHON_TAG).strip()
    reader = JsonCallsReader(names)
    reader.feed(body)
    if reader.complete:
        return reader.calls
    if body.startswith("["):
        return _pythonic(body, names)
    return None


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _pythonic(body: str, names: set[str]) -> list[Call] | None:
    try:
        tree = ast.parse(body, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(tree, ast.List) or not tree.elts:
        return None
    calls: list[Call] = []
    for node in tree.elts:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
            return None
        if node.func.id not in names:
            return None
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        if None in args:  # `**kwargs`
            return None
        try:  # no JSON text exists: the arguments are serialized
            arguments = json.dumps(args, ensure_ascii=False)
        except (TypeError, ValueError):  # sets, bytes, complex: no JSON for them
            return None
        calls.append(ParsedCall(node.func.id, arguments))
    return calls
