"""A conversation to prompt text: the tokenizer's chat template, or a plain fallback without one.

Shared by the offline `LLM.chat`, `intaglio chat` and the server's chat endpoint.
"""

from __future__ import annotations

import inspect
from typing import Any

from intaglio.errors import RequestError

Conversation = list[dict[str, Any]]


def render_conversation(
    tokenizer: Any,
    conversation: Conversation,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> tuple[str, bool]:
    """(prompt text, whether tokenizing it should add the tokenizer's special tokens).

    A real template writes BOS and friends itself; the fallback does not, so it lets the
    tokenizer add them. `tools` (OpenAI tool definitions) and `template_kwargs` (extra template
    variables such as `enable_thinking`) go to the template. A template that rejects the
    messages, or a template variable that would override a rendering option, raises ValueError.
    """
    if getattr(tokenizer, "chat_template", None):
        extra = template_kwargs or {}
        reserved = sorted(set(extra) & _options(tokenizer))
        if reserved:
            message = f"chat template variables may not override {reserved}"
            raise RequestError(message, "chat_template_kwargs")
        try:
            text = tokenizer.apply_chat_template(
                conversation,
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **extra,
            )
        except Exception as e:  # templates raise for role orders they do not allow, etc.
            raise ValueError(f"the model's chat template rejected the messages: {e}") from None
        return str(text), False
    return fallback_template(conversation, add_generation_prompt), True


def template_knows_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders tool definitions at all."""
    return "tools" in str(getattr(tokenizer, "chat_template", None) or "")


def _options(tokenizer: Any) -> set[str]:
    """apply_chat_template's own options: template variables may not override them."""
    names = inspect.signature(tokenizer.apply_chat_template).parameters
    return {n for n, p in names.items() if p.kind is not p.VAR_KEYWORD}


def fallback_template(conversation: Conversation, add_generation_prompt: bool) -> str:
    """`Role: content` lines, then `Assistant:`; plain enough for a base model to continue."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    if add_generation_prompt:
        lines.append("Assistant:")
    return "\n".join(lines)
