"""The official `openai` client against the real server; outputs checked against the offline LLM."""

from __future__ import annotations

import math

import pytest
from openai import OpenAI
from serverkit import MODEL_NAME, RunningServer, metrics

from intaglio import LLM, SamplingParams
from intaglio.api.chat_prompt import fallback_template

PROMPTS = ["a", "import os", "def f():", "hello world", "class Engine:"]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30.0)


def greedy(llm: LLM, prompts: list, max_tokens: int, **kw: object) -> list[str]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)  # type: ignore[arg-type]
    return [out.outputs[0].text for out in llm.generate(prompts, params)]


def test_models(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]


def test_completions_match_offline_greedy(client: OpenAI, offline: LLM) -> None:
    expected = greedy(offline, PROMPTS, 12)
    got = client.completions.create(model=MODEL_NAME, prompt=PROMPTS, max_tokens=12, temperature=0)
    assert [c.index for c in got.choices] == list(range(len(PROMPTS)))
    assert [c.text for c in got.choices] == expected
    prompt_tokens = sum(len(offline.tokenizer.encode(p)) for p in PROMPTS)
    assert got.usage is not None
    assert got.usage.prompt_tokens == prompt_tokens
    assert got.usage.completion_tokens == sum(
        len(o.outputs[0].token_ids)
        for o in offline.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=12))
    )


def test_token_id_prompts_match_text_prompts(client: OpenAI, offline: LLM) -> None:
    ids = [offline.tokenizer.encode(p) for p in PROMPTS[:2]]
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=8, temperature=0)
    assert [c.text for c in by_ids.choices] == greedy(offline, PROMPTS[:2], 8)
    single = client.completions.create(model=MODEL_NAME, prompt=ids[0], max_tokens=8, temperature=0)
    assert single.choices[0].text == by_ids.choices[0].text


def test_chat_matches_offline_on_rendered_prompt(client: OpenAI, offline: LLM) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "def f():"},
    ]
    got = client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        max_completion_tokens=10,
        temperature=0,  # type: ignore[arg-type]
    )
    text = fallback_template(messages, add_generation_prompt=True)  # the tiny tokenizer has none
    ids = offline.tokenizer.encode(text)
    choice = got.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == greedy(offline, [ids], 10)[0]
    assert got.usage is not None and got.usage.prompt_tokens == len(ids)


def test_streaming_completion_equals_non_streamed(client: OpenAI) -> None:
    kwargs = dict(model=MODEL_NAME, prompt="def f():", max_tokens=16, temperature=0)
    whole = client.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert len(finishes) > 1  # it really streamed
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_chat(client: OpenAI) -> None:
    kwargs = dict(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=12,
        temperature=0,
    )
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**kwargs, stream=True))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"


def test_n_samples_with_seed_match_offline(client: OpenAI, offline: LLM) -> None:
    got = client.completions.create(
        model=MODEL_NAME, prompt="import os", max_tokens=10, n=3, seed=1234, temperature=1.0
    )
    params = SamplingParams(n=3, seed=1234, temperature=1.0, max_tokens=10)
    expected = offline.generate(["import os"], params)[0]
    assert [c.index for c in got.choices] == [0, 1, 2]
    assert [c.text for c in got.choices] == [c.text for c in expected.outputs]
    assert len({c.text for c in got.choices}) > 1  # three different samples, not one copied
    again = client.completions.create(
        model=MODEL_NAME, prompt="import os", max_tokens=10, n=3, seed=1234, temperature=1.0
    )
    assert [c.text for c in again.choices] == [c.text for c in got.choices]


def test_streaming_n_samples_keep_their_indices(client: OpenAI) -> None:
    kwargs = dict(model=MODEL_NAME, prompt=["a", "def f():"], max_tokens=8, n=2, seed=7)
    whole = client.completions.create(**kwargs)  # type: ignore[call-overload]
    texts: dict[int, str] = {}
    for chunk in client.completions.create(**kwargs, stream=True):  # type: ignore[call-overload]
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert texts == {c.index: c.text for c in whole.choices}
    assert sorted(texts) == [0, 1, 2, 3]


