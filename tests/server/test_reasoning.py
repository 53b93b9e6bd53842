"""Reasoning output and thinking budgets on a tiny random checkpoint whose tokenizer has the
think markers and whose chat template opens the thinking: offline, and through the official
`openai` client, streaming and not, with n > 1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from openai import OpenAI
from serverkit import MODEL_NAME, run_server
from transformers import AutoTokenizer

from checkpoints import build_checkpoint, build_tokenizer
from intaglio import LLM, SamplingParams
from intaglio.errors import RequestError

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)
START, END = 320, 321  # the markers' ids: added after the 320 trained tokens
USER = [{"role": "user", "content": "def f(x):"}]


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("thinker")
    build_checkpoint("llama", folder, vocab_size=330)
    build_tokenizer(folder, 320)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(["<think>", "</think>"])  # plain added tokens: kept in the text
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [START, END]
    return str(folder)


@pytest.fixture(scope="module")
def offline(thinker: str) -> LLM:
    return LLM(thinker, dtype="float32", reasoning_parser="think")


@pytest.fixture(scope="module")
def client(thinker: str) -> Iterator[OpenAI]:
    with run_server(thinker, reasoning_parser="think") as server:
        yield OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60.0)


def _ids(llm: LLM, params: SamplingParams) -> list[list[int]]:
    return [c.token_ids for c in llm.chat(USER, params)[0].outputs]


def test_the_budget_forces_the_end_and_the_answer_follows(offline: LLM):
    # A seed whose samples, left alone, think past the largest budget (so the budget is what
    # ends their thinking below).
    seed = next(
        s
        for s in range(50)
        if all(
            END not in ids[:6]
            for ids in _ids(offline, SamplingParams(temperature=1.0, seed=s, n=3, max_tokens=6))
        )
    )
    for budget in (0, 1, 5):
        # ignore_eos: what follows the marker is the answer, however short the random model
        # would make it.
        params = SamplingParams(
            temperature=1.0,
            seed=seed,
            n=3,
            max_tokens=budget + 6,
            thinking_token_budget=budget,
            ignore_eos=True,
        )
        for ids in _ids(offline, params):
            assert ids.index(END) == budget  # budget thinking tokens, then the marker
            assert len(ids) == budget + 6  # the answer follows


def test_an_early_end_of_thinking_becomes_the_cue(offline: LLM):
    eager = dict(temperature=0.0, max_tokens=8, logit_bias={END: 100.0})
    assert _ids(offline, SamplingParams(**eager))[0][0] == END  # it would stop thinking at once
    out = offline.chat(USER, SamplingParams(**eager, min_thinking_tokens=3))[0].outputs[0]
    wait = offline.tokenizer.encode("Wait", add_special_tokens=False)
    assert len(wait) > 1  # a cue of several tokens: the rest is forced after the first
    assert out.token_ids[: len(wait) + 1] == [*wait, END]
    assert out.text.startswith("Wait</think>")
    cue = offline.chat(
        USER, SamplingParams(**eager, min_thinking_tokens=3, thinking_continuation="Hmm")
    )
    assert cue[0].outputs[0].text.startswith("Hmm</think>")


def _split(text: str) -> tuple[str, str]:
    reasoning, _, content = text.partition("</think>")
    return reasoning, content


def test_chat_splits_reasoning_and_content_exactly(client: OpenAI, offline: LLM):
    fields = dict(temperature=1.0, seed=9, n=2, max_tokens=12)
    budget = {"thinking_token_budget": 4, "min_thinking_tokens": 2}
    expected = [
        _split(c.text)
        for c in offline.chat(USER, SamplingParams(**fields, **budget))[0].outputs  # type: ignore[arg-type]
    ]
    assert all(content for _, content in expected)
    got = client.chat.completions.create(
        model=MODEL_NAME,
        messages=USER,
        extra_body=budget,
        **fields,  # type: ignore[arg-type]
    )
    for choice in got.choices:
        extra = choice.message.model_extra or {}
        assert (extra["reasoning_content"], choice.message.content) == expected[choice.index]
        assert extra["reasoning"] == extra["reasoning_content"]
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=USER,
        extra_body=budget,
        stream=True,
        **fields,  # type: ignore[arg-type]
    )
    reasoning, content = ["", ""], ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            reasoning[choice.index] += delta.get("reasoning_content") or ""
            content[choice.index] += choice.delta.content or ""
            assert delta.get("reasoning") == delta.get("reasoning_content")
    assert list(zip(reasoning, content)) == expected


def test_thinking_budgets_need_a_reasoning_parser(thinker: str):
    llm = LLM(thinker, dtype="float32")  # no --reasoning-parser
    with pytest.raises(RequestError) as e:
        llm.engine.add_request("r", [5, 6, 7], SamplingParams(min_thinking_tokens=3))
    assert e.value.param == "min_thinking_tokens" and "reasoning parser" in str(e.value)


def test_structured_output_constrains_the_answer_only(offline: LLM, client: OpenAI):
    """With a reasoning parser the grammar waits for the end of thinking: the thinking is free,
    the answer after the end marker fits the grammar, and the grammar's end ends the request."""
    params = SamplingParams(
        temperature=1.0,
        seed=3,
        max_tokens=20,
        thinking_token_budget=4,
        structured={"regex": "[abc]{5}"},
    )
    out = offline.chat(USER, params)[0].outputs[0]
    assert out.token_ids.index(END) == 4  # four free thinking tokens, then the marker
    reasoning, content = _split(out.text)
    assert re.fullmatch("[abc]{5}", content)
    assert set(reasoning) - set("abc")  # the thinking was not held to the grammar
    assert out.finish_reason == "stop"
    # A model that ends its thinking at once answers under the grammar straight away.
    eager = SamplingParams(
        temperature=0.0,
        max_tokens=12,
        logit_bias={END: 100.0},
        structured={"choice": ["yes", "no"]},
    )
    assert _split(offline.chat(USER, eager)[0].outputs[0].text)[1] in ("yes", "no")
    schema = {
        "type": "object",
        "properties": {"ok": {"enum": ["yes", "no"]}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    got = client.chat.completions.create(
        model=MODEL_NAME,
        messages=USER,
        temperature=1.0,
        seed=5,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        extra_body={"thinking_token_budget": 3},
    )
    message = got.choices[0].message
    assert json.loads(message.content) in ({"ok": "yes"}, {"ok": "no"})
    assert (message.model_extra or {})["reasoning_content"]
