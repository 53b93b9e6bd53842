"""Function calling through the official `openai` client on a random-weight model.

A forced call (`required` or a named function) is written under a grammar built from the tools'
schemas, so whatever the weights, its arguments validate; streaming hands out the same calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from openai import OpenAI
from serverkit import MODEL_NAME, RunningServer, run_server

from checkpoints import build_checkpoint

# Schemas whose every valid value is short, so a random model always finishes them.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 6},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
}
# With $defs of its own: its references must still resolve once composed with other tools.
ROUTE = {
    "$defs": {
        "point": {"type": "array", "items": {"$ref": "#/$defs/coord"}, "maxItems": 2},
        "coord": {"type": "integer", "minimum": -9, "maximum": 9},
    },
    "type": "object",
    "properties": {
        "start": {"$ref": "#/$defs/point"},
        "end": {"$ref": "#/$defs/point"},
        "fast": {"type": "boolean"},
    },
    "required": ["start", "end", "fast"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER,
        },
    },
    {"type": "function", "function": {"name": "route", "parameters": ROUTE}},
    {"type": "function", "function": {"name": "now"}},  # no parameters: arguments are {}
]
SCHEMAS = {
    "get_weather": WEATHER,
    "route": ROUTE,
    "now": {"type": "object", "additionalProperties": False},
}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]

HISTORY = [  # an earlier call and its result
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
]


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A longer context than the shared tiny model: the tool prompt is long in a 320-token vocab.
    path = build_checkpoint("llama", tmp_path_factory.mktemp("tools"), max_position_embeddings=4096)
    with run_server(str(path)) as s:
        yield s


@pytest.fixture(scope="module")
def client(tool_server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{tool_server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def create(client: OpenAI, **kw: Any) -> Any:
    args = {"model": MODEL_NAME, "messages": USER, "tools": TOOLS, "max_tokens": 300, **kw}
    return client.chat.completions.create(**args)


def calls_of(message: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]


def assert_valid(calls: list[tuple[str, dict[str, Any]]]) -> None:
    for name, arguments in calls:
        jsonschema.validate(arguments, SCHEMAS[name])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_required_calls_validate(client: OpenAI, seed: int) -> None:
    got = create(
        client, tool_choice="required", seed=seed, temperature=1.0, parallel_tool_calls=False
    )
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = calls_of(choice.message)
    assert len(calls) == 1  # parallel_tool_calls=False: exactly one
    assert_valid(calls)
    assert all(c.id.startswith("call_") and c.type == "function" for c in choice.message.tool_calls)


@pytest.mark.parametrize("name", ["get_weather", "route", "now"])
def test_named_function_is_called_with_valid_arguments(client: OpenAI, name: str) -> None:
    choice = {"type": "function", "function": {"name": name}}
    got = create(client, tool_choice=choice, temperature=1.0, seed=7)
    calls = calls_of(got.choices[0].message)
    assert [n for n, _ in calls] == [name]
    assert_valid(calls)


def test_parallel_required_calls_validate(client: OpenAI) -> None:
    got = create(client, tool_choice="required", seed=11, temperature=1.0, max_tokens=600)
    calls = calls_of(got.choices[0].message)
    assert calls and got.choices[0].finish_reason == "tool_calls"
    assert_valid(calls)


def test_streamed_calls_equal_the_whole_response(client: OpenAI) -> None:
    kw: dict[str, Any] = {"tool_choice": "required", "seed": 5, "temperature": 1.0, "n": 2}
    whole = create(client, **kw)
    pieces: dict[int, dict[int, dict[str, str]]] = {}
    finish: dict[int, str | None] = {}
    for chunk in create(client, **kw, stream=True):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = pieces.setdefault(choice.index, {}).setdefault(
                    call.index, {"name": "", "arguments": ""}
                )
                assert call.function is not None
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
    for choice in whole.choices:
        streamed = [pieces[choice.index][i] for i in sorted(pieces[choice.index])]
        assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == calls_of(
            choice.message
        )
        assert finish[choice.index] == choice.finish_reason == "tool_calls"


def test_auto_returns_text_when_the_model_writes_no_call(client: OpenAI) -> None:
    # Random weights write no call syntax: auto leaves the answer as content.
    got = create(client, temperature=0.0, max_tokens=12)
    choice = got.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "length"
    assert choice.message.content


def test_tool_history_is_accepted(client: OpenAI) -> None:
    got = create(client, messages=HISTORY, tool_choice="none", max_tokens=4)
    assert got.choices[0].message.tool_calls is None


def test_tool_prompt_reaches_a_template_without_tool_support(tool_server: RunningServer) -> None:
    """The tiny tokenizer has no template: the tools and the history are written as Hermes
    text in the prompt the model sees."""
    with tool_server.client() as c:
        tokens = c.post("/tokenize", json={"messages": HISTORY, "tools": TOOLS}).json()["tokens"]
        text = c.post("/detokenize", json={"tokens": tokens}).json()["prompt"]
    assert "<tools>" in text and '"name": "route"' in text
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    )
    assert "<tool_response>\n22 degrees\n</tool_response>" in text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),  # no tools
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "tools"),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "tool_choice",
        ),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools.0.function.name",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}
                ],
                "tool_choice": "required",
            },
            "tools",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{no"},
                            }
                        ],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"chat_template_kwargs": {"tokenize": True}}, None),  # no template: nothing to override
    ],
)
def test_tool_errors_name_the_field(
    tool_server: RunningServer, fields: dict[str, Any], param: str | None
) -> None:
    body = {"messages": USER, "max_tokens": 2, **fields}
    with tool_server.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    if param is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_forced_call_stream_over_raw_http_has_openai_shape(tool_server: RunningServer) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": USER,
        "tools": TOOLS,
        "stream": True,
        "seed": 3,
        "temperature": 1.0,
        "max_tokens": 300,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    with tool_server.client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [ch["choices"][0]["delta"] for ch in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    with_calls = [d for d in deltas if "tool_calls" in d]
    assert len(with_calls) == 1
    (call,) = with_calls[0]["tool_calls"]
    assert set(call) == {"index", "id", "type", "function"} and call["index"] == 0
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
