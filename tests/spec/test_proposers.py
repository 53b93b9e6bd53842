"""Draft proposers and the adaptive draft length, on hand-built sequences and step timings."""

from __future__ import annotations

from intaglio.spec import DraftLengthController, acceptance_rate
from intaglio.spec.ngram import NgramProposer
from intaglio.spec.suffix import SuffixProposer


def test_ngram_drafts_what_followed_the_latest_longest_match() -> None:
    p = NgramProposer(min_match=1, max_match=3)
    #        the 3-gram 1 2 3 occurs at 0 (then 4) and at 5 (then 9); the latest wins
    seq = [1, 2, 3, 4, 8, 1, 2, 3, 9, 7, 1, 2, 3]
    assert p.propose("r", seq, 3) == [9, 7, 1]
    # only a 1-gram matches: 6 occurred once, followed by 5
    assert p.propose("r", [6, 5, 4, 6], 2) == [5, 4]
    assert p.propose("r", [1, 2, 3, 4], 3) == []  # nothing repeats
    # Past the sequence's end the draft repeats what the match implies.
    assert p.propose("r", [1, 2, 1, 2], 5) == [1, 2, 1, 2, 1]
    assert p.propose("r", [4, 0, 0, 0], 3) == [0, 0, 0]


def test_suffix_learns_from_other_requests_outputs() -> None:
    p = SuffixProposer(min_match=2, max_match=8)
    assert p.propose("a", [10, 11, 12], 4) == []
    p.finish("earlier", [50, 10, 11, 12, 13, 14, 15])
    assert p.propose("b", [99, 10, 11, 12], 4) == [13, 14, 15]  # the output ends there


def test_suffix_follows_the_majority_and_stops_where_candidates_disagree() -> None:
    p = SuffixProposer(min_match=2, max_match=4, min_agreement=0.5)
    for tail in ([3, 4, 5], [3, 4, 6], [3, 7, 8]):
        p.finish("x", [1, 2, *tail])
    # After 1 2: three candidates say 3; two of them say 4; then 5 and 6 split one each
    assert p.propose("q", [9, 1, 2], 5) == [3, 4]


def test_suffix_corpus_is_bounded() -> None:
    p = SuffixProposer(max_corpus_tokens=10)
    for i in range(20):
        p.finish(str(i), [i, 100 + i, 200 + i, 300 + i])
    assert p.propose("q", [0, 100], 2) == []  # dropped, oldest first
    assert p.propose("q", [19, 119], 2) == [219, 319]


def _fitted(a: float, b: float) -> DraftLengthController:
    c = DraftLengthController(max_draft_tokens=5)
    for n in (1, 8, 64, 3, 200, 16):
        c.observe_step(n, a + b * n)
    for _ in range(100):  # the prior is forgotten
        for n in (1, 50):
            c.observe_step(n, a + b * n)
    return c


def test_step_cost_fit_recovers_the_line() -> None:
    a, b = _fitted(0.02, 0.0005).step_cost() or (0.0, 0.0)
    assert abs(a - 0.02) < 1e-4 and abs(b - 0.0005) < 1e-6


def test_memory_bound_batch_one_drafts_and_large_batch_backs_off() -> None:
    c = _fitted(0.02, 0.0005)  # a token costs 1/40 of the step's fixed part
    assert c.draft_lengths([0.7]) == [5]
    # A draft pays when alpha / b beats 1 / (a + b) tokens per second: alpha > 0.024 here.
    assert c.draft_lengths([0.03]) == [1]
    assert c.draft_lengths([0.02]) == [0]
    # At 64 sequences a step is mostly per-token cost: no drafts pay.
    busy = _fitted(0.02, 0.005)
    assert busy.draft_lengths([0.6] * 64) == [0] * 64
    assert busy.draft_lengths([0.6] * 2) == [1, 1]
    # Requests that accept more get longer drafts.
    lengths = c.draft_lengths([0.9, 0.5, 0.3])
    assert lengths[0] >= lengths[1] >= lengths[2]


def test_non_adaptive_always_drafts_and_acceptance_rate_prior() -> None:
    c = DraftLengthController(max_draft_tokens=3, adaptive=False)
    assert c.draft_lengths([0.0, 0.9]) == [3, 3]
    assert acceptance_rate(0, 0) == 0.5
    assert acceptance_rate(8, 8) == 0.9 and acceptance_rate(0, 20) < 0.05
