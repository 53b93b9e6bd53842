"""Bad input over raw HTTP: always an OpenAI-shaped 4xx, never a 500, and the server lives on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from serverkit import MODEL_NAME, RunningServer, engine_idle, metrics, run_server, wait_until

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'"prompt"', b'{"prompt": "x",}', b"\xff\xfe"],
)
def test_malformed_json_is_400(server: RunningServer, body: bytes) -> None:
    with server.client() as c:
        r = c.post(COMPLETIONS, content=body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        (COMPLETIONS, {"prompt": 5}, "prompt"),
        (COMPLETIONS, {"prompt": []}, "prompt"),
        (COMPLETIONS, {"prompt": [[]]}, "prompt"),
        (COMPLETIONS, {"prompt": [1, -2]}, "prompt"),
        (COMPLETIONS, {"prompt": [1, 10**9]}, "prompt"),
        (COMPLETIONS, {"prompt": ""}, "prompt"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        (COMPLETIONS, {"prompt": "x", "temperature": "hot"}, "temperature"),
        (COMPLETIONS, {"prompt": "x", "temperature": -0.5}, "temperature"),
        (COMPLETIONS, {"prompt": "x", "top_p": 1.5}, "top_p"),
        (COMPLETIONS, {"prompt": "x", "n": 0}, "n"),
        (COMPLETIONS, {"prompt": "x", "n": 10**6}, "n"),
        (COMPLETIONS, {"prompt": "x", "logprobs": 50}, "logprobs"),
        (COMPLETIONS, {"prompt": "x", "stop": 5}, "stop"),
        (COMPLETIONS, {"prompt": "x", "stop": [""]}, None),
        (COMPLETIONS, {"prompt": "x", "seed": 2**70}, "seed"),
        (COMPLETIONS, {"prompt": "x", "stream": "yes"}, "stream"),
        (COMPLETIONS, {"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
        (COMPLETIONS, {"prompt": "x", "min_tokens": 20, "max_tokens": 5}, None),
        (COMPLETIONS, {"prompt": "x", "stop_token_ids": [10**6], "min_tokens": 2}, None),
        (COMPLETIONS, {"prompt": "x", "no_such_field": 1}, "no_such_field"),
        (COMPLETIONS, {"prompt": "x", "model": "gpt-4"}, "model"),
        (COMPLETIONS, {"prompt": "x", "suffix": "y"}, "suffix"),
        (COMPLETIONS, {"prompt": "x", "best_of": 3}, "best_of"),
        (COMPLETIONS, {"prompt": "x", "logit_bias": {"abc": 10}}, "logit_bias"),
        (COMPLETIONS, {"prompt": "x", "logit_bias": {"5": 1000}}, "logit_bias.5"),
        (CHAT, {"messages": "hi"}, "messages"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, None),
        (CHAT, {"messages": [{"role": "user", "content": 7}]}, None),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None),
        (CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
        (CHAT, {"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        (CHAT, {"messages": USER, "tools": [{"type": "function"}]}, "tools.0.function"),
        (CHAT, {"messages": USER, "response_format": {"type": "xml"}}, "response_format"),
        (CHAT, {"messages": USER, "max_completion_tokens": 10**6}, "max_completion_tokens"),
    ],
)
def test_invalid_parameters_are_400(
    server: RunningServer, path: str, fields: dict[str, Any], param: str | None
) -> None:
    with server.client() as c:
        r = c.post(path, json={"model": MODEL_NAME, **fields} if "model" not in fields else fields)
    assert_openai_error(r, 400, param)


def test_non_finite_numbers_are_400(server: RunningServer) -> None:
    body = b'{"prompt": "x", "temperature": NaN}'
    with server.client() as c:
        r = c.post(COMPLETIONS, content=body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "temperature")


def test_context_limits(server: RunningServer) -> None:
    limit = server.engine.max_model_len
    with server.client() as c:
        huge = c.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 10**12})
        err = assert_openai_error(huge, 400, "max_tokens")
        assert err["code"] == "context_length_exceeded"
        too_long = c.post(COMPLETIONS, json={"prompt": [5] * limit, "max_tokens": 1})
        assert assert_openai_error(too_long, 400)["code"] == "context_length_exceeded"
        # exactly at the limit is fine
        ok = c.post(COMPLETIONS, json={"prompt": [5] * (limit - 2), "max_tokens": 2})
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["completion_tokens"] <= 2


def test_unknown_routes_and_methods_use_openai_errors(server: RunningServer) -> None:
    with server.client() as c:
        assert_openai_error(c.get("/v1/nothing"), 404)
        assert_openai_error(c.get(COMPLETIONS), 405)


def test_server_survives_bad_input(server: RunningServer) -> None:
    with server.client() as c:
        for body in [b"{", b'{"prompt": null}', b'{"prompt": [[1], "x"]}', b"{}" * 1000]:
            c.post(COMPLETIONS, content=body, headers={"content-type": "application/json"})
        assert c.get("/health").status_code == 200
        r = c.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_tokenize_and_detokenize(server: RunningServer) -> None:
    with server.client() as c:
        tok = c.post("/tokenize", json={"prompt": "import os"}).json()
        assert tok["count"] == len(tok["tokens"]) > 0
        assert (
            c.post("/detokenize", json={"tokens": tok["tokens"]})
            .json()["prompt"]
            .endswith("import os")
        )
        chat = c.post("/tokenize", json={"messages": USER}).json()
        assert chat["count"] > tok["count"] - 2
        assert_openai_error(c.post("/detokenize", json={"tokens": [10**9]}), 400, "tokens")
        assert_openai_error(c.post("/tokenize", json={}), 400)


def test_disconnect_mid_stream_aborts_and_frees_blocks(server: RunningServer) -> None:
    url = server.url
    wait_until(lambda: engine_idle(url), what="an idle engine before the test")
    aborts_before = metrics(url).get('intaglio_requests_total{finish_reason="abort"}', 0.0)
    body = {"prompt": "a", "max_tokens": 500, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=30.0) as c:
        with c.stream("POST", COMPLETIONS, json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert '"text"' in first
            m = metrics(url)
            assert m["intaglio_num_requests_running"] == 1  # it is in flight, holding blocks
            assert m["intaglio_kv_cache_usage_ratio"] > 0
        # leaving the block closes the connection mid-stream
    wait_until(lambda: engine_idle(url), what="running=0 and KV usage 0 after the disconnect")
    aborted = metrics(url)['intaglio_requests_total{finish_reason="abort"}']
    assert aborted == aborts_before + 1


def test_disconnect_during_non_streaming_request_aborts(server: RunningServer) -> None:
    url = server.url
    wait_until(lambda: engine_idle(url), what="an idle engine before the test")
    aborts_before = metrics(url).get('intaglio_requests_total{finish_reason="abort"}', 0.0)
    body = {"prompt": "a", "max_tokens": 500, "ignore_eos": True}
    # The client leaves long before 500 tokens can be out: the tiny model needs about 0.5 ms
    # a step on a fast quiet machine (0.25 s in all), so 0.3 s was not always enough.
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=0.02)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post(COMPLETIONS, json=body)
    wait_until(lambda: engine_idle(url), what="the abandoned request to be aborted")
    aborted = metrics(url)['intaglio_requests_total{finish_reason="abort"}']
    assert aborted == aborts_before + 1


def test_metrics_exposes_the_engine_gauges(server: RunningServer) -> None:
    with server.client() as c:
        c.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 4, "ignore_eos": True})
    m = metrics(server.url)
    for name in (
        "intaglio_num_requests_running",
        "intaglio_num_requests_waiting",
        "intaglio_kv_cache_usage_ratio",
        "intaglio_num_preemptions_total",
        "intaglio_prompt_tokens_total",
        "intaglio_generation_tokens_total",
        "intaglio_time_to_first_token_seconds_count",
        "intaglio_time_per_output_token_seconds_count",
        "intaglio_e2e_request_latency_seconds_count",
    ):
        assert name in m, name
    assert "intaglio_prefix_cache_hit_rate" not in m  # no prefix cache yet: no fake zero
    assert m['intaglio_requests_total{finish_reason="length"}'] >= 1
    assert m["intaglio_generation_tokens_total"] >= 4


def test_api_key(model_path: str) -> None:
    with run_server(model_path, {"api_key": "s3cret"}) as s, s.client() as c:
        body = {"prompt": "a", "max_tokens": 2}
        assert_openai_error(c.post(COMPLETIONS, json=body), 401)
        wrong = {"Authorization": "Bearer nope"}
        assert_openai_error(c.post(COMPLETIONS, json=body, headers=wrong), 401)
        assert_openai_error(c.get("/v1/models", headers=wrong), 401)
        right = {"Authorization": "Bearer s3cret"}
        assert c.post(COMPLETIONS, json=body, headers=right).status_code == 200
        assert c.get("/health").status_code == 200  # probes need no key


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}


@pytest.mark.parametrize(
    ("path", "fields", "param", "words"),
    [
        (CHAT, {"response_format": SCHEMA_FORMAT}, "response_format", "wrong type"),
        (COMPLETIONS, {"guided_json": {"type": 5}}, "guided_json", "wrong type"),
        (COMPLETIONS, {"guided_regex": "("}, "guided_regex", "cannot compile"),
        (COMPLETIONS, {"seed": -1}, "seed", "greater than or equal to 0"),
        (COMPLETIONS, {"guided_json": _deep(300)}, None, "nests objects or arrays too deeply"),
        (COMPLETIONS, {"logit_bias": {"1_0": 1}}, "logit_bias", "must be token ids"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
            "messages.0.content",
            "needs its 'text'",
        ),
    ],
)
def test_errors_name_the_field_at_fault(
    server: RunningServer, path: str, fields: dict[str, Any], param: str | None, words: str
) -> None:
    body: dict[str, Any] = {"max_tokens": 2, **fields}
    body.update({"prompt": "a"} if path == COMPLETIONS else {"messages": USER, **fields})
    with server.client() as c:
        err = assert_openai_error(c.post(path, json=body), 400, param)
    assert words in err["message"], err
    assert "Error" not in err["message"] and "Invalid JSON" not in err["message"], err
