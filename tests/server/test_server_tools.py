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
from transformers import AutoTokenizer

from checkpoints import build_checkpoint, build_tokenizer
from intaglio.server.protocol import ChatCompletionRequest
from intaglio.server.tools import ToolPlan, plan_tools, writes_hermes

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


# The tiny tokenizer's 320 tokens, then the tags as tokens of their own (as in Qwen 2.5).
TAG_TOKENS = {"<tool_call>": 320, "</tool_call>": 321}
LT_BIAS = {"320": 100}  # makes the model open a `<tool_call>` block wherever one may start


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A longer context than the shared tiny model: the tool prompt is long in a 320-token vocab.
    path = build_checkpoint(
        "llama", tmp_path_factory.mktemp("tools"), max_position_embeddings=4096, vocab_size=322
    )
    build_tokenizer(path, 320)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.add_tokens(list(TAG_TOKENS))
    assert tokenizer.convert_tokens_to_ids(list(TAG_TOKENS)) == list(TAG_TOKENS.values())
    tokenizer.save_pretrained(str(path))
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


def stream_calls(client: OpenAI, **kw: Any) -> tuple[dict[int, list], dict[int, int], dict]:
    """Per choice: the calls its deltas add up to (name and arguments text, by index), how
    many chunks carried argument
    pieces, and its finish reason. Checks each delta's OpenAI shape on the way."""
    calls: dict[int, dict[int, dict[str, str]]] = {}
    pieces: dict[int, int] = {}
    finish: dict[int, str | None] = {}
    for chunk in create(client, **kw, stream=True):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.function is not None
                entry = calls.setdefault(choice.index, {})
                if call.id is not None:  # a call's first delta: id, type and name
                    assert call.index not in entry and call.type == "function"
                    assert call.function.name
                    entry[call.index] = {"name": call.function.name, "arguments": ""}
                else:  # later ones: only argument pieces
                    assert call.type is None and call.function.name is None
                entry[call.index]["arguments"] += call.function.arguments or ""
                pieces[choice.index] = pieces.get(choice.index, 0) + bool(call.function.arguments)
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
    assembled = {
        i: [(c["name"], c["arguments"]) for _, c in sorted(entry.items())]
        for i, entry in calls.items()
    }
    return assembled, pieces, finish


def raw_calls(message: Any) -> list[tuple[str, str]]:
    return [(c.function.name, c.function.arguments) for c in message.tool_calls]


@pytest.mark.parametrize(
    "kw",
    [
        {"tool_choice": "required", "seed": 5, "n": 2, "max_tokens": 600},  # parallel: a list
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "seed": 2},
    ],
)
def test_streamed_calls_equal_the_whole_response(client: OpenAI, kw: dict[str, Any]) -> None:
    kw = {"temperature": 1.0, **kw}
    whole = create(client, **kw)
    streamed, pieces, finish = stream_calls(client, **kw)
    assert len(whole.choices) == kw.get("n", 1)
    for choice in whole.choices:
        # The same calls, arguments equal character for character.
        assert streamed[choice.index] == raw_calls(choice.message)
        assert_valid(calls_of(choice.message))
        assert finish[choice.index] == choice.finish_reason == "tool_calls"
        # The arguments grow over several chunks rather than arriving whole.
        assert pieces[choice.index] >= 3
    if kw["tool_choice"] == "required":  # parallel calls: several in one choice
        assert max(len(c) for c in streamed.values()) >= 2


def test_auto_hermes_calls_stream_piece_by_piece(client: OpenAI) -> None:
    """`auto` with a strict tool: the grammar lets the model write text or `<tool_call>`
    blocks; a logit bias on the tag's first byte makes the random model open one."""
    tools = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}]
    kw: dict[str, Any] = {
        "tools": tools,
        "seed": 4,
        "temperature": 1.0,
        "logit_bias": LT_BIAS,
        "parallel_tool_calls": False,  # else the bias opens block after block
    }
    whole = create(client, **kw)
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" and message.tool_calls
    assert_valid(calls_of(message))
    streamed, pieces, finish = stream_calls(client, **kw)
    assert streamed[0] == raw_calls(message) and finish[0] == "tool_calls" and pieces[0] >= 3


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
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    first, rest = calls[0], calls[1:]
    assert set(first) == {"index", "id", "type", "function"} and first["index"] == 0
    assert first["type"] == "function" and first["function"]["name"] == "get_weather"
    assert rest and all(
        c == {"index": 0, "function": {"arguments": c["function"]["arguments"]}} for c in rest
    )
    arguments = "".join(c["function"]["arguments"] for c in calls)
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


