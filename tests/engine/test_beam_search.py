"""Beam search inside the engine equals HF generate(num_beams=...) and shares its KV."""

from __future__ import annotations

import pytest
import torch

from intaglio import LLM, SamplingParams
from intaglio.errors import RequestError

PROMPT_LENS = (3, 7, 12)

# width, max_tokens, length_penalty, early_stopping
CASES = [
    (1, 8, 1.0, False),
    (2, 10, 1.0, False),
    (4, 12, 1.0, False),
    (4, 9, 0.0, True),
    (3, 11, 2.0, "never"),
    (8, 14, 1.0, False),
    (6, 7, -0.5, False),
]

# Engine settings that must not change a beam: tiny prefill chunks, a cache so small that
# beams are preempted and recomputed.
SETTINGS = {
    "default": dict(),
    "chunked_preempting": dict(num_kv_blocks=24, block_size=4, max_num_batched_tokens=6),
}


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(7)
    return [torch.randint(3, 320, (n,), generator=g).tolist() for n in PROMPT_LENS]


def _hf_beams(model, prompt, width, max_tokens, length_penalty, early_stopping, eos):
    out = model.generate(
        torch.tensor([prompt]),
        eos_token_id=eos,
        pad_token_id=eos,
        num_beams=width,
        num_return_sequences=width,
        max_new_tokens=max_tokens,
        do_sample=False,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        return_dict_in_generate=True,
        output_scores=True,
    )
    if width == 1:  # HF runs greedy search: no scores; it ends after the first EOS
        tokens = out.sequences[0, len(prompt) :].tolist()
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        return [(tokens, None)]
    beams = []
    for i in range(width):
        length = int((out.beam_indices[i] >= 0).sum())
        tokens = out.sequences[i, len(prompt) : len(prompt) + length].tolist()
        beams.append((tokens, float(out.sequences_scores[i])))
    return beams


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    import transformers as tf

    cache = {}

    def get(family):
        if family not in cache:
            path = checkpoint(family)
            cache[family] = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return cache[family].eval()

    return get


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_beam_search_equals_hf(family, setting, checkpoint, hf_model):
    model = hf_model(family)
    llm = LLM(str(checkpoint(family)), dtype="float32", **SETTINGS[setting])
    # An end-of-sequence id the model often draws, so beams end early and compete.
    greedy = llm.generate(_prompts()[:1], SamplingParams(temperature=0.0, max_tokens=4))
    eos = greedy[0].outputs[0].token_ids[2]
    llm.engine.eos_token_ids = (eos,)
    num_eos_finished = 0
    for width, max_tokens, penalty, early in CASES:
        params = SamplingParams(
            n=width,
            use_beam_search=True,
            max_tokens=max_tokens,
            length_penalty=penalty,
            early_stopping=early,
        )
        outs = llm.generate(_prompts(), params)
        for prompt, out in zip(_prompts(), outs):
            with torch.no_grad():
                ref = _hf_beams(model, prompt, width, max_tokens, penalty, early, eos)
            ours = [(o.token_ids, o.cumulative_logprob) for o in out.outputs]
            assert [t for t, _ in ours] == [t for t, _ in ref], (width, max_tokens, prompt)
            for (tokens, logprob), (_, score) in zip(ours, ref):
                if score is not None:
                    assert logprob / len(tokens) ** penalty == pytest.approx(score, abs=1e-4)
            num_eos_finished += sum(o.finish_reason == "stop" for o in out.outputs)
        assert llm.engine.core.block_manager.num_free_blocks == llm.engine.executor.num_kv_blocks
    assert num_eos_finished > 0  # the cases reach EOS, so finished hypotheses are exercised
    if setting == "chunked_preempting":
        assert llm.engine.scheduler.num_preemptions > 0


def test_beams_share_the_prompt_and_free_everything(checkpoint):
    """The prompt is computed once; pruned beams return blocks at once; nothing leaks."""
    llm = LLM(str(checkpoint("llama")), dtype="float32", block_size=4)
    engine, core = llm.engine, llm.engine.core
    prompt = _prompts()[2] * 4  # 48 tokens: 12 full blocks
    width = 4
    engine.add_request("b", prompt, SamplingParams(n=width, use_beam_search=True, max_tokens=12))
    peak = 0
    total = core.block_manager.num_blocks
    while engine.has_unfinished():
        engine.step()
        used = total - core.block_manager.num_free_blocks
        live = core._groups["b"].children if "b" in core._groups else []
        if live:
            # The prompt's blocks once, plus at most a few blocks of its own per live beam.
            own = sum(-(-(len(r.output_token_ids)) // 4) + 1 for r in live)
            assert used <= 12 + own
        peak = max(peak, used)
    assert core.block_manager.num_free_blocks == total
    assert core.scheduler.num_computed_tokens < len(prompt) + width * 12 + 8


def test_abort_mid_search_frees_blocks(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32")
    engine = llm.engine
    engine.add_request("b", _prompts()[1], SamplingParams(n=4, use_beam_search=True, max_tokens=30))
    for _ in range(4):
        engine.step()
    engine.abort("b")
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert outs and outs[-1].finished
    assert engine.core.block_manager.num_free_blocks == engine.executor.num_kv_blocks


@pytest.mark.parametrize(
    "fields, param",
    [
        (dict(stop=["x"]), "stop"),
        (dict(min_tokens=2), "min_tokens"),
        (dict(structured={"regex": "a+"}), "structured"),
        (dict(logit_bias={3: 1.0}), "logit_bias"),
        (dict(n=3, best_of=2), "best_of"),
        (dict(early_stopping="sometimes"), "early_stopping"),
    ],
)
def test_beam_search_refuses_what_it_cannot_honour(fields, param):
    with pytest.raises(RequestError) as e:
        SamplingParams(use_beam_search=True, **fields)
    assert e.value.param == param


def test_best_of_without_beam_search_is_refused():
    with pytest.raises(RequestError) as e:
        SamplingParams(n=1, best_of=4)
    assert e.value.param == "best_of"
