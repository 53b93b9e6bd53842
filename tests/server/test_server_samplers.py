"""The sampler fields over HTTP: they reach the engine (the offline API gives the same tokens),
a bad value is a 400 naming the field, and confidences come in responses and in streams."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI
from serverkit import MODEL_NAME, RunningServer
from test_server_errors import assert_openai_error

SAMPLERS = {
    "temperature": 0.8,
    "seed": 3,
    "top_n_sigma": 1.5,
    "typical_p": 0.9,
    "epsilon_cutoff": 0.001,
    "eta_cutoff": 0.001,
    "mirostat_tau": 4.0,
    "dry_multiplier": 0.8,
    "dry_sequence_breakers": ["\n", "."],
    "xtc_probability": 0.5,
    "xtc_threshold": 0.1,
    "bad_words": ["the"],
    "logprobs_mode": "processed_logprobs",
}


def test_sampler_fields_reach_the_engine(server: RunningServer, offline) -> None:
    from intaglio import SamplingParams

    body = {"model": MODEL_NAME, "prompt": "def f(x):", "max_tokens": 12, "ignore_eos": True}
    with server.client() as c:
        r = c.post("/v1/completions", json={**body, **SAMPLERS})
    assert r.status_code == 200, r.text
    params = SamplingParams(max_tokens=12, ignore_eos=True, **SAMPLERS)
    assert (
        r.json()["choices"][0]["text"] == offline.generate(["def f(x):"], params)[0].outputs[0].text
    )


def test_allowed_token_ids_bound_what_is_drawn(server: RunningServer, offline) -> None:
    from intaglio import SamplingParams

    fields = {"max_tokens": 8, "ignore_eos": True, "temperature": 1.0, "seed": 1}
    with server.client() as c:
        body = {"model": MODEL_NAME, "prompt": [5, 6, 7], "allowed_token_ids": [40, 41]}
        r = c.post("/v1/completions", json={**body, **fields})
    assert r.status_code == 200, r.text
    params = SamplingParams(allowed_token_ids=(40, 41), **fields)
    alone = offline.generate([[5, 6, 7]], params)[0].outputs[0]
    assert set(alone.token_ids) <= {40, 41}
    assert r.json()["choices"][0]["text"] == alone.text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"typical_p": 0.0}, "typical_p"),
        ({"mirostat_eta": -1.0}, "mirostat_eta"),
        ({"dry_base": 0.5}, "dry_base"),
        ({"xtc_probability": 2.0}, "xtc_probability"),
        ({"allowed_token_ids": [10**6]}, "allowed_token_ids"),
        ({"logits_processors": ["nope"]}, "logits_processors"),
        ({"logprobs_mode": "raw"}, "logprobs_mode"),
        ({"dry_allowed_length": "2"}, "dry_allowed_length"),
    ],
)
def test_bad_sampler_values_are_a_400(server: RunningServer, fields: dict, param: str) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "x", **fields})
    assert_openai_error(r, 400, param)


def test_confidences_are_returned_and_a_threshold_stops_the_trace(server: RunningServer) -> None:
    body = {"model": MODEL_NAME, "max_tokens": 10, "ignore_eos": True, "temperature": 0.0}
    ask = {"confidence_top_k": 4, "confidence_window": 3}
    with server.client() as c:
        chat = c.post(
            "/v1/chat/completions",
            json={**body, **ask, "messages": [{"role": "user", "content": "hi"}]},
        ).json()
        stopped = c.post(
            "/v1/completions", json={**body, **ask, "prompt": "x", "confidence_threshold": 1e9}
        ).json()
    choice = chat["choices"][0]
    assert len(choice["confidences"]) == chat["usage"]["completion_tokens"] == 10
    assert choice["group_confidences"][2] == pytest.approx(sum(choice["confidences"][:3]) / 3)
    # Every group is below an absurd threshold: the trace ends at its first full window.
    assert stopped["choices"][0]["finish_reason"] == "low_confidence"
    assert stopped["usage"]["completion_tokens"] == 3


def _extra(choice: Any, name: str) -> list[float]:
    """A field the openai client's models do not declare (kept as an extra)."""
    value = (choice.model_extra or {}).get(name)
    assert value is not None, f"no {name} on {choice}"
    return list(value)


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_streamed_confidences_concatenate_to_the_response_s(server: RunningServer, kind) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30.0)
    extra = {"confidence_top_k": 4, "confidence_window": 3, "seed": 5, "ignore_eos": True}
    args: dict[str, Any] = dict(model=MODEL_NAME, max_tokens=9, n=2, temperature=1.0)
    if kind == "chat":
        args["messages"] = [{"role": "user", "content": "hi"}]
        create: Any = client.chat.completions.create
    else:
        args["prompt"] = "def f(x):"
        create = client.completions.create
    # A salt of its own for each request: a prefix-cache hit would move the second one's logits
    # in their last digits, enough to flip a sampled token now and then.
    whole = {c.index: c for c in create(**args, extra_body={**extra, "cache_salt": "a"}).choices}
    streamed: dict[int, dict[str, list[float]]] = {i: {} for i in whole}
    chunks_with_confidences = 0
    for chunk in create(**args, stream=True, extra_body={**extra, "cache_salt": "b"}):
        for choice in chunk.choices:
            if not (choice.model_extra or {}).get("confidences"):
                continue
            chunks_with_confidences += 1
            for name in ("confidences", "group_confidences"):
                streamed[choice.index].setdefault(name, []).extend(_extra(choice, name))
    assert chunks_with_confidences > 2  # per chunk, not once at the end
    for i, choice in whole.items():
        assert len(_extra(choice, "confidences")) == 9
        for name in ("confidences", "group_confidences"):
            assert streamed[i][name] == _extra(choice, name)
    assert whole[0].model_extra != whole[1].model_extra  # two different samples
