"""Thinking budgets at the token level: multi-token markers, the forced end, the cue, and the
target distribution the sampler builds from the state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from intaglio.sampling.params import SamplingParams
from intaglio.sampling.sampler import Sampler, SamplingMetadata
from intaglio.sampling.state import SequenceSamplerState
from intaglio.sampling.thinking import ThinkingMarkers, ThinkingState, opens_thinking

MARKERS = ThinkingMarkers(start=(1, 2), end=(3, 4))
V = 12


def _state(**kw) -> ThinkingState:
    return ThinkingState(
        **{
            "markers": MARKERS,
            "budget": None,
            "min_tokens": 0,
            "cue": (7, 8),
            "active": False,
            **kw,
        }
    )


def test_the_prompt_opens_the_thinking():
    assert opens_thinking([5, 1, 2, 9], MARKERS)
    assert not opens_thinking([1, 2, 9, 3, 4, 5], MARKERS)
    assert not opens_thinking([5, 1, 9], MARKERS)  # half a marker is no marker


def test_the_budget_forces_a_multi_token_end_marker():
    s = _state(budget=2)
    for token in (1, 2):
        assert s.forced_token() is None
        s.advance(token)
    assert s.active and s.spent == 0
    for token in (9, 9):
        assert s.forced_token() is None
        s.advance(token)
    assert s.forced_token() == 3
    s.advance(3)
    assert s.forced_token() == 4
    s.advance(4)
    assert not s.active and s.forced_token() is None


def test_an_early_end_becomes_the_cue_and_its_rest_is_forced():
    s = _state(active=True, min_tokens=2)
    assert s.replaces_end()
    s.advance(7)  # what the sampler gives instead of the end marker's first token
    assert s.forced_token() == 8
    s.advance(8)
    assert not s.replaces_end() and s.spent == 2


def _target(state: ThinkingState, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    params = [SamplingParams(temperature=temperature)]
    meta = SamplingMetadata.build(
        params, [[]], [[]], {}, [[]], V, "cpu", [SequenceSamplerState(thinking=state)]
    )
    return Sampler.target_logits(logits, meta)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_the_target_follows_the_state(temperature):
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(0))
    forced = _target(_state(active=True, budget=0), logits, temperature)
    assert torch.isfinite(forced[0]).nonzero().flatten().tolist() == [3]
    early = _target(_state(active=True, min_tokens=5), logits, temperature)
    others = [t for t in range(V) if t not in (3, 7)]
    assert early[0, 3] == float("-inf")
    if temperature == 0.0:  # greedy: the cue takes the larger of the two logits
        assert early[0, 7] == max(logits[0, 3], logits[0, 7])
        assert torch.equal(early[0, others], logits[0, others])
        return
    # Sampling: the end marker's probability at this temperature moves to the cue.
    got, probs = early.softmax(-1)[0], (logits / temperature).softmax(-1)[0]
    assert got[7] == pytest.approx(float(probs[7] + probs[3]), rel=1e-5)
    assert got[others].tolist() == pytest.approx(probs[others].tolist(), rel=1e-5)


def test_a_fork_continues_the_thinking_with_its_own_budget():
    parent = SequenceSamplerState(thinking=_state(active=True, budget=10, spent=4, forced=(8,)))
    child = SequenceSamplerState(thinking=_state(active=False, budget=6))
    child.continue_from(parent)
    assert child.thinking is not None and parent.thinking is not None
    assert child.thinking is not parent.thinking
    assert dataclasses.replace(child.thinking, budget=10) == parent.thinking
