"""KV sharing end to end on a real model: prefix caching and forks never change a token."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from intaglio import LLM, SamplingParams
from intaglio.engine.outputs import RequestOutput

MAX_TOKENS = 8


def _shared_prefix_prompts() -> list[list[int]]:
    """Prompts sharing a system prefix, duplicates, and one prompt that prefixes another."""
    g = torch.Generator().manual_seed(3)

    def rand(n: int) -> list[int]:
        return torch.randint(3, 320, (n,), generator=g).tolist()

    system = rand(21)
    prompts = [system + rand(n) for n in (3, 9, 1, 14, 6)]
    prompts += [prompts[1], system, prompts[3][:-2], rand(11)]
    return prompts


def _greedy(**kw) -> SamplingParams:
    return SamplingParams(
        **{"temperature": 0.0, "max_tokens": MAX_TOKENS, "ignore_eos": True, **kw}
    )


def _tokens(outs: list[RequestOutput]) -> list[list[int]]:
    return [c.token_ids for o in outs for c in o.outputs]


# Settings that must not change a token: whole prompts; tiny chunks; a cache so small that
# cached blocks are evicted and running requests preempted.
SETTINGS = {
    "default": dict(block_size=4),
    "chunked": dict(block_size=4, max_num_batched_tokens=7),
    "evicting": dict(block_size=4, num_kv_blocks=16),
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_outputs_identical_with_and_without_prefix_caching(checkpoint, setting):
    path = str(checkpoint("llama"))
    prompts = _shared_prefix_prompts()
    params = _greedy(logprobs=1)
    off = LLM(path, dtype="float32", prefix_caching=False, **SETTINGS[setting])
    on = LLM(path, dtype="float32", **SETTINGS[setting])
    ref = off.generate(prompts, params)
    # Twice: the second round finds the first round's blocks in the cache.
    for _ in range(2):
        outs = on.generate(prompts, params)
        assert _tokens(outs) == _tokens(ref)
        for a, b in zip(outs, ref):
            ours = [next(iter(e.values())) for e in a.outputs[0].logprobs]
            theirs = [next(iter(e.values())) for e in b.outputs[0].logprobs]
            assert ours == pytest.approx(theirs, abs=1e-4)
    bm = on.engine.block_manager
    assert bm.num_hit_tokens > 0
    assert on.engine.scheduler.num_computed_tokens < off.engine.scheduler.num_computed_tokens
    if setting == "evicting":
        assert on.engine.scheduler.num_preemptions > 0
    assert bm.num_free_blocks == bm.num_blocks  # nothing leaks once every request is done


def test_cache_salt_separates_tenants(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32", block_size=4)
    prompt = _shared_prefix_prompts()[0]
    first = llm.generate([prompt], _greedy(), cache_salt="tenant-a")
    bm = llm.engine.block_manager
    llm.generate([prompt], _greedy(), cache_salt="tenant-b")
    assert bm.num_hit_tokens == 0
    again = llm.generate([prompt], _greedy(), cache_salt="tenant-a")
    assert bm.num_hit_tokens > 0
    assert _tokens(again) == _tokens(first)


@pytest.mark.parametrize("caching", [False, True])
def test_n_samples_fork_the_prompt_and_equal_separate_requests(checkpoint, caching):
    llm = LLM(str(checkpoint("llama")), dtype="float32", block_size=4, prefix_caching=caching)
    prompt = _shared_prefix_prompts()[3]  # 35 tokens: the last prompt block is partial
    params = SamplingParams(temperature=1.0, seed=7, n=4, max_tokens=MAX_TOKENS, ignore_eos=True)
    before = llm.engine.scheduler.num_computed_tokens
    forked = llm.generate([prompt], params)[0]
    computed = llm.engine.scheduler.num_computed_tokens - before
    # The prompt ran once; each sibling recomputed only the last prompt token.
    assert computed == len(prompt) + 3 + 4 * (MAX_TOKENS - 1)
    assert llm.engine.block_manager.num_copied_blocks >= 3  # each sibling's partial block
    separate = LLM(str(checkpoint("llama")), dtype="float32", prefix_caching=False)
    for i, sample in enumerate(forked.outputs):
        alone = separate.generate([prompt], replace(params, n=1, seed=7 + i))[0]
        assert sample.token_ids == alone.outputs[0].token_ids


def test_fork_continues_like_an_independent_request(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32", block_size=4)
    engine = llm.engine
    prompt = _shared_prefix_prompts()[2]  # 22 tokens
    engine.add_request("parent", prompt, _greedy(max_tokens=12))
    engine.step()
    parent_request = engine.scheduler.running[0]
    while len(parent_request.output_token_ids) < 4:
        engine.step()
    head = list(parent_request.output_token_ids)
    # 26 tokens, 25 in the cache: both next write position 25, inside the block they share.
    fork_params = SamplingParams(temperature=1.0, seed=5, max_tokens=10, ignore_eos=True)
    engine.fork("parent", "child", fork_params)
    outs: dict[str, RequestOutput] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                outs[out.request_id] = out
    assert engine.block_manager.num_copied_blocks >= 1
    parent, child = outs["parent"].outputs[0], outs["child"].outputs[0]
    assert (
        parent.token_ids == llm.generate([prompt], _greedy(max_tokens=12))[0].outputs[0].token_ids
    )
    assert child.token_ids[:4] == head and len(child.token_ids) == 10
    alone = llm.generate([prompt + head], replace(fork_params, max_tokens=6))[0].outputs[0]
    assert child.token_ids[4:] == alone.token_ids


def test_fork_refuses_what_it_cannot_do(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32")
    engine = llm.engine
    with pytest.raises(ValueError, match="not a running single-sample request"):
        engine.fork("nobody", "x")
    engine.add_request("many", [5, 6, 7], SamplingParams(n=2, max_tokens=4))
    with pytest.raises(ValueError, match="single-sample"):
        engine.fork("many", "x")
    engine.add_request("one", [5, 6, 7], _greedy())
    with pytest.raises(ValueError, match="already in use"):
        engine.fork("one", "many")
    while engine.has_unfinished():
        engine.step()