STRICT_TOOLS = [{**t, "function": {**t["function"], "strict": True}} for t in TOOLS]


def test_auto_with_strict_tools_writes_text_or_valid_calls(client: OpenAI) -> None:
    """Random weights write junk; under the grammar it is text free of the call tag, then
    possibly calls that validate (the tag is one token of 322 here, so some seeds open one)."""
    kinds = set()
    for seed in range(6):
        got = create(
            client, tools=STRICT_TOOLS, seed=seed, temperature=1.0, parallel_tool_calls=seed < 3
        )
        choice = got.choices[0]
        assert "<tool_call>" not in (choice.message.content or "")
        if choice.message.tool_calls:
            assert_valid(calls_of(choice.message))
            assert choice.finish_reason == "tool_calls"
            kinds.add("calls")
        else:
            assert choice.finish_reason in ("stop", "length")
            kinds.add("text")
    assert kinds == {"calls", "text"}


def test_auto_without_strict_tools_is_unconstrained(client: OpenAI) -> None:
    """No grammar: the random model writes the tag token in its text, and what follows it is
    no call (so the whole answer is content)."""
    got = create(client, seed=0, temperature=1.0, logit_bias=LT_BIAS, max_tokens=8)
    assert got.choices[0].message.content.startswith("<tool_call><tool_call>")


def plan(hermes: bool = True, **fields: Any) -> ToolPlan | None:
    body = {"model": MODEL_NAME, "messages": USER, "tools": STRICT_TOOLS, **fields}
    return plan_tools(ChatCompletionRequest.model_validate(body), hermes)


def test_auto_is_constrained_only_for_strict_tools_of_a_hermes_model() -> None:
    got = plan()
    assert got is not None and got.mode == "auto" and got.structured is not None
    blocks = got.structured.tagged_json
    assert blocks is not None and (blocks.begin, blocks.max_blocks) == ("<tool_call>", None)
    one = plan(parallel_tool_calls=False)
    assert one is not None and one.structured is not None and one.structured.tagged_json
    assert one.structured.tagged_json.max_blocks == 1
    for unconstrained in (
        plan(tools=TOOLS),  # no strict tool: free, as vLLM
        plan(hermes=False),  # the model writes another format: the parser alone
        plan(response_format={"type": "json_object"}),  # the answer follows that instead
    ):
        assert unconstrained is not None and unconstrained.structured is None


def test_only_strict_tools_arguments_follow_their_schema_under_auto() -> None:
    tools = [STRICT_TOOLS[0], TOOLS[1], TOOLS[2]]  # strict, not strict, no parameters
    got = plan(tools=tools)
    assert got is not None and got.structured is not None and got.structured.tagged_json
    defs = json.loads(str(got.structured.tagged_json.schema))["$defs"]
    assert defs["tool0"] == WEATHER
    assert defs["tool1"] == {"type": "object", "additionalProperties": True}
    assert defs["tool2"] == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("template", "hermes"),
    [
        (None, True),  # no template: our prompt asks for Hermes blocks
        ("{{ messages }}", True),  # a template that does not render tools: the same
        ("{% for t in tools %}...<tool_call>{{ t }}</tool_call>{% endfor %}", True),  # Qwen
        ("{% if tools %}<|python_tag|>{{ tools }}{% endif %}", False),  # Llama 3
    ],
)
def test_which_models_write_hermes_blocks(template: str | None, hermes: bool) -> None:
    class Tokenizer:
        chat_template = template

    assert writes_hermes(Tokenizer()) is hermes
