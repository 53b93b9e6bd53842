"""Chat messages of a request to a prompt (api/chat_prompt.py renders them)."""

from __future__ import annotations

from typing import Any

from intaglio.api.chat_prompt import render_conversation
from intaglio.server.errors import bad_request
from intaglio.server.protocol import ChatMessage


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
    tokenizer: Any, messages: list[ChatMessage], add_generation_prompt: bool = True
) -> tuple[str, bool]:
    """(prompt text, whether tokenizing it should add the tokenizer's special tokens).

    A real template writes BOS and friends itself; the fallback does not, so it lets the
    tokenizer add them.
    """
    conversation: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        item = {
            "role": "system" if m.role == "developer" else m.role,
            "content": message_text(m, i),
        }
        if m.name is not None:
            item["name"] = m.name
        conversation.append(item)
    try:
        return render_conversation(tokenizer, conversation, add_generation_prompt)
    except ValueError as e:
        raise bad_request(str(e), "messages") from None
