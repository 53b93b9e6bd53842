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


TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>"
    "{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[{{ c.function.name }}{{ c.function.arguments | tojson }}]"
    "{% endfor %}{% endfor %}"
    "{% if enable_thinking is defined and not enable_thinking %}<no_think>{% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def test_tools_history_and_template_variables_reach_the_template(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = TOOL_TEMPLATE
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    msgs = [
        ChatMessage.model_validate(m)
        for m in (
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "2"},
        )
    ]
    text, _ = render_chat(tok, msgs, False, TOOLS, {"enable_thinking": False})
    # Arguments reach the template as an object (it writes them with tojson), as vLLM does.
    assert text == '<tools>get_weather;</tools><user>hi<assistant>[f{"x": 1}]<tool>2<no_think>'


def test_template_variables_may_not_override_rendering_options(model_path: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = TOOL_TEMPLATE
    with pytest.raises(OpenAIError) as e:
        render_chat(tok, messages(("user", "a")), True, None, {"tokenize": True})
    assert e.value.status == 400 and e.value.param == "chat_template_kwargs"
