"""Embedding requests (params.pooling): the pooled vector equals one computed from transformers'
hidden states, in every engine setting, beside generation requests and with the prefix cache."""

from __future__ import annotations

import math

import pytest
import torch

from intaglio import LLM, SamplingParams
from intaglio.errors import RequestError
from intaglio.sampling.pooling import Pooling

PROMPT_LENS = (3, 7, 13, 21, 1, 30, 9)
SETTINGS = {
    "default": dict(),
    "chunked": dict(max_num_batched_tokens=5),
    "preempting": dict(num_kv_blocks=14, block_size=4, max_num_batched_tokens=6),
}


def _prompts(lens: tuple[int, ...] = PROMPT_LENS, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 320, (n,), generator=g).tolist() for n in lens]


@pytest.fixture(scope="module")
def path(checkpoint) -> str:
    return str(checkpoint("llama"))


@pytest.fixture(scope="module")
def hf_hidden(path):
    """prompt -> transformers' final hidden states (after the final norm), fp32."""
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def get(prompt: list[int]) -> torch.Tensor:
        with torch.no_grad():
            out = model(torch.tensor([prompt]), output_hidden_states=True)
        return out.hidden_states[-1][0]

    return get


def _reference(hidden: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    vector = hidden[-1] if pooling == "last" else hidden.mean(0)
    return torch.nn.functional.normalize(vector, dim=0) if normalize else vector


def _assert_matches(out, hidden: torch.Tensor, pooling: str, normalize: bool) -> None:
    assert out.error is None and out.embedding is not None
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].token_ids == []
    expected = _reference(hidden, pooling, normalize)
    torch.testing.assert_close(torch.tensor(out.embedding), expected, atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def engines(path):
    cache: dict[str, LLM] = {}

    def get(setting: str) -> LLM:
        if setting not in cache:
            cache[setting] = LLM(path, dtype="float32", **SETTINGS[setting])
        return cache[setting]

    return get


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooled_vectors_match_transformers(engines, hf_hidden, setting, pooling, normalize):
    llm = engines(setting)
    prompts = _prompts()
    outs = llm.embed(prompts, pooling=pooling, normalize=normalize)
    for prompt, out in zip(prompts, outs):
        _assert_matches(out, hf_hidden(prompt), pooling, normalize)
    if normalize:
        assert all(math.isclose(sum(x * x for x in o.embedding), 1.0) for o in outs)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_preempted_embedding_requests_pool_each_position_once(engines, hf_hidden, pooling):
    """Long generations beside long embedding prompts in a tiny KV cache: embedding requests
    are preempted mid-prompt, recompute it, and still pool every position exactly once."""
    llm = engines("preempting")
    gen = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    prompts = _prompts((5, 6, 26, 27, 25), seed=3)
    params = [gen, gen, *[SamplingParams(pooling=pooling)] * 3]
    outs = llm.generate(prompts, params)
    preempted = [o.metrics.num_preemptions for o in outs[2:]]
    assert any(preempted), preempted
    for prompt, out in zip(prompts[2:], outs[2:]):
        _assert_matches(out, hf_hidden(prompt), pooling, True)


def test_mixed_batches_give_both_results(engines, hf_hidden):
    llm = engines("chunked")
    gen = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prompts = _prompts((9, 14, 4, 17, 6), seed=5)
    alone = llm.generate(prompts[::2], gen)
    kinds = [gen, SamplingParams(pooling="mean"), gen, SamplingParams(pooling="last"), gen]
    mixed = llm.generate(prompts, kinds)
    for a, m in zip(alone, mixed[::2]):
        assert m.embedding is None and m.outputs[0].token_ids == a.outputs[0].token_ids
    _assert_matches(mixed[1], hf_hidden(prompts[1]), "mean", True)
    _assert_matches(mixed[3], hf_hidden(prompts[3]), "last", True)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_cached_prefix(path, hf_hidden, pooling):
    """A prompt whose prefix is cached: last pooling reuses it (the last token is always
    computed); mean pooling recomputes it, since it reads every position's state."""
    llm = LLM(path, dtype="float32", block_size=4)
    prefix, tail = _prompts((16, 3), seed=7)
    llm.generate([prefix + [11]], SamplingParams(max_tokens=1))
    out = llm.embed([prefix + tail], pooling=pooling)[0]
    _assert_matches(out, hf_hidden(prefix + tail), pooling, True)
    assert out.metrics.num_cached_tokens == (16 if pooling == "last" else 0)


def test_bad_embedding_requests_fail_alone(path):
    llm = LLM(path, dtype="float32", max_model_len=32)
    outs = llm.embed([[], [5] * 33, [5] * 32, [5, 6]])
    assert "empty" in (outs[0].error or "")
    assert "33 tokens" in (outs[1].error or "")
    # Nothing is generated, so a prompt may fill the whole context.
    assert outs[2].error is None and outs[3].error is None and len(outs[3].embedding) == 64
    with pytest.raises(RequestError) as e:
        llm.embed([[5]], pooling="max")
    assert e.value.param == "pooling"
    for bad in ({"n": 2}, {"use_beam_search": True}):
        with pytest.raises(RequestError) as e:
            SamplingParams(pooling="last", **bad)
        assert e.value.param == "pooling"


def test_pooling_values():
    assert SamplingParams(pooling="mean").pooling == Pooling("mean")
    assert SamplingParams(pooling={"normalize": False}).pooling == Pooling("last", False)
    for bad in ({"type": "last", "dims": 3}, 5, {"normalize": "yes"}):
        with pytest.raises(RequestError) as e:
            SamplingParams(pooling=bad)
        assert e.value.param in ("pooling", "normalize")


def test_speculation_leaves_embedding_requests_alone(path, hf_hidden):
    """A prompt whose last chunk is one token looks like a decode to the speculator; it must
    get no drafts (it samples nothing), or the chunk would run past the prompt."""
    llm = LLM(
        path,
        dtype="float32",
        speculative_method="ngram",
        num_speculative_tokens=3,
        max_num_batched_tokens=8,
    )
    prompt = [5, 6, 7] * 3  # a chunk of 8, then the last token alone; n-grams repeat
    for pooling in ("last", "mean"):
        _assert_matches(llm.embed([prompt], pooling=pooling)[0], hf_hidden(prompt), pooling, True)
