"""Chat messages to a prompt: the tokenizer's chat template, or a plain fallback without one."""

from __future__ import annotations

from typing import Any

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
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"content part type {part.type!r} is not supported; only text parts are",
                f"messages.{index}.content",
                "unsupported",
            )
        texts.append(part.text)
    return "".join(texts)


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
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                conversation, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except Exception as e:  # templates raise for role orders they do not allow, etc.
            message = f"the model's chat template rejected the messages: {e}"
            raise bad_request(message, "messages") from None
        return str(text), False
    return fallback_template(conversation, add_generation_prompt), True


def fallback_template(conversation: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """`Role: content` lines, then `Assistant:`; plain enough for a base model to continue."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)
