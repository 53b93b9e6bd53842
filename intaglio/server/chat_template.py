"""Chat messages of a request to a prompt (api/chat_prompt.py renders them)."""

from __future__ import annotations

import json
from typing import Any

from intaglio.api.chat_prompt import render_conversation, template_knows_tools
from intaglio.server.errors import bad_request
from intaglio.server.protocol import ChatMessage
from intaglio.server.tools import tool_conversation


def message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type == "text" and part.text is None:
            raise bad_request(
                "a text content part needs its 'text' as a string",
                f"messages.{index}.content",
            )
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"content part type {part.type!r} is not supported; only text parts are",
                f"messages.{index}.content",
                "unsupported",
            )
        texts.append(part.text)
    return "".join(texts)


def chat_length(messages: list[ChatMessage]) -> int:
    """Characters of the messages' text: a bound checked before any template or tokenizer."""
    return sum(len(message_text(m, i)) for i, m in enumerate(messages))


def render_chat(
    tokenizer: Any,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> tuple[str, bool]:
    """(prompt text, whether tokenizing it should add the tokenizer's special tokens).

    A real template writes BOS and friends itself; the fallback does not, so it lets the
    tokenizer add them. `tools` are OpenAI tool definitions (see tools.py for templates that
    do not render them); `template_kwargs` are extra template variables.
    """
    conversation = [_conversation_item(m, i) for i, m in enumerate(messages)]
    knows_tools = template_knows_tools(tokenizer)
    conversation = tool_conversation(conversation, tools, knows_tools)
    try:
        return render_conversation(
            tokenizer,
            conversation,
            add_generation_prompt,
            tools if knows_tools else None,
            template_kwargs,
        )
    except ValueError as e:
        raise bad_request(str(e), getattr(e, "param", None) or "messages") from None


def _conversation_item(m: ChatMessage, index: int) -> dict[str, Any]:
    """A message as templates take it: tool call arguments as objects, as vLLM passes them
    (templates write them with `tojson`)."""
    item: dict[str, Any] = {
        "role": "system" if m.role == "developer" else m.role,
        "content": message_text(m, index),
    }
    if m.name is not None:
        item["name"] = m.name
    if m.tool_call_id is not None:
        item["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        item["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments(call.function.arguments, index, j),
                },
            }
            for j, call in enumerate(m.tool_calls)
        ]
    return item


def _arguments(text: str, index: int, call_index: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise bad_request(
            "a tool call's arguments must be JSON text",
            f"messages.{index}.tool_calls.{call_index}.function.arguments",
        ) from None
