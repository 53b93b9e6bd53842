"""Beam search and search programs with the engine's other capabilities: speculative decoding,
priorities, prefix cache, structured output, samplers. Each pair gives what each gives alone."""

from __future__ import annotations

import re

import pytest

from intaglio import LLM, SamplingParams
from intaglio.search import best_of_n, mean_logprob, run_programs, self_consistency

PROMPT = [5, 9, 11, 5, 9, 11, 5, 9, 11, 5, 9, 11, 40, 41]
BEAM = SamplingParams(n=3, use_beam_search=True, max_tokens=10)


@pytest.fixture(scope="module")
def plain(checkpoint):
    return LLM(str(checkpoint("llama")), dtype="float32")


def _beams(llm):
    return [o.token_ids for o in llm.generate([PROMPT], BEAM)[0].outputs]


def test_beam_search_under_speculative_decoding_and_priority(checkpoint, plain):
    want = _beams(plain)
    spec = LLM(
        str(checkpoint("llama")),
        dtype="float32",
        speculative_method="ngram",
        speculative_adaptive=False,
    )
    assert _beams(spec) == want
    # Beams take no drafts, so they must not size a draft network's lookahead either.
    spec.engine.add_request("beams", PROMPT, BEAM)
    while spec.engine.has_unfinished():
        spec.engine.step()
        assert spec.engine.core._speculator.num_draft_tokens == 0
    prio = LLM(
        str(checkpoint("llama")), dtype="float32", scheduling_policy="priority", max_num_seqs=3
    )
    engine = prio.engine
    engine.add_request("low", PROMPT, BEAM, priority=5)
    for _ in range(3):
        engine.step()
    engine.add_request(
        "high", PROMPT[:5], SamplingParams(temperature=0.0, max_tokens=6), priority=-5
    )
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    assert [o.token_ids for o in done["low"].outputs] == want
    solo = plain.generate([PROMPT[:5]], SamplingParams(temperature=0.0, max_tokens=6))
    assert done["high"].outputs[0].token_ids == solo[0].outputs[0].token_ids


def test_programs_under_speculative_decoding_give_the_same_answers(checkpoint, plain):
    """Lossless speculation keeps seeded samples, so a program's choice does not change."""
    sampling = dict(temperature=0.9, seed=21, max_tokens=12)

    async def program(s):
        best = await best_of_n(s, s.root(PROMPT), 4, mean_logprob, **sampling)
        vote = await self_consistency(s, s.root(PROMPT), 5, lambda t: t[:1] or None, **sampling)
        return best.token_ids, vote.weights

    spec = LLM(str(checkpoint("llama")), dtype="float32", speculative_method="ngram")
    assert (
        run_programs(spec.engine, [program])[0].value
        == run_programs(plain.engine, [program])[0].value
    )


def test_program_gens_with_structured_output_and_samplers(plain):
    pattern = "[a-c]{3}[0-9]{2}"

    async def program(s):
        return await s.gen_all(
            s.fork(s.root(PROMPT), 4),
            structured={"regex": pattern},
            temperature=1.0,
            top_k=50,
            min_p=0.01,
            seed=3,
            max_tokens=10,
        )

    branches = run_programs(plain.engine, [program])[0].value
    assert all(re.fullmatch(pattern, b.text) for b in branches)
