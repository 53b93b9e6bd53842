"""A conversation to prompt text: the tokenizer's chat template, or a plain fallback without one.

Shared by the offline `LLM.chat`, `intaglio chat` and the server's chat endpoint.
"""

from __future__ import annotations

from typing import Any

Conversation = list[dict[str, str]]


def render_conversation(
    tokenizer: Any, conversation: Conversation, add_generation_prompt: bool = True
) -> tuple[str, bool]:
    """(prompt text, whether tokenizing it should add the tokenizer's special tokens).

    A real template writes BOS and friends itself; the fallback does not, so it lets the
    tokenizer add them. A template that rejects the messages raises ValueError.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                conversation, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except Exception as e:  # templates raise for role orders they do not allow, etc.
            raise ValueError(f"the model's chat template rejected the messages: {e}") from None
        return str(text), False
    return fallback_template(conversation, add_generation_prompt), True


def fallback_template(conversation: Conversation, add_generation_prompt: bool) -> str:
    """`Role: content` lines, then `Assistant:`; plain enough for a base model to continue."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)
