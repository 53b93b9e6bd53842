"""Scheduling policies: which request ranks first, and how prefills and decodes share steps.

Ranking (`scheduling_policy`):
- fcfs: arrival order.
- priority: lower `priority` first (vLLM's convention), arrival order among equals. Aging keeps
  low priorities from starving: every `priority_aging_s` seconds of age count as one level, so
  the effective value priority - age / aging_s orders requests. Since every request ages at the
  same rate, that order equals the order of priority + arrival_time / aging_s, a constant key.
- cache-aware: waiting requests with the longest prefix-cache hit first (the scheduler sorts
  them each step); running requests rank in arrival order.

Interleaving (`interleave_policy`), for steps that have both decodes and prefill work:
- stall-free (Sarathi-Serve): decodes first, prefill chunks fill the rest of the token budget,
  so running requests never stall behind a long prompt.
- prefill-first: prefill work runs alone; decodes wait (best TTFT, worst TPOT).
- decode-first: decodes run alone; prefill work gets a step of its own after
  `decode_first_max_wait_steps` decode steps (best TPOT, worst TTFT).
"""

from __future__ import annotations

from collections.abc import Callable

from intaglio.config import INTERLEAVE_POLICIES, SCHEDULING_POLICIES
from intaglio.engine.request import Request

RankKey = Callable[[Request], tuple[float, ...]]


def rank_key(policy: str, priority_aging_s: float) -> RankKey:
    """Sort key of a request: smaller runs first and is preempted last."""
    if policy not in SCHEDULING_POLICIES:
        raise ValueError(f"unknown scheduling policy {policy!r}; choose from {SCHEDULING_POLICIES}")
    if policy != "priority":
        return lambda r: (r.arrival_time, r.seq)
    if priority_aging_s > 0:
        return lambda r: (r.priority + r.arrival_time / priority_aging_s, r.arrival_time, r.seq)
    return lambda r: (r.priority, r.arrival_time, r.seq)


class Interleaver:
    def __init__(self, policy: str, decode_first_max_wait_steps: int) -> None:
        if policy not in INTERLEAVE_POLICIES:
            raise ValueError(
                f"unknown interleave policy {policy!r}; choose from {INTERLEAVE_POLICIES}"
            )
        self.policy = policy
        self.max_wait_steps = decode_first_max_wait_steps
        self._decode_steps_waited = 0  # decode-only steps since prefill work last ran

    def choose(self, has_decodes: bool, has_prefill_work: bool) -> tuple[bool, bool]:
        """(run decodes, run prefill work) this step."""
        if self.policy == "stall-free" or not (has_decodes and has_prefill_work):
            self._decode_steps_waited = 0
            return True, True
        if self.policy == "prefill-first":
            return False, True
        if self._decode_steps_waited < self.max_wait_steps:
            self._decode_steps_waited += 1
            return True, False
        self._decode_steps_waited = 0
        return False, True
