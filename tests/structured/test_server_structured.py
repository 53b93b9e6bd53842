"""response_format and guided_* extras through the official openai client."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from intaglio.model.checkpoint import EMBEDDED_MODEL
from tests.server.serverkit import MODEL_NAME, RunningServer, run_server

openai = pytest.importorskip("openai")

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "n": {"type": "integer"}},
    "required": ["city", "n"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server(str(EMBEDDED_MODEL)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: RunningServer):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x")


def _chat(client, **kw) -> str:
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=60, **kw
    )
    return out.choices[0].message.content


def test_json_schema_strict(client) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    for seed in range(3):
        data = json.loads(_chat(client, response_format=fmt, seed=seed))
        assert set(data) == {"city", "n"} and isinstance(data["n"], int)
        assert len(data["city"]) <= 10


def test_json_object(client) -> None:
    """Every answer that ends by itself is a JSON object (a random model may also run out of
    tokens inside a long string: then it was cut, not wrong)."""
    ended = 0
    for seed in range(6):
        out = client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"},
            seed=seed,
            max_completion_tokens=200,
        ).choices[0]
        if out.finish_reason == "stop":
            ended += 1
            assert isinstance(json.loads(out.message.content), dict)
    assert ended >= 1


def test_guided_extras(client) -> None:
    text = _chat(client, extra_body={"guided_regex": r"[0-9]{3}-[a-z]{2}"}, seed=0)
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", text)
    choice = (
        client.completions.create(
            model=MODEL_NAME, prompt="x", max_tokens=8, extra_body={"guided_choice": ["up", "down"]}
        )
        .choices[0]
        .text
    )
    assert choice in ("up", "down")


def test_unsupported_schema_is_a_400(client) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "array", "contains": {}}},
    }
    with pytest.raises(openai.BadRequestError, match="contains"):
        _chat(client, response_format=fmt)
    with pytest.raises(openai.BadRequestError, match="at most one"):
        _chat(client, response_format={"type": "json_object"}, extra_body={"guided_regex": "a"})


def test_guided_decoding_backend_is_chosen_per_request(client) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown backend"):
        _chat(client, extra_body={"guided_regex": "a", "guided_decoding_backend": "nope"})
    pytest.importorskip("xgrammar")
    body = {"guided_regex": r"[0-9]{3}-[a-z]{2}", "guided_decoding_backend": "xgrammar"}
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", _chat(client, extra_body=body, seed=0))
