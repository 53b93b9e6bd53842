"""One choice's answer text -> content and tool calls, whole or fed piece by piece.

Streaming sends content as it comes but holds back the text from where a call may begin
(tool_parsers.call_start / undecided_tail); when the choice finishes, the held text is parsed
exactly as a whole response is, so a stream's pieces add up to the whole response. Calls are
sent whole, in the choice's last chunk.
"""

from __future__ import annotations

from typing import Any

from intaglio.server.tool_parsers import (
    call_start,
    parse_forced_calls,
    parse_tool_calls,
    tool_call_id,
    undecided_tail,
)
from intaglio.server.tools import ToolPlan


class ToolCallOutput:
    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._text = ""
        self._sent = 0  # characters of _text already handed out as content

    def feed(self, text: str, finished: bool) -> tuple[str, list[dict[str, Any]]]:
        """(content to send now, tool calls in OpenAI's shape: only once finished)."""
        self._text += text
        if finished:
            content, calls = self._parse()
        else:
            content, calls = self._text[: self._safe()], []
        piece = content[self._sent :]
        self._sent = max(self._sent, len(content))
        return piece, calls

    def _safe(self) -> int:
        """How much of the text surely precedes any call."""
        if self.plan.mode == "forced":
            return 0
        start = call_start(self._text)
        if start is not None:
            return start
        return len(self._text) - undecided_tail(self._text)

    def _parse(self) -> tuple[str, list[dict[str, Any]]]:
        if self.plan.mode == "forced":
            forced = parse_forced_calls(self._text)
            content, parsed = ("", forced) if forced is not None else (self._text, [])
        else:
            content, parsed = parse_tool_calls(self._text, self.plan.names)
        calls = [
            {
                "id": tool_call_id(),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in parsed
        ]
        return content, calls
