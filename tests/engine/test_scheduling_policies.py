"""Scheduling and interleave policies, decided by the real Scheduler without a model."""

from __future__ import annotations

import pytest

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import Request, RequestStatus
from intaglio.engine.scheduler import Scheduler
from intaglio.sampling.params import SamplingParams


def _request(
    rid: str, prompt: list[int], priority: int = 0, arrival: float = 0.0, max_tokens: int = 50
) -> Request:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    return Request(rid, prompt, params, (), max_tokens, priority=priority, arrival_time=arrival)


def _unique(rid: str, n: int) -> list[int]:
    return [1000 * (sum(map(ord, rid)) + 1) + i for i in range(n)]


def _step(sched: Scheduler) -> dict[str, int]:
    out = sched.schedule()
    sched.update(out, {s.request.request_id: [7] for s in out.scheduled if s.samples})
    return {s.request.request_id: s.num_new_tokens for s in out.scheduled}


def _scheduler(num_blocks: int = 64, max_num_seqs: int = 8, budget: int = 100, **kw) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, 4), max_num_seqs, budget, **kw)


def test_priority_orders_waiting_requests_lower_value_first():
    sched = _scheduler(max_num_seqs=1, scheduling_policy="priority", priority_aging_s=0)
    for rid, prio, t in [("late-low", 5, 0.0), ("urgent", -1, 2.0), ("mid", 0, 1.0)]:
        sched.add(_request(rid, _unique(rid, 3), prio, t, max_tokens=1))
    order = [next(iter(_step(sched))) for _ in range(3)]
    assert order == ["urgent", "mid", "late-low"]


def test_fcfs_ignores_priority():
    sched = _scheduler(max_num_seqs=1, scheduling_policy="fcfs")
    sched.add(_request("first", _unique("first", 3), priority=9, arrival=0.0, max_tokens=1))
    sched.add(_request("second", _unique("second", 3), priority=0, arrival=1.0, max_tokens=1))
    assert [next(iter(_step(sched))) for _ in range(2)] == ["first", "second"]


def test_higher_priority_arrival_preempts_lower_priority_running_work():
    sched = _scheduler(max_num_seqs=1, scheduling_policy="priority", priority_aging_s=0)
    low = _request("low", _unique("low", 3), priority=1)
    sched.add(low)
    _step(sched)
    high = _request("high", _unique("high", 3), priority=0, arrival=1.0)
    sched.add(high)
    assert _step(sched) == {"high": 3}
    assert low.status == RequestStatus.PREEMPTED and sched.waiting == [low]
    # The same arrival under fcfs waits for a seat instead.
    sched = _scheduler(max_num_seqs=1, scheduling_policy="fcfs")
    low = _request("low", _unique("low", 3), priority=1)
    sched.add(low)
    _step(sched)
    sched.add(_request("high", _unique("high", 3), priority=0, arrival=1.0))
    assert _step(sched) == {"low": 1}


def test_priority_preemption_frees_kv_for_the_urgent_request():
    sched = _scheduler(num_blocks=4, max_num_seqs=8, scheduling_policy="priority")
    low = _request("low", _unique("low", 12), priority=1)  # 3 of the 4 blocks
    sched.add(low)
    _step(sched)
    sched.add(_request("high", _unique("high", 8), priority=0, arrival=1.0))  # needs 2
    assert _step(sched) == {"high": 8}
    assert low.status == RequestStatus.PREEMPTED


def test_aging_lets_old_low_priority_work_overtake_new_urgent_work():
    # One level per 10 s: a priority-3 request that arrived 40 s earlier outranks priority 0.
    sched = _scheduler(max_num_seqs=1, scheduling_policy="priority", priority_aging_s=10.0)
    sched.add(_request("old", _unique("old", 3), priority=3, arrival=0.0, max_tokens=1))
    sched.add(_request("new", _unique("new", 3), priority=0, arrival=40.0, max_tokens=1))
    sched.add(_request("newer", _unique("newer", 3), priority=0, arrival=20.0, max_tokens=1))
    assert [next(iter(_step(sched))) for _ in range(3)] == ["newer", "old", "new"]


def test_no_starvation_under_a_stream_of_urgent_requests():
    sched = _scheduler(max_num_seqs=1, scheduling_policy="priority", priority_aging_s=5.0)
    sched.add(_request("low", _unique("low", 3), priority=10, arrival=0.0, max_tokens=1))
    served = []
    for t in range(100):  # a new urgent request every second
        urgent = _request(f"u{t}", _unique(f"u{t}", 3), priority=0, arrival=float(t), max_tokens=1)
        sched.add(urgent)
        served.extend(_step(sched))
        if "low" in served:
            break
    # Served once its 10 levels have aged away at 5 s each, never before.
    assert "low" in served and 50 <= len(served) <= 53


def test_cache_aware_admits_longest_cached_prefix_first():
    sched = _scheduler(max_num_seqs=2, scheduling_policy="cache-aware")
    shared = _unique("shared", 16)
    sched.add(_request("seed", shared + [1], max_tokens=1))
    _step(sched)  # its 16 shared tokens are now cached
    sched.add(_request("cold", _unique("cold", 17), arrival=1.0, max_tokens=1))
    sched.add(_request("warm", shared + [2], arrival=2.0, max_tokens=1))
    first = _step(sched)
    assert list(first)[0] == "warm" and first["warm"] == 1  # 16 tokens came from the cache


def _decodes_and_prompt(policy: str, **kw) -> tuple[Scheduler, list[Request]]:
    sched = _scheduler(budget=16, interleave_policy=policy, **kw)
    decoders = [_request(f"d{i}", _unique(f"d{i}", 2)) for i in range(3)]
    for d in decoders:
        sched.add(d)
    _step(sched)  # three requests now decode one token per step
    sched.add(_request("long", _unique("long", 40), arrival=1.0))
    return sched, decoders


def test_stall_free_mixes_decodes_with_prefill_chunks():
    sched, _ = _decodes_and_prompt("stall-free")
    assert _step(sched) == {"d0": 1, "d1": 1, "d2": 1, "long": 13}


def test_prefill_first_pauses_decodes_until_the_prompt_is_done():
    sched, _ = _decodes_and_prompt("prefill-first")
    plans = [_step(sched) for _ in range(4)]
    assert plans[:3] == [{"long": 16}, {"long": 16}, {"long": 8}]
    assert plans[3] == {"d0": 1, "d1": 1, "d2": 1, "long": 1}


@pytest.mark.parametrize("wait", [1, 3])
def test_decode_first_runs_prefill_alone_after_waiting(wait: int):
    sched, _ = _decodes_and_prompt("decode-first", decode_first_max_wait_steps=wait)
    plans = [_step(sched) for _ in range(wait + 1)]
    assert all(p == {"d0": 1, "d1": 1, "d2": 1} for p in plans[:wait])
    assert plans[wait] == {"long": 16}


def test_n_siblings_reserve_their_seats():
    sched = _scheduler(max_num_seqs=3)
    first = _request("g#0", _unique("g", 5))
    siblings = [_request(f"g#{i}", _unique("g", 5)) for i in (1, 2, 3)]
    sched.add(first, siblings)
    assert _step(sched) == {}  # 4 samples do not fit in 3 seats
    sched.max_num_seqs = 4
    assert _step(sched) == {"g#0": 5}
    assert all(s.status == RequestStatus.RUNNING for s in siblings)
    assert _step(sched) == {"g#0": 1, "g#1": 1, "g#2": 1, "g#3": 1}
    assert sched.num_new_waiting == 0
