"""Scheduler: continuous batching under a per-step token budget, with policies.

One rule covers everything (DESIGN.md): each request has num_computed_tokens, and every step
the scheduler lets requests catch up toward num_tokens within max_num_batched_tokens. A long
prompt prefills in chunks beside running decodes; a prefix-cache hit starts a request past its
cached tokens; a request that cannot get KV blocks preempts the lowest-ranked running request,
which frees its blocks, resets num_computed_tokens to 0 and later recomputes (mostly from the
prefix cache). Which request ranks first is the scheduling policy (scheduling_policy.py); how
prefill chunks and decodes share a step is the interleave policy.
"""

from __future__ import annotations

import bisect
import itertools

from intaglio.config import MODEL_DRAFT_METHODS, EngineConfig
from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import FINISH_STOP, Request, RequestStatus
from intaglio.engine.scheduling_policy import Interleaver, RankKey, rank_key
from intaglio.engine.stop import check_prompt_done, check_token
from intaglio.executor.base import Executor
from intaglio.spec import SpecStats
from intaglio.step import ScheduledRequest, SchedulerOutput

# Cache-aware ordering matches every waiting request against the cache each step; past this
# many it falls back to rank order, as SGLang does, to bound the cost.
_CACHE_AWARE_MAX_WAITING = 128


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        scheduling_policy: str = "fcfs",
        priority_aging_s: float = 0.0,
        interleave_policy: str = "stall-free",
        decode_first_max_wait_steps: int = 8,
        num_lookahead_tokens: int = 0,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.policy = scheduling_policy
        self._rank: RankKey = rank_key(scheduling_policy, priority_aging_s)
        self._interleaver = Interleaver(interleave_policy, decode_first_max_wait_steps)
        self.waiting: list[Request] = []  # in rank order
        self.running: list[Request] = []
        # Samples 1..n-1 of an n > 1 request, forked from sample 0 once its prompt is in the
        # cache, so the prompt is computed once: sample 0's request_id -> its siblings.
        self._siblings: dict[str, list[Request]] = {}
        self._seq = itertools.count()
        self._scheduled_now: set[int] = set()  # id() of requests given tokens this step
        self.num_preemptions = 0
        self.num_computed_tokens = 0  # tokens run through the model so far (all steps)
        self.num_new_waiting = 0  # never-scheduled requests waiting (what max_num_waiting caps)
        self.spec_stats = SpecStats()
        # Slots reserved past a sampling step's tokens for a draft network's next drafts.
        self.num_lookahead_tokens = num_lookahead_tokens

    @classmethod
    def from_config(cls, config: EngineConfig, executor: Executor) -> Scheduler:
        """The engine's scheduler and its block manager, sized by the executor's KV cache."""
        block_manager = BlockManager(
            executor.num_kv_blocks,
            executor.block_size,
            config.prefix_caching,
            executor.num_local_kv_blocks,
            executor.attention_chunk_size,
        )
        return cls(
            block_manager,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            config.scheduling_policy,
            config.priority_aging_s,
            config.interleave_policy,
            config.decode_first_max_wait_steps,
            config.num_speculative_tokens
            if config.speculative_method in MODEL_DRAFT_METHODS
            else 0,
        )

    # ------------------------------------------------------------------ queue
    def add(self, request: Request, siblings: list[Request] | tuple[Request, ...] = ()) -> None:
        """Queue a request; `siblings` are forked from it after its prompt is computed."""
        request.seq = next(self._seq)
        for sibling in siblings:
            sibling.seq = next(self._seq)
        self._enqueue(request)
        self.num_new_waiting += 1 + len(siblings)
        if siblings:
            self._siblings[request.request_id] = list(siblings)

    def fork(self, parent: Request, child: Request) -> None:
        """Continue `child` (a copy of parent's tokens) from parent's KV, sharing its blocks."""
        child.seq = next(self._seq)
        if parent.status is not RequestStatus.RUNNING:
            self._enqueue(child)  # the parent holds no KV now; the child computes its own
            return
        self._run_forked(parent, child, min(parent.num_computed_tokens, child.num_tokens - 1))

    def _run_forked(self, parent: Request, child: Request, num_computed: int) -> None:
        """Start child running on parent's KV up to num_computed tokens (shared blocks)."""
        child.num_computed_tokens = child.num_cached_tokens = num_computed
        self.block_manager.fork(parent, child)
        child.status = RequestStatus.RUNNING
        self.running.append(child)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _enqueue(self, request: Request) -> None:
        bisect.insort(self.waiting, request, key=self._rank)

    # ------------------------------------------------------------------ schedule
    def schedule(self) -> SchedulerOutput[Request]:
        out: SchedulerOutput[Request] = SchedulerOutput()
        self._scheduled_now.clear()
        self.running.sort(key=self._rank)
        if self.policy == "priority":
            self._preempt_for_waiting(out)
        num_displaced = len(out.preempted)  # by priority; later ones: running work lacked KV
        budget = self.max_num_batched_tokens
        active = [r for r in self.running if not r.held]
        decodes = [r for r in active if r.num_tokens - r.num_computed_tokens == 1]
        has_prefill = len(decodes) < len(active) or any(not r.held for r in self.waiting)
        run_decodes, run_prefills = self._interleaver.choose(bool(decodes), has_prefill)
        if run_decodes:
            budget = self._schedule_running(decodes, budget, out)
        if run_prefills:
            prefills = [r for r in active if r.num_tokens - r.num_computed_tokens > 1]
            budget = self._schedule_running(prefills, budget, out)
            if len(out.preempted) == num_displaced:  # new work joins only without KV pressure
                budget = self._admit_waiting(budget, out)
            if not out.scheduled and not run_decodes:  # no prefill could run: do not idle
                self._schedule_running(decodes, budget, out)
        out.block_copies, out.local_block_copies = self.block_manager.take_copies()
        return out

    def _schedule_running(
        self, requests: list[Request], budget: int, out: SchedulerOutput[Request]
    ) -> int:
        for request in requests:
            if budget <= 0:
                break
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted earlier this step
            remaining = request.num_tokens - request.num_computed_tokens
            drafts = request.spec_token_ids if remaining == 1 else []
            num_new = min(remaining + len(drafts), budget)
            # Drafts share the step's token budget with prefill chunks and decodes.
            drafts = drafts[: num_new - min(remaining, num_new)]
            # A draft network writes its next drafts' K/V past this step's tokens.
            lookahead = self.num_lookahead_tokens if num_new >= remaining else 0
            if self._make_room(request, num_new + lookahead, out):
                self._record(request, num_new, out, drafts)
                budget -= num_new
        return budget

    def _make_room(self, request: Request, num_slots: int, out: SchedulerOutput[Request]) -> bool:
        """Allocate, preempting the lowest-ranked requests not yet scheduled this step."""
        while not self.block_manager.allocate(request, num_slots):
            victim = next(r for r in reversed(self.running) if id(r) not in self._scheduled_now)
            self.running.remove(victim)
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is request:
                return False
        return True

    def _admit_waiting(self, budget: int, out: SchedulerOutput[Request]) -> int:
        for request in self._waiting_order():
            if request.held:
                continue
            if budget <= 0 or len(self.running) + self._seats(request) > self.max_num_seqs:
                break
            num_new = self.block_manager.admit(request, budget)
            if num_new is None:
                break  # head-of-line: later requests wait their turn too
            self.waiting.remove(request)
            if request.num_preemptions == 0:
                self.num_new_waiting -= 1
                request.num_cached_tokens = request.num_computed_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            self._record(request, num_new, out)
            budget -= num_new
        return budget

    def _seats(self, request: Request) -> int:
        """Running slots a waiting request takes: itself and the siblings forked from it."""
        return 1 + len(self._siblings.get(request.request_id, ()))

    def _waiting_order(self) -> list[Request]:
        if self.policy != "cache-aware" or len(self.waiting) > _CACHE_AWARE_MAX_WAITING:
            return list(self.waiting)
        # Longest cached prefix first (SGLang's longest-prefix-match), then rank order.
        hits = {id(r): len(self.block_manager.cached_prefix(r)) for r in self.waiting}
        return sorted(self.waiting, key=lambda r: -hits[id(r)])  # stable: keeps rank order

    def _preempt_for_waiting(self, out: SchedulerOutput[Request]) -> None:
        """Higher-priority waiting work displaces lower-priority running work."""
        if not self.waiting:
            return
        head = self.waiting[0]
        seats = self._seats(head)
        blocks = self.block_manager.blocks_to_admit(head, self.max_num_batched_tokens)
        while self.running and self._rank(head) < self._rank(self.running[-1]):
            if (
                len(self.running) + seats <= self.max_num_seqs
                and blocks <= self.block_manager.num_free_blocks
            ):
                return
            worst = self.running.pop()
            self._preempt(worst)
            out.preempted.append(worst)

    def _record(
        self,
        request: Request,
        num_new: int,
        out: SchedulerOutput[Request],
        drafts: list[int] | None = None,
    ) -> None:
        out.scheduled.append(ScheduledRequest(request, num_new, drafts or []))
        self._scheduled_now.add(id(request))
        self.num_computed_tokens += num_new

    # ------------------------------------------------------------------ update
    def update(self, out: SchedulerOutput[Request], sampled: dict[str, list[int]]) -> list[Request]:
        """Advance progress, append sampled tokens, end the requests the stop check (stop.py)
        ends; return those."""
        finished = []
        for s in out.scheduled:
            request = s.request
            request.spec_token_ids = []  # used; the next step gets fresh drafts
            tokens = sampled.get(request.request_id)
            if tokens is None:  # a prefill chunk, or an embedding request's (which may end it)
                request.num_computed_tokens += s.num_new_tokens
                end = check_prompt_done(request)
                if end is not None:
                    request.finish(end.reason)
                    finished.append(request)
                continue
            # Rejected drafts roll back: their K/V stays in slots the next step overwrites.
            num_accepted = len(tokens) - 1
            request.num_computed_tokens += s.num_new_tokens - len(s.spec_token_ids) + num_accepted
            if s.spec_token_ids:
                self.spec_stats.record(s.spec_token_ids, num_accepted)
                request.spec.record(s.spec_token_ids, num_accepted)
                request.num_spec_tried += num_accepted + (num_accepted < len(s.spec_token_ids))
            siblings = self._siblings.pop(request.request_id, None)
            if siblings:
                self._fork_siblings(request, siblings)
            for token in tokens:
                request.output_token_ids.append(token)
                end = check_token(request, token)
                if end is not None:  # tokens after it are dropped
                    request.finish(end.reason, end.stop_reason)
                    request.error = end.error
                    finished.append(request)
                    break
            else:
                self.block_manager.trim(request)
        for request in finished:
            self._remove(request)
        return finished

    def _fork_siblings(self, first: Request, siblings: list[Request]) -> None:
        """The prompt is in the cache: each sibling recomputes only the last prompt token, to
        sample its own first token from its own logits."""
        for sibling in siblings:
            self._run_forked(first, sibling, first.num_prompt_tokens - 1)
        self.num_new_waiting -= len(siblings)

    def finish(self, request: Request, reason: str, stop_reason: str | int | None = None) -> None:
        """Finish a request from outside (a stop string, an abort)."""
        if not request.is_finished:
            request.finish(reason, stop_reason)
        self._remove(request)

    def _remove(self, request: Request) -> None:
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
            if request.num_preemptions == 0:
                self.num_new_waiting -= 1
        else:  # a sibling not forked yet
            for siblings in self._siblings.values():
                if request in siblings:
                    siblings.remove(request)
                    self.num_new_waiting -= 1
        for sibling in self._siblings.pop(request.request_id, ()):
            sibling.finish(request.finish_reason or FINISH_STOP)
            self.num_new_waiting -= 1
        self.block_manager.free(request)

    def _preempt(self, request: Request) -> None:
        self.block_manager.free(request)
        request.spec_token_ids = []
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(request)
