"""Chat prompts: the tokenizer's template when it has one, a plain fallback when not."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from intaglio.server.chat_template import render_chat
from intaglio.server.errors import OpenAIError
from intaglio.server.protocol import ChatMessage

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
    "<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def messages(*pairs: tuple[str, object]) -> list[ChatMessage]:
    return [ChatMessage.model_validate({"role": r, "content": c}) for r, c in pairs]


def test_template_is_used_and_writes_its_own_special_tokens(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = TEMPLATE
    msgs = messages(("developer", "be brief"), ("user", [{"type": "text", "text": "hi"}]))
    text, add_special = render_chat(tok, msgs)
    assert text == "<s><system>be brief<user>hi<assistant>"  # developer maps to system
    assert add_special is False  # the template already wrote BOS
    text, _ = render_chat(tok, msgs, add_generation_prompt=False)
    assert not text.endswith("<assistant>")


def test_template_errors_are_400(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = TEMPLATE
    with pytest.raises(OpenAIError) as e:
        render_chat(tok, messages(("user", "a"), ("tool", "b")))
    assert e.value.status == 400 and "no tools here" in e.value.message


def test_fallback_without_template(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    assert not getattr(tok, "chat_template", None)
    text, add_special = render_chat(tok, messages(("system", "s"), ("user", "u")))
    assert text == "System: s\nUser: u\nAssistant:"
    assert add_special is True


def test_non_text_parts_are_refused(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    with pytest.raises(OpenAIError) as e:
        render_chat(tok, messages(("user", [{"type": "image_url", "image_url": {"url": "x"}}])))
    assert e.value.status == 400 and e.value.param == "messages.0.content"
