"""Confidence (DeepConf): token confidence against its formula and the logprobs the engine
reports, group confidence over a sliding window, and the early stop that frees a trace's KV."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intaglio import LLM, SamplingParams
from intaglio.sampling.confidence import group_confidences, token_confidence


def test_token_confidence_is_the_negative_mean_top_k_logprob():
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(0)) * 3
    logits[2, 5:] = float("-inf")  # fewer finite tokens than k: -inf counts as float min
    lp = logits.log_softmax(-1)
    ks = torch.tensor([1, 7, 3])
    got = token_confidence(lp, ks).tolist()
    for row, k in enumerate(ks.tolist()):
        top = np.sort(lp[row].numpy())[::-1][:k]
        assert got[row] == pytest.approx(-float(np.mean(top)), rel=1e-6)


def test_group_confidence_is_a_sliding_mean():
    values = [1.0, 3.0, 2.0, 6.0, 4.0]
    assert group_confidences(values, 2) == pytest.approx([1.0, 2.0, 2.5, 4.0, 5.0])
    assert group_confidences(values, 10) == pytest.approx(list(np.cumsum(values) / np.arange(1, 6)))


@pytest.fixture(scope="module")
def llm(checkpoint) -> LLM:
    return LLM(str(checkpoint("llama")), dtype="float32", block_size=4, prefix_caching=False)


def test_confidences_agree_with_the_reported_logprobs(llm: LLM):
    params = SamplingParams(
        temperature=0.0, max_tokens=10, ignore_eos=True, logprobs=5, confidence_top_k=5
    )
    out = llm.generate([[5, 6, 7, 8]], params)[0].outputs[0]
    assert out.confidences is not None and len(out.confidences) == len(out.token_ids)
    for entry, confidence in zip(out.logprobs or [], out.confidences):
        top5 = sorted(entry.values(), reverse=True)[:5]
        assert confidence == pytest.approx(-sum(top5) / 5, rel=1e-5)


def test_a_low_confidence_trace_stops_early_and_frees_its_blocks(llm: LLM):
    prompt, window = [9, 10, 11, 12, 13], 3
    base = dict(temperature=0.0, max_tokens=30, ignore_eos=True, confidence_top_k=4)
    free = llm.generate([prompt], SamplingParams(**base))[0].outputs[0]
    groups = group_confidences(free.confidences or [], window)
    # A threshold just above the lowest full-window group: the trace stops at that window's end.
    stop_at = min(range(window - 1, len(groups)), key=lambda i: groups[i])
    threshold = groups[stop_at] + 1e-4
    expected = next(i for i in range(window - 1, len(groups)) if groups[i] < threshold) + 1
    assert expected < 30
    engine = llm.engine
    bm = engine.block_manager
    engine.add_request(
        "long", [20, 21, 22], SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    )
    params = SamplingParams(**base, confidence_window=window, confidence_threshold=threshold)
    engine.add_request("low", prompt, params)
    while True:
        done = {o.request_id: o for o in engine.step() if o.finished}
        if "low" in done:
            break
    out = done["low"].outputs[0]
    assert out.finish_reason == "low_confidence"
    assert out.token_ids == free.token_ids[:expected]
    (long_request,) = engine.scheduler.running
    # The step that ended the trace gave its blocks back: only the other request holds any.
    assert bm.num_free_blocks == bm.num_blocks - len(long_request.block_ids)
    while engine.has_unfinished():
        engine.step()
