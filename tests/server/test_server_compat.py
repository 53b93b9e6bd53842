"""The payloads widely used clients send, as they send them, with the values they read back.

lm-eval (`local-completions`): loglikelihood scoring with echo + logprobs and max_tokens 0 or 1
over token-id prompts; generate_until with stops. vLLM's and SGLang's benchmark clients and
guidellm: streamed completions and chats with ignore_eos, best_of 1, stream_options, and
token-id prompts, counting tokens from the usage chunk. Plus the client's models.retrieve,
/tokenizer_info and prefix-cache hits in usage.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from openai import NotFoundError, OpenAI
from serverkit import MODEL_NAME, RunningServer

from intaglio import LLM, SamplingParams

CONTEXT = "def fibonacci(n):\n"
CONTINUATION = "    return n"


@pytest.fixture(scope="module")
def client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30.0)


def post(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client() as c:
        r = c.post(path, json={"model": MODEL_NAME, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def stream(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events of a streamed request, parsed, up to [DONE] (which must end it)."""
    with server.client() as c, c.stream("POST", path, json={"model": MODEL_NAME, **body}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def reference_prompt_logprobs(llm: LLM, ids: list[int]) -> list[float]:
    """Each prompt token's logprob after the tokens before it (the offline engine's)."""
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0))[0]
    assert out.prompt_logprobs is not None
    return [entry[t] for t, entry in zip(ids[1:], out.prompt_logprobs[1:]) if entry is not None]


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_lm_eval_loglikelihood(server: RunningServer, offline: LLM, max_tokens: int) -> None:
    """lm-eval sends [context + continuation] as token ids and sums the continuation's
    token_logprobs; with max_tokens 1 it drops the generated last entry, with 0 there is none."""
    ctx = offline.tokenizer.encode(CONTEXT)
    ids = ctx + offline.tokenizer.encode(CONTINUATION, add_special_tokens=False)
    body = {
        "prompt": [ids],
        "max_tokens": max_tokens,
        "logprobs": 1,
        "echo": True,
        "temperature": 0,
        "seed": 1234,
    }
    out = post(server, "/v1/completions", body)
    (choice,) = out["choices"]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(ids) + max_tokens
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    scored = lp["token_logprobs"][1 : len(ids)]
    expected = reference_prompt_logprobs(offline, ids)
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(scored, expected))
    # lm-eval's is_greedy: the top alternative at each position, beside the token itself.
    for i in range(len(ctx), len(ids)):
        top = lp["top_logprobs"][i]
        assert lp["tokens"][i] in top and 1 <= len(top) <= 2
        assert max(top.values()) >= lp["token_logprobs"][i] - 1e-6
    if max_tokens == 0:  # prompt only: nothing generated, nothing counted
        assert choice["text"] == offline.tokenizer.decode(ids)
        assert choice["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 0
    assert out["usage"]["prompt_tokens"] == len(ids)


def test_lm_eval_max_tokens_0_streams_the_prompt_only(server: RunningServer) -> None:
    chunks = stream(
        server,
        "/v1/completions",
        {"prompt": "import os", "max_tokens": 0, "echo": True, "logprobs": 0, "stream": True},
    )
    assert "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"]) == "import os"


def test_max_tokens_0_without_echo_is_refused(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_lm_eval_generate_until(server: RunningServer, offline: LLM) -> None:
    body = {
        "prompt": ["class Engine:", "import os"],
        "max_tokens": 24,
        "temperature": 0,
        "stop": ["\n\n", "Question:"],
        "seed": 1234,
    }
    out = post(server, "/v1/completions", body)
    params = SamplingParams(temperature=0.0, max_tokens=24, stop=("\n\n", "Question:"))
    expected = [o.outputs[0].text for o in offline.generate(body["prompt"], params)]
    assert [c["text"] for c in out["choices"]] == expected


@pytest.mark.parametrize("token_ids", [False, True])
def test_vllm_and_sglang_bench_completions(
    server: RunningServer, offline: LLM, token_ids: bool
) -> None:
    """benchmark_serving / `vllm bench serve` and SGLang's bench_serving (openai backends):
    streamed, ignore_eos, best_of 1, output tokens read from the usage chunk."""
    prompt: Any = offline.tokenizer.encode("hello world") if token_ids else "hello world"
    body = {
        "prompt": prompt,
        "temperature": 0.0,
        "best_of": 1,
        "max_tokens": 20,
        "logprobs": None,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    chunks = stream(server, "/v1/completions", body)
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == 20  # ignore_eos: exactly max_tokens
    assert usage["prompt_tokens"] == len(offline.tokenizer.encode("hello world"))
    texts = [ch["choices"][0]["text"] for ch in chunks[:-1]]
    assert all(ch["usage"] is None for ch in chunks[:-1])
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    assert "".join(texts) == offline.generate(["hello world"], params)[0].outputs[0].text
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_vllm_bench_chat_and_aiperf_shape(server: RunningServer) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_completion_tokens": 12,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    chunks = stream(server, "/v1/chat/completions", body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)


def test_guidellm_completion_shape(server: RunningServer) -> None:
    body = {
        "prompt": "a b c",
        "max_tokens": 8,
        "stop": None,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = stream(server, "/v1/completions", body)
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_cached_tokens_count_prefix_cache_hits(server: RunningServer) -> None:
    rng = random.Random(18)
    ids = [rng.randrange(3, 300) for _ in range(70)]  # unseen by other tests
    body = {"prompt": ids, "max_tokens": 1, "temperature": 0}
    first = post(server, "/v1/completions", body)["usage"]
    second = post(server, "/v1/completions", body)["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    # Whole blocks (16 tokens), always leaving the last prompt token to compute.
    assert second["prompt_tokens_details"] == {"cached_tokens": 64}
    chat = post(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
    )
    assert "cached_tokens" in chat["usage"]["prompt_tokens_details"]


def test_models_retrieve(client: OpenAI, server: RunningServer) -> None:
    card = client.models.retrieve(MODEL_NAME)
    assert card.id == MODEL_NAME and card.object == "model"
    with pytest.raises(NotFoundError):
        client.models.retrieve("no-such-model")


def test_tokenizer_info(server: RunningServer, offline: LLM) -> None:
    with server.client() as c:
        info = c.get("/tokenizer_info").json()
    assert info["tokenizer_class"] == type(offline.tokenizer).__name__
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>"
    assert info["vocab_size"] == len(offline.tokenizer)
    assert info["model_max_length"] == server.engine.max_model_len