def test_completion_logprobs(client: OpenAI, offline: LLM) -> None:
    got = client.completions.create(
        model=MODEL_NAME, prompt="a", max_tokens=6, temperature=0, logprobs=2
    )
    lp = got.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    ref = offline.generate(["a"], SamplingParams(temperature=0.0, max_tokens=6, logprobs=2))[0]
    ref_entries = ref.outputs[0].logprobs
    assert ref_entries is not None
    expected = [e[t] for e, t in zip(ref_entries, ref.outputs[0].token_ids)]
    assert len(lp.token_logprobs) == 6
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(lp.token_logprobs, expected))

    # Each position's top alternatives are the offline API's top 2 (plus the chosen token).
    def text(t: int) -> str:
        return offline.tokenizer.decode([t], skip_special_tokens=False)

    for top, ref_entry in zip(lp.top_logprobs, ref_entries, strict=True):
        want = {text(t): v for t, v in ref_entry.items()}
        assert top.keys() == want.keys()
        assert all(math.isclose(top[k], want[k], abs_tol=1e-4) for k in want)
    assert "".join(lp.tokens or []) == got.choices[0].text


def test_echo_with_logprobs(client: OpenAI, offline: LLM) -> None:
    got = client.completions.create(
        model=MODEL_NAME, prompt="import os", max_tokens=4, temperature=0, echo=True, logprobs=1
    )
    choice = got.choices[0]
    plain = greedy(offline, ["import os"], 4)[0]
    assert choice.text == "import os" + plain
    lp = choice.logprobs
    num_prompt = len(offline.tokenizer.encode("import os"))
    assert lp is not None and lp.token_logprobs is not None
    assert len(lp.token_logprobs) == num_prompt + 4
    assert lp.token_logprobs[0] is None and all(x is not None for x in lp.token_logprobs[1:])


def test_chat_logprobs(client: OpenAI) -> None:
    got = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = got.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == got.usage.completion_tokens  # type: ignore[union-attr]
    for tok in content:
        assert len(tok.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert math.isclose(tok.logprob, tok.top_logprobs[0].logprob, abs_tol=1e-6)


def test_stop_string(client: OpenAI, offline: LLM) -> None:
    full = greedy(offline, ["a"], 12)[0]
    stop = full[3:5]
    expected = full[: full.index(stop)]
    assert expected and "\ufffd" not in stop  # a stop that cuts the text after a few chars
    got = client.completions.create(
        model=MODEL_NAME, prompt="a", max_tokens=12, temperature=0, stop=[stop]
    )
    assert got.choices[0].text == expected
    assert got.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=MODEL_NAME, prompt="a", max_tokens=12, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == expected


def test_extras_and_ignored_fields_are_accepted(client: OpenAI, offline: LLM) -> None:
    got = client.completions.create(
        model=MODEL_NAME,
        prompt="a",
        max_tokens=6,
        temperature=0,
        user="someone",
        extra_body={"min_tokens": 6, "ignore_eos": True, "priority": 3, "top_k": 5},
    )
    assert got.choices[0].text == greedy(offline, ["a"], 6, min_tokens=6, ignore_eos=True)[0]
    assert got.usage is not None and got.usage.completion_tokens == 6


def test_logit_bias_matches_offline(client: OpenAI, offline: LLM) -> None:
    bias = {65: 100.0}
    got = client.completions.create(
        model=MODEL_NAME, prompt="a", max_tokens=5, temperature=0, logit_bias={"65": 100}
    )
    expected = greedy(offline, ["a"], 5, logit_bias=bias)[0]
    assert got.choices[0].text == expected != greedy(offline, ["a"], 5)[0]


def test_prefix_cache_hits_are_counted_and_salts_keep_tenants_apart(
    client: OpenAI, server: RunningServer, offline: LLM
) -> None:
    prompt = "def shared_prefix_for_caching(x, y, z):\n    return x + y + z\n" * 3
    expected = greedy(offline, [prompt], 6)
    hits = metrics(server.url)["intaglio_prefix_cache_hits_total"]
    salted = {"cache_salt": "tenant-a", "priority": -5}
    first = client.completions.create(
        model=MODEL_NAME, prompt=prompt, max_tokens=6, temperature=0, extra_body=salted
    )
    assert metrics(server.url)["intaglio_prefix_cache_hits_total"] == hits  # nothing cached yet
    other = client.completions.create(
        model=MODEL_NAME,
        prompt=prompt,
        max_tokens=6,
        temperature=0,
        extra_body={"cache_salt": "tenant-b"},
    )
    assert metrics(server.url)["intaglio_prefix_cache_hits_total"] == hits  # another tenant
    again = client.completions.create(
        model=MODEL_NAME, prompt=prompt, max_tokens=6, temperature=0, extra_body=salted
    )
    assert metrics(server.url)["intaglio_prefix_cache_hits_total"] > hits
    assert metrics(server.url)["intaglio_prefix_cache_queries_total"] > 0
    assert [first.choices[0].text, other.choices[0].text, again.choices[0].text] == expected * 3
