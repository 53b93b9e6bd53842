"""Llama 4, Mixtral and Qwen3-MoE: greedy tokens and prompt logprobs match HF transformers.

The Llama 4 checkpoint mixes RoPE and NoPE layers and dense and MoE layers, with 8-token
attention chunks: prompts of up to 30 tokens span several chunks, and ten decode steps carry
most of them across a chunk boundary. The HF reference is a full forward over the whole
sequence at every step, the model's definition with no cache involved.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from checkpoints import MOE_FAMILIES
from intaglio import LLM, SamplingParams

PROMPT_LENS = (3, 5, 8, 13, 17, 21, 2, 30, 9)
MAX_TOKENS = 10

SETTINGS = {
    "default": dict(),
    "chunked_prefill": dict(max_num_batched_tokens=5),
    # Blocks of 3 do not divide the 8-token attention chunks; 14 of them force preemption.
    "preempting": dict(num_kv_blocks=14, block_size=3),
    "chunked_preempting": dict(num_kv_blocks=14, block_size=4, max_num_batched_tokens=6),
}


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 320, (n,), generator=g).tolist() for n in PROMPT_LENS]


def _hf_model(folder):
    import transformers as tf

    arch = json.loads((folder / "config.json").read_text())["architectures"][0]
    cls = getattr(tf, arch)
    with warnings.catch_warnings():  # Llama 4's vision tower casts a complex buffer
        warnings.filterwarnings("ignore", "Casting complex values", UserWarning)
        return cls.from_pretrained(folder, dtype=torch.float32).eval()


@torch.no_grad()
def _hf_greedy(model, prompt: list[int]) -> list[int]:
    ids = torch.tensor([prompt])
    for _ in range(MAX_TOKENS):
        nxt = model(input_ids=ids).logits[0, -1].argmax().view(1, 1)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[0, len(prompt) :].tolist()


@pytest.fixture(scope="module")
def hf_reference(checkpoint):
    """family -> (greedy continuations, prompt logprobs), by full forwards in transformers."""
    cache = {}

    def get(family: str):
        if family not in cache:
            model = _hf_model(checkpoint(family))
            tokens, logprobs = [], []
            with torch.no_grad():
                for p in _prompts():
                    lp = model(input_ids=torch.tensor([p])).logits[0].log_softmax(-1)
                    logprobs.append([lp[i, p[i + 1]].item() for i in range(len(p) - 1)])
                    tokens.append(_hf_greedy(model, p))
            cache[family] = (tokens, logprobs)
        return cache[family]

    return get


def _run(folder, **engine) -> tuple[LLM, list]:
    llm = LLM(str(folder), dtype="float32", **engine)
    params = SamplingParams(
        temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, prompt_logprobs=0
    )
    outs = llm.generate(_prompts(), params)
    assert all(out.error is None for out in outs)
    return llm, outs


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_greedy_and_prompt_logprobs_match_hf(family, setting, checkpoint, hf_reference):
    ref_tokens, ref_logprobs = hf_reference(family)
    llm, outs = _run(checkpoint(family), **SETTINGS[setting])
    for out, tokens, logprobs in zip(outs, ref_tokens, ref_logprobs):
        assert out.outputs[0].token_ids == tokens
        assert out.prompt_logprobs[0] is None
        ours = [next(iter(e.values())) for e in out.prompt_logprobs[1:]]
        assert ours == pytest.approx(logprobs, abs=1e-4)
    if "preempting" in setting:
        assert llm.engine.scheduler.num_preemptions > 0


@pytest.mark.parametrize(
    "change",
    [
        {"attention_chunk_size": None},  # full attention on the RoPE layers
        {"attn_temperature_tuning": False},
        {"no_rope_layers": [1, 1, 1, 1]},
    ],
    ids=["no_chunking", "no_temperature", "rope_everywhere"],
)
def test_llama4_paths_matter(change, checkpoint, hf_reference, tmp_path):
    """Negative controls: without each Llama 4 feature our logprobs leave HF's, so the parity
    test above really exercises chunked attention, temperature tuning and NoPE layers."""
    folder = tmp_path / "changed"
    shutil.copytree(checkpoint("llama4"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    _, ref_logprobs = hf_reference("llama4")
    _, outs = _run(folder)
    worst = max(
        abs(next(iter(e.values())) - ref)
        for out, logprobs in zip(outs, ref_logprobs)
        for e, ref in zip(out.prompt_logprobs[1:], logprobs)
    )
    assert worst > 1e-2


def test_llama4_prefix_cache_hits_end_on_a_chunk_boundary(checkpoint):
    """Prompts share a 21-token prefix. With blocks of 4, 20 cached tokens would match, but
    the chunked-attention layers keep no KV of earlier chunks (engine/chunked_kv.py), so a hit
    ends on a chunk boundary: 16 tokens, and the rest of the prefill starts a new chunk."""
    g = torch.Generator().manual_seed(5)
    system = torch.randint(3, 320, (21,), generator=g).tolist()
    prompts = [system + torch.randint(3, 320, (n,), generator=g).tolist() for n in (2, 7, 12)]
    model = _hf_model(checkpoint("llama4"))
    expected = [_hf_greedy(model, p) for p in prompts]
    llm = LLM(str(checkpoint("llama4")), dtype="float32", block_size=4)
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    for _ in range(2):  # the second round finds the first round's blocks
        outs = llm.generate(prompts, params)
        assert [o.outputs[0].token_ids for o in outs] == expected
    hits = llm.engine.block_manager.num_hit_tokens
    assert hits >= 16 * len(prompts) and hits % 8 == 0


@pytest.mark.parametrize("family", ["llama4", "qwen3_moe"])
def test_bf16_moe_model_tracks_the_reference(family, tmp_path):
    """bf16 weights (experts in bf16, fp32 compute on CPUs without bf16 units): greedy tokens
    agree with fp32 HF on the same weights until a near-tie, where each side's token is in
    the other's top 5 (the comparison test_half_precision.py makes for dense models)."""
    from checkpoints import build_checkpoint

    folder = build_checkpoint(family, tmp_path / "bf16", dtype="bfloat16")
    model = _hf_model(folder)
    llm = LLM(str(folder))
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=5)
    for prompt, out in zip(_prompts(), llm.generate(_prompts(), params)):
        ours = out.outputs[0]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + ours.token_ids])).logits[0]
        ref_top5 = logits[len(prompt) - 1 : -1].topk(5, dim=-1).indices.tolist()
        for step, token in enumerate(ours.token_ids):
            if token != ref_top5[step][0]:
                assert token in ref_top5[step] and ref_top5[step][0] in ours.logprobs[step]
                break
