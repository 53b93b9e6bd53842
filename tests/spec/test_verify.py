"""Verification keeps the target's distribution: tokens emitted after drafts from a different
distribution follow the sampler's target (after temperature and truncation), not the drafts'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intaglio.sampling.params import SamplingParams
from intaglio.sampling.sampler import Sampler, SamplingMetadata
from intaglio.spec import accepted_tokens, position_seed

V = 8
ROWS = torch.tensor(
    [
        [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0],  # position 0
        [-1.0, 0.0, 2.5, 0.3, 1.2, -2.0, 0.7, 0.1],  # position 1, after the draft
    ]
)
# The draft distribution favours what the target dislikes.
Q = np.array([0.02, 0.03, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3])


def _tv(counts: np.ndarray, probs: np.ndarray) -> float:
    return 0.5 * float(np.abs(counts / counts.sum() - probs).sum())


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.5),
        SamplingParams(temperature=1.8, top_k=5),
        SamplingParams(temperature=1.0, top_p=0.8),
        SamplingParams(temperature=1.2, min_p=0.1),
    ],
)
def test_verified_tokens_follow_the_target_not_the_draft(params: SamplingParams) -> None:
    n = 40_000  # about 2,000 accepted drafts: the bonus position's TV is then about 0.015
    drafts = np.random.default_rng(0).choice(V, size=n, p=Q)
    # Two rows per trial (the drafted position and the bonus one), each with the noise its
    # (seed, position) gives, as the executor builds them.
    generators = {
        row: torch.Generator().manual_seed(position_seed(row // 2, 100 + row % 2))
        for row in range(2 * n)
    }
    meta = SamplingMetadata.build(
        [params] * (2 * n), [[]] * (2 * n), [[]] * (2 * n), generators, [[]] * (2 * n), V, "cpu"
    )
    logits = ROWS.repeat(n, 1)
    drawn = Sampler()(logits, meta).token_ids.tolist()
    two = SamplingMetadata.build([params] * 2, [[]] * 2, [[]] * 2, {}, [[]] * 2, V, "cpu")
    target = Sampler.target_logits(ROWS, two).softmax(-1).numpy()

    first = np.zeros(V)
    second = np.zeros(V)
    num_accepted = 0
    for i in range(n):
        tokens = accepted_tokens(drawn[2 * i : 2 * i + 2], [int(drafts[i])])
        first[tokens[0]] += 1
        if len(tokens) == 2:
            num_accepted += 1
            second[tokens[1]] += 1
    assert _tv(first, target[0]) < 0.02  # expected about 0.01 at this n
    assert _tv(first, Q) > 0.2  # and clearly not the draft's
    assert _tv(second, target[1]) < 0.04
    # A draft d is kept with probability p(d): the acceptance rate is sum_d q(d) p(d).
    assert abs(num_accepted / n - float(Q @ target[0])) < 0.015
    assert np.all(first[target[0] == 0] == 0)  # truncated tokens never come out


def test_greedy_keeps_a_draft_exactly_when_it_is_the_argmax() -> None:
    meta = SamplingMetadata.build(
        [SamplingParams(temperature=0.0)] * 2, [[]] * 2, [[]] * 2, {}, [[]] * 2, V, "cpu"
    )
    drawn = Sampler()(ROWS, meta).token_ids.tolist()
    assert drawn == [0, 2]
    assert accepted_tokens(drawn, [0]) == [0, 2]
    assert accepted_tokens(drawn, [3]) == [0]


def test_accepted_tokens_walk() -> None:
    assert accepted_tokens([5], []) == [5]
    assert accepted_tokens([1, 2, 3, 4], [1, 2, 3]) == [1, 2, 3, 4]
    assert accepted_tokens([1, 9, 3, 4], [1, 2, 3]) == [1, 9]


def test_position_seeds_are_distinct_and_stable() -> None:
    seeds = {position_seed(s, p) for s in range(50) for p in range(200)}
    assert len(seeds) == 50 * 200
    assert all(0 <= x < 2**63 for x in seeds)
    assert position_seed(7, 3) == position_seed(7, 3)
