"""How many draft tokens each request gets this step (adaptive speculation).

Verifying a draft costs step time; it pays only when the tokens it is expected to add are worth
more than that time. Two estimates drive the choice, both measured as the engine runs:
- per request, the rate `alpha` at which its drafts are accepted (a running mean), so its j-th
  draft adds alpha**j tokens in expectation (all j before it must be accepted);
- the step time as a line in the number of tokens run, t = a + b * tokens (least squares with
  exponential forgetting), so each verified token costs b seconds.
Starting from plain decoding (B tokens in a + b * B seconds), drafts are added in order of
expected gain while a draft's tokens per second (alpha**j / b) beat the decodes' average; at
batch 1 on memory-bound hardware b << a and most drafts pay, while at large batch b * B
dominates and speculation backs off to none: throughput never falls below plain decoding's
by more than the estimate's error. Prefill chunks in the same step are left out: their cost
is paid with or without drafts, so it says nothing about what a draft is worth.
"""

from __future__ import annotations

import heapq

# Prior for a request with no history yet: drafts are accepted about half the time.
_PRIOR_ALPHA = 0.5
_PRIOR_WEIGHT = 2.0  # in drafts
# Step-time fit: forgetting factor per step, and the prior's weight (in steps).
_FORGET = 0.98
_PRIOR_STEPS = 4.0


class DraftLengthController:
    def __init__(self, max_draft_tokens: int, adaptive: bool = True) -> None:
        self.max_draft_tokens = max_draft_tokens
        self.adaptive = adaptive
        # Weighted sums for the fit of step seconds against tokens: n, x, y, xx, xy.
        self._sums = [0.0] * 5
        self._has_prior = False

    def observe_step(self, num_tokens: int, seconds: float) -> None:
        if not self._has_prior:
            # Until steps of several sizes are seen, assume a token costs 1/32 of a step's
            # fixed part (weights read once per step: the memory-bound regime of decoding).
            a = seconds
            for x in (1.0, 33.0):
                self._add(x, a * (1 + (x - 1) / 32), _PRIOR_STEPS / 2)
            self._has_prior = True
        self._sums = [s * _FORGET for s in self._sums]
        self._add(float(num_tokens), seconds, 1.0)

    def _add(self, x: float, y: float, w: float) -> None:
        s = self._sums
        s[0] += w
        s[1] += w * x
        s[2] += w * y
        s[3] += w * x * x
        s[4] += w * x * y

    def step_cost(self) -> tuple[float, float] | None:
        """(a, b) of t = a + b * tokens, or None before any step was timed."""
        n, x, y, xx, xy = self._sums
        if n == 0:
            return None
        var = xx - x * x / n
        b = max((xy - x * y / n) / var, 0.0) if var > 1e-12 else 0.0
        a = max(y / n - b * x / n, 1e-9)
        return a, max(b, 1e-3 * a)  # a token is never free

    def draft_lengths(self, acceptance: list[float]) -> list[int]:
        """Draft tokens for each decode of the next step (acceptance: each one's alpha)."""
        k = self.max_draft_tokens
        if not self.adaptive or not acceptance:
            return [k] * len(acceptance)
        cost = self.step_cost()
        if cost is None:
            return [0] * len(acceptance)  # time one plain step first
        a, b = cost
        tokens = float(len(acceptance))  # expected tokens this step yields
        seconds = a + b * len(acceptance)
        lengths = [0] * len(acceptance)
        # Max-heap of each request's next draft by expected gain alpha**(j + 1).
        heap = [(-alpha, i) for i, alpha in enumerate(acceptance) if alpha > 0 and k > 0]
        heapq.heapify(heap)
        while heap:
            neg_gain, i = heapq.heappop(heap)
            gain = -neg_gain
            if gain / b <= tokens / seconds:
                break  # this draft, and every smaller one, costs more than it brings
            lengths[i] += 1
            tokens += gain
            seconds += b
            if lengths[i] < k:
                heapq.heappush(heap, (-gain * acceptance[i], i))
        return lengths


def acceptance_rate(num_accepted: int, num_tried: int) -> float:
    """A request's per-draft acceptance: accepted over tried, from a prior of 0.5 over 2.

    A step that keeps `a` of its `k` drafts tried a + 1 of them (the last one rejected), or k
    when all were kept; the drafts after a rejection were never tried.
    """
    return (num_accepted + _PRIOR_ALPHA * _PRIOR_WEIGHT) / (num_tried + _PRIOR_WEIGHT)
