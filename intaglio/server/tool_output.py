"""One choice's answer -> content and tool-call deltas, whole or fed piece by piece.

A reader (tool_parsers.py) splits the answer into content and calls as it arrives; this turns
what it found since the last piece into OpenAI's stream shape: a call's first delta carries
its `index`, `id`, `type` and `function.name` with the arguments so far, later ones only the
`index` and the new `function.arguments` text. A whole response is the same read done in one
piece, so its calls are exactly what a stream's deltas add up to.
"""

from __future__ import annotations

from typing import Any

from intaglio.server.tool_parsers import AutoReader, ForcedReader, Reader, tool_call_id
from intaglio.server.tools import ToolPlan


class ToolCallOutput:
    def __init__(self, plan: ToolPlan) -> None:
        forced = plan.mode == "forced"
        self._reader: Reader = ForcedReader(plan.names) if forced else AutoReader(plan.names)
        self._sent_arguments: list[int] = []  # per call: characters of its arguments sent
        self._ids: list[str] = []

    @property
    def has_calls(self) -> bool:
        return bool(self._ids)

    def feed(self, text: str, finished: bool) -> tuple[str, list[dict[str, Any]]]:
        """(content to send now, tool-call deltas to send now)."""
        self._reader.feed(text)
        if finished:
            self._reader.finish()
        content = self._reader.take_content()
        deltas: list[dict[str, Any]] = []
        for i, call in enumerate(self._reader.calls):
            if i == len(self._ids):
                self._ids.append(tool_call_id())
                self._sent_arguments.append(len(call.arguments))
                function = {"name": call.name, "arguments": call.arguments}
                deltas.append(
                    {"index": i, "id": self._ids[i], "type": "function", "function": function}
                )
            elif len(call.arguments) > self._sent_arguments[i]:
                piece = call.arguments[self._sent_arguments[i] :]
                self._sent_arguments[i] += len(piece)
                deltas.append({"index": i, "function": {"arguments": piece}})
        return content, deltas
