"""POST /v1/embeddings through the official `openai` client and raw HTTP: vectors equal the
offline engine's (which tests/engine/test_embeddings.py checks against transformers)."""

from __future__ import annotations

import base64
import math
import threading
from typing import Any

import numpy as np
import pytest
from openai import OpenAI
from serverkit import MODEL_NAME, RunningServer, engine_idle, metrics, run_server, wait_until

from intaglio import LLM, SamplingParams

TEXTS = ["a", "import os", "def f():\n    return 1", "hello world"]
IDS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17]]


def _client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30.0)


def _close(got: list[float], expected: list[float] | None) -> bool:
    assert expected is not None
    return len(got) == len(expected) and all(
        math.isclose(a, b, rel_tol=1e-4, abs_tol=2e-6) for a, b in zip(got, expected)
    )


def _offline(llm: LLM, inputs: list, pooling: str = "last", normalize: bool = True) -> list:
    return [o.embedding for o in llm.embed(inputs, pooling=pooling, normalize=normalize)]


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_client_round_trip(server: RunningServer, offline: LLM, encoding_format) -> None:
    """With no format given the client asks for base64 and decodes it itself; asked for
    base64, it hands the text on (little-endian float32 bytes)."""
    extra = {} if encoding_format is None else {"encoding_format": encoding_format}
    got = _client(server).embeddings.create(model=MODEL_NAME, input=TEXTS, **extra)
    assert got.object == "list" and got.model == MODEL_NAME
    assert [d.index for d in got.data] == list(range(len(TEXTS)))
    assert all(d.object == "embedding" for d in got.data)
    for d, expected in zip(got.data, _offline(offline, TEXTS)):
        vector = d.embedding
        if encoding_format == "base64":
            assert isinstance(vector, str)
            vector = np.frombuffer(base64.b64decode(vector), dtype="<f4").tolist()
        assert _close(vector, expected)
        assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)
    num_tokens = sum(len(offline.tokenizer.encode(t)) for t in TEXTS)
    assert got.usage.prompt_tokens == got.usage.total_tokens == num_tokens


def test_input_forms_and_normalize(server: RunningServer, offline: LLM) -> None:
    client = _client(server)
    one = client.embeddings.create(model=MODEL_NAME, input="hello world")
    assert len(one.data) == 1 and _close(one.data[0].embedding, _offline(offline, TEXTS[3:])[0])
    ids = client.embeddings.create(model=MODEL_NAME, input=IDS)
    for d, expected in zip(ids.data, _offline(offline, IDS)):
        assert _close(d.embedding, expected)
    assert ids.usage.prompt_tokens == sum(len(i) for i in IDS)
    flat = client.embeddings.create(model=MODEL_NAME, input=IDS[1])
    assert _close(flat.data[0].embedding, ids.data[1].embedding)
    raw = client.embeddings.create(
        model=MODEL_NAME, input=IDS, extra_body={"normalize": False}, encoding_format="float"
    )
    for d, expected in zip(raw.data, _offline(offline, IDS, normalize=False)):
        assert _close(d.embedding, expected)
        assert not math.isclose(sum(x * x for x in d.embedding), 1.0, rel_tol=1e-3)


def test_embeddings_beside_completions(server: RunningServer, offline: LLM) -> None:
    """Embedding and generation requests share the engine's batches; both stay exact."""
    client = _client(server)
    prompts = ["def f():", "class Engine:"]
    expected = [
        o.outputs[0].text
        for o in offline.generate(prompts, SamplingParams(temperature=0.0, max_tokens=24))
    ]
    texts: list[str] = []

    def complete() -> None:
        got = client.completions.create(
            model=MODEL_NAME, prompt=prompts, max_tokens=24, temperature=0
        )
        texts.extend(c.text for c in got.choices)

    thread = threading.Thread(target=complete)
    thread.start()
    vectors = [client.embeddings.create(model=MODEL_NAME, input=TEXTS) for _ in range(3)]
    thread.join()
    assert texts == expected
    for got in vectors:
        for d, e in zip(got.data, _offline(offline, TEXTS)):
            assert _close(d.embedding, e)


def test_mean_pooling_flag(model_path: str, offline: LLM) -> None:
    with run_server(model_path, {"pooling": "mean"}) as s:
        got = _client(s).embeddings.create(model=MODEL_NAME, input=TEXTS, encoding_format="float")
    for d, expected in zip(got.data, _offline(offline, TEXTS, pooling="mean")):
        assert _close(d.embedding, expected)
    last = _offline(offline, TEXTS[2:3])[0]  # several tokens: the mean is not the last one
    assert not _close(got.data[2].embedding, last)


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": ""}, "input", "empty string"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["a", ""]}, "input", "input 1 is an empty string"),
        ({"input": [[]]}, "input", None),
        ({"input": [5] * 513}, "input", "maximum context length is 512"),
        ({"input": "x " * 600}, "input", "maximum context length is 512"),
        ({"input": [[5], [320]]}, "input", "out of range"),
        ({"input": [-1]}, "input", None),
        ({"input": 5}, "input", None),
        ({"input": ["a", 1]}, "input", None),
        ({"input": None}, "input", None),
        ({}, "input", None),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", None),
        ({"input": "a", "dimensions": 16}, "dimensions", "not supported"),
        ({"input": "a", "normalize": "yes"}, "normalize", None),
        ({"input": "a", "model": "other"}, "model", "does not exist"),
        ({"input": "a", "pooling": "mean"}, "pooling", "unknown field"),
        ({"input": "a", "user": 5}, "user", None),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    server: RunningServer, fields: dict[str, Any], param: str, words: str | None
) -> None:
    with server.client() as c:
        r = c.post("/v1/embeddings", json=fields)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert words is None or words in err["message"], err
    if "maximum context length" in (words or ""):
        assert err["code"] == "context_length_exceeded"


def test_counted_in_metrics_and_leaves_nothing(server: RunningServer) -> None:
    before = metrics(server.url)
    with server.client() as c:
        r = c.post("/v1/embeddings", json={"input": IDS})
    assert r.status_code == 200
    wait_until(lambda: engine_idle(server.url), what="the engine to go idle")
    after = metrics(server.url)
    key = 'intaglio_requests_total{finish_reason="stop"}'
    assert after[key] - before.get(key, 0.0) == len(IDS)
    tokens = "intaglio_prompt_tokens_total"
    assert after[tokens] - before[tokens] == sum(len(i) for i in IDS)
