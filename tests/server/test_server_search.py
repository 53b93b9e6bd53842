"""Search through the server: beam search as vLLM's clients ask for it, and search programs in
extra_body, giving what the same programs give offline with the same seed."""

from __future__ import annotations

import httpx
import pytest
from openai import BadRequestError, OpenAI
from serverkit import MODEL_NAME

from intaglio import LLM, SamplingParams
from intaglio.search import best_of_n, mean_logprob, run_programs, self_consistency
from intaglio.server.search import _LAST_NUMBER, extractor

PROMPT = "one two three four"


def test_beam_search_equals_offline(server, offline: LLM) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x")
    got = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        max_tokens=8,
        n=2,
        best_of=3,
        extra_body={"use_beam_search": True, "length_penalty": 0.5},
    )
    want = offline.generate(
        [PROMPT],
        SamplingParams(n=2, best_of=3, use_beam_search=True, length_penalty=0.5, max_tokens=8),
    )[0]
    assert [c.text for c in got.choices] == [o.text for o in want.outputs]


def _offline_program(offline: LLM, method: str, **sampling):
    root_ids = offline.tokenizer.encode(PROMPT)

    async def program(s):
        root = s.root(root_ids)
        if method == "best_of_n":
            return await best_of_n(s, root, 4, mean_logprob, **sampling)
        extract = extractor(__import__("re").compile(_LAST_NUMBER))
        vote = await self_consistency(s, root, 5, extract, **sampling)
        agreeing = [b for b in vote.branches if extract(b.text) == vote.answer]
        return (agreeing or vote.branches)[0]

    return run_programs(offline.engine, [program])[0].value


@pytest.mark.parametrize("method", ["best_of_n", "self_consistency"])
def test_search_program_equals_offline(server, offline: LLM, method: str) -> None:
    sampling = dict(temperature=0.9, top_p=1.0, max_tokens=10, seed=17)
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x")
    got = client.completions.create(
        model=MODEL_NAME,
        prompt=PROMPT,
        extra_body={"search": {"method": method, "n": 4 if method == "best_of_n" else 5}},
        **sampling,
    )
    want = _offline_program(offline, method, **sampling)
    assert got.choices[0].text == want.text
    info = got.model_extra["search"][0]
    assert info["generated_tokens"] >= len(want.token_ids) - want.num_root_tokens
    assert info["peak_kv_blocks"] > 0


def test_search_budget_and_bad_fields(server) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="x")
    got = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=30,
        seed=1,
        extra_body={"search": {"method": "best_of_n", "n": 8, "max_search_tokens": 20}},
    )
    assert got.model_extra["search"]["generated_tokens"] <= 20
    assert got.model_extra["search"]["budget_exhausted"]
    for bad in (
        {"search": {"method": "self_consistency", "n": 4, "answer_regex": "("}},
        {"search": {"method": "best_of_n", "n": 4}, "n": 2},
        {"search": {"method": "nope", "n": 4}},
    ):
        with pytest.raises(BadRequestError):
            client.completions.create(model=MODEL_NAME, prompt=PROMPT, extra_body=bad)
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={
            "model": MODEL_NAME,
            "prompt": PROMPT,
            "stream": True,
            "search": {"method": "best_of_n", "n": 2},
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "search"
