"""Scheduler: continuous batching under a per-step token budget.

One rule covers everything (DESIGN.md): each request has num_computed_tokens, and every step
the scheduler lets requests catch up toward num_tokens within max_num_batched_tokens. A long
prompt therefore prefills in chunks beside running decodes; a request that cannot get KV blocks
preempts the newest running request, which frees its blocks, resets num_computed_tokens to 0
and later recomputes its prompt and the tokens it already produced.
"""

from __future__ import annotations

from collections import deque
from typing import cast

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import FINISH_LENGTH, FINISH_STOP, Request, RequestStatus
from intaglio.executor.base import ScheduledRequest, SchedulerOutput


class Scheduler:
    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    @property
    def num_new_waiting(self) -> int:
        """Waiting requests that were never scheduled (preempted ones do not count to limits)."""
        return sum(1 for r in self.waiting if r.num_preemptions == 0)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            while not self.block_manager.allocate(request, num_new):
                victim = self.running.pop()  # newest first: it has the least work to redo
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is request:
                    break
            else:
                out.scheduled.append(ScheduledRequest(request, num_new))
                budget -= num_new
                i += 1
        # New work joins only when nothing had to be preempted this step.
        while (
            not out.preempted
            and self.waiting
            and budget > 0
            and len(self.running) < self.max_num_seqs
        ):
            request = self.waiting[0]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            if not self.block_manager.allocate(request, num_new):
                break
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.scheduled.append(ScheduledRequest(request, num_new))
            budget -= num_new
        return out

    def update(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
        """Advance progress, append sampled tokens, apply token-level stops; return finished."""
        finished = []
        for s in out.scheduled:
            request = cast(Request, s.request)
            request.num_computed_tokens += s.num_new_tokens
            token = sampled.get(request.request_id)
            if token is None:
                continue  # a prefill chunk that did not reach the end of the prompt
            request.output_token_ids.append(token)
            num_out = len(request.output_token_ids)
            params = request.params
            if num_out >= params.min_tokens:
                if token in params.stop_token_ids:
                    request.finish(FINISH_STOP, token)
                elif not params.ignore_eos and token in request.eos_token_ids:
                    request.finish(FINISH_STOP, None)
            if not request.is_finished and num_out >= request.max_tokens:
                request.finish(FINISH_LENGTH)
            if request.is_finished:
                finished.append(request)
        for request in finished:
            self._remove(request)
        return finished

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
        self.block_manager.free(request)

    def _preempt(self, request: Request) -> None:
        self.block_manager.free(request)
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)
