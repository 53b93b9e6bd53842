"""The batch-invariant mode: a request's greedy tokens and logprobs are the same bits alone, in
batches of any size and make-up, under any prompt chunking, after a prefix-cache hit and after
preemption, and its prompt logprobs (echo) equal its generation logprobs.

bf16 checkpoints: the precision in which a plain run depends on its batch the most. With the
mode off these tests fail wherever that dependence exists (on an AVX512-BF16 machine, through
the SDPA prefill path against the decode path, and torch's bf16 matmuls).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from checkpoints import build_checkpoint
from intaglio import LLM, SamplingParams
from intaglio.ops.cpu_kernels import cpu_kernels

needs_kernels = pytest.mark.skipif(cpu_kernels() is None, reason="no AVX-512 CPU kernels here")

FAMILIES = ("llama", "qwen2", "qwen3")  # tied head; q/k/v bias; q/k norm and head_dim 32
MAX_TOKENS = 12
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=3, ignore_eos=True)


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    cache = {}

    def get(family):
        if family not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-bf16")
            cache[family] = build_checkpoint(family, folder, dtype="bfloat16")
        return cache[family]

    return get


def _prompts(seed: int, count: int, low: int = 3, high: int = 70) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 320) for _ in range(rng.randint(low, high))] for _ in range(count)]


TARGET = _prompts(seed=7, count=1, low=41, high=41)[0]


def _llm(path, **engine_args) -> LLM:
    return LLM(str(path), batch_invariant=True, seed=0, **engine_args)


def _result(out):
    """(tokens, logprobs) of a request's one sample: the mode's guarantee, compared bitwise."""
    sample = out.outputs[0]
    return sample.token_ids, sample.logprobs


def _target_among(llm: LLM, others: list[list[int]], at: int):
    prompts = [*others[:at], TARGET, *others[at:]]
    outs = llm.generate(prompts, GREEDY)
    return _result(outs[at])


@needs_kernels
@pytest.mark.parametrize("family", FAMILIES)
def test_alone_equals_in_batches_of_any_size_and_chunking(bf16_checkpoint, family):
    path = bf16_checkpoint(family)
    alone = _result(_llm(path, prefix_caching=False).generate([TARGET], GREEDY)[0])
    assert len(alone[0]) == MAX_TOKENS
    # Batch sizes and make-ups: the target's prefill shares steps with others' prefills and
    # decodes, and its decodes run among 2 to 24 rows.
    llm = _llm(path, prefix_caching=False)
    for seed, count, at in ((1, 1, 0), (2, 5, 3), (3, 23, 11)):
        assert _target_among(llm, _prompts(seed, count), at) == alone, (count, at)
    # Prompt chunks of several lengths, split differently against the others' chunks.
    for budget in (8, 13, 32):
        llm = _llm(path, prefix_caching=False, max_num_batched_tokens=budget)
        assert _target_among(llm, _prompts(4, 6), 2) == alone, budget


@needs_kernels
@pytest.mark.parametrize("family", FAMILIES)
def test_alone_equals_after_a_prefix_cache_hit_and_after_preemption(bf16_checkpoint, family):
    path = bf16_checkpoint(family)
    alone = _result(_llm(path, prefix_caching=False).generate([TARGET], GREEDY)[0])
    llm = _llm(path, block_size=16)
    llm.generate([TARGET[:33] + [5, 6, 7]], GREEDY)  # leaves the first two blocks cached
    hit = llm.generate([TARGET], GREEDY)[0]
    assert hit.metrics.num_cached_tokens == 32
    assert _result(hit) == alone
    assert _preempted_target(path) == alone


def _preempted_target(path):
    """The target decoding when requests of better priority arrive and take its KV blocks."""
    llm = _llm(path, block_size=4, num_kv_blocks=40, scheduling_policy="priority")
    engine = llm.engine
    engine.add_request("target", TARGET, GREEDY, priority=1)
    for _ in range(4):  # its prompt and a few decodes
        engine.step()
    for i, prompt in enumerate(_prompts(5, 4, 30, 40)):
        engine.add_request(str(i), prompt, GREEDY, priority=0)
    outs = {}
    while engine.has_unfinished():
        for out in engine.step():
            outs[out.request_id] = out
    assert outs["target"].metrics.num_preemptions > 0
    return _result(outs["target"])


@needs_kernels
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_logprobs_equal_generation_logprobs(bf16_checkpoint, family):
    llm = _llm(bf16_checkpoint(family), max_num_batched_tokens=16)
    tokens, logprobs = _result(llm.generate([TARGET], GREEDY)[0])
    echo = SamplingParams(max_tokens=1, prompt_logprobs=3)
    out = llm.generate([TARGET + tokens], echo)[0]  # its K/V partly from the prefix cache
    assert out.prompt_logprobs is not None
    assert out.prompt_logprobs[len(TARGET) :] == logprobs


def test_refused_where_it_cannot_hold(bf16_checkpoint, checkpoint):
    with pytest.raises(ValueError, match="CPU only"):
        LLM(str(bf16_checkpoint("llama")), batch_invariant=True, device="cuda")
    if cpu_kernels() is not None:
        with pytest.raises(ValueError, match="mixture-of-experts"):
            LLM(str(checkpoint("mixtral")), batch_invariant=True)
    # Without our kernels (here switched off) the mode refuses rather than silently not holding.
    code = (
        "import sys; from intaglio import LLM\n"
        "try: LLM(sys.argv[1], batch_invariant=True)\n"
        "except ValueError as e: print(e)"
    )
    env = {**os.environ, "INTAGLIO_CPU_KERNELS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(bf16_checkpoint("llama"))],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "batch_invariant needs our AVX-512 CPU kernels" in done.stdout


@needs_kernels
def test_speculative_decoding_keeps_the_bits(bf16_checkpoint):
    """Verification scores a request's drafts in one step, several rows per request: in the mode
    those rows give the bits plain decoding gives, so greedy tokens and logprobs are unchanged."""
    path = bf16_checkpoint("llama")
    repeats = [*TARGET[:8]] * 6  # prompt lookups find drafts in a repeating prompt
    prompts = [repeats, TARGET, *_prompts(5, 3)]
    plain = [_result(o) for o in _llm(path).generate(prompts, GREEDY)]
    llm = _llm(path, speculative_method="ngram", speculative_adaptive=False)
    assert [_result(o) for o in llm.generate(prompts, GREEDY)] == plain
    stats = llm.engine.scheduler.spec_stats
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens  # kept and rejected drafts
