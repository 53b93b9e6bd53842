"""Greedy tokens and prompt logprobs match HF transformers, per family and engine setting."""

from __future__ import annotations

import pytest
import torch

from checkpoints import FAMILIES
from intaglio import LLM, SamplingParams

PROMPT_LENS = (3, 5, 8, 13, 17, 21, 2, 30, 9)
MAX_TOKENS = 10

# Engine settings that must not change a single token: whole prompts, tiny prefill chunks,
# a KV cache so small that requests get preempted and recomputed.
SETTINGS = {
    "default": dict(),
    "chunked": dict(max_num_batched_tokens=5),
    "preempting": dict(num_kv_blocks=14, block_size=4),
    "chunked_preempting": dict(num_kv_blocks=14, block_size=4, max_num_batched_tokens=6),
}


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 320, (n,), generator=g).tolist() for n in PROMPT_LENS]


@pytest.fixture(scope="module")
def hf_reference(checkpoint):
    """family -> (greedy continuations, prompt logprobs) from transformers itself."""
    import transformers as tf

    cache = {}

    def get(family: str):
        if family not in cache:
            model = tf.AutoModelForCausalLM.from_pretrained(
                checkpoint(family), dtype=torch.float32
            ).eval()
            tokens, logprobs = [], []
            with torch.no_grad():
                for p in _prompts():
                    ids = torch.tensor([p])
                    out = model.generate(
                        ids, max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, do_sample=False
                    )
                    tokens.append(out[0, len(p) :].tolist())
                    lp = model(ids).logits[0].float().log_softmax(-1)
                    logprobs.append([lp[i, p[i + 1]].item() for i in range(len(p) - 1)])
            cache[family] = (tokens, logprobs)
        return cache[family]

    return get


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_and_prompt_logprobs_match_hf(family, setting, checkpoint, hf_reference):
    ref_tokens, ref_logprobs = hf_reference(family)
    llm = LLM(str(checkpoint(family)), dtype="float32", **SETTINGS[setting])
    params = SamplingParams(
        temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, prompt_logprobs=0
    )
    outs = llm.generate(_prompts(), params)
    for out, tokens, logprobs in zip(outs, ref_tokens, ref_logprobs):
        assert out.error is None
        assert out.outputs[0].token_ids == tokens
        ours = [next(iter(e.values())) for e in out.prompt_logprobs[1:]]
        assert out.prompt_logprobs[0] is None
        assert ours == pytest.approx(logprobs, abs=1e-4)
    if "preempting" in setting:
        assert llm.engine.scheduler.num_preemptions > 0


def test_batch_of_one_equals_full_batch(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32")
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=2)
    batched = llm.generate(_prompts(), params)
    for prompt, out in zip(_prompts(), batched):
        single = llm.generate([prompt], params)[0].outputs[0]
        assert single.token_ids == out.outputs[0].token_ids
        for a, b in zip(single.logprobs, out.outputs[0].logprobs):
            assert list(a) == list(b)
            assert list(a.values()) == pytest.approx(list(b.values()), abs=1e-4)
