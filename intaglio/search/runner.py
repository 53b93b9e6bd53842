"""ProgramRunner: runs search programs on one LLMEngine, beside any other requests it serves.

The runner resumes every program whose awaited operations are ready (a program only ever
awaits `Wait`), submits what they launched as ordinary engine requests, and takes the engine's
outputs after each step. It never steps the engine itself: `run_programs` does offline, the
server's engine thread does when it serves programs, so programs and plain requests share steps.

Each program has its accounting (`ProgramStats`) and an optional `Budget`. A token budget is
never exceeded: before each step the runner ends the newest live samples of a program until
every live one could draw a token without passing it (a step gives a sample at most one token,
plus its drafts under speculative decoding); a time budget is checked before each step.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from intaglio.api.chat_prompt import Conversation, render_conversation
from intaglio.engine.engine import LLMEngine
from intaglio.engine.outputs import RequestOutput
from intaglio.engine.request import FINISH_ABORT
from intaglio.sampling.params import SamplingParams
from intaglio.search.program import Branch, Pending, Search, Wait

T = TypeVar("T")
_RUNNERS = itertools.count()  # request ids stay unique across runners on one engine
Program = Callable[[Search], Coroutine[Any, Any, T]]  # an async def function


@dataclass(frozen=True)
class Budget:
    """A program's compute budget: generated tokens, wall seconds, or both."""

    max_tokens: int | None = None
    max_seconds: float | None = None


@dataclass
class ProgramStats:
    """What a program cost, so compute and quality can be read off together."""

    generated_tokens: int = 0
    prompt_tokens: int = 0  # context tokens of every request it made
    cached_tokens: int = 0  # of those, served from the prefix cache or a fork's shared KV
    peak_kv_blocks: int = 0  # the most KV blocks its live requests held at once
    num_requests: int = 0
    wall_s: float = 0.0
    budget_exhausted: bool = False


@dataclass
class ProgramResult(Generic[T]):
    value: T | None
    stats: ProgramStats
    error: str | None = None


@dataclass
class ProgramState:
    """One running program: its coroutine, what it waits on, its requests and accounting."""

    runner: ProgramRunner
    budget: Budget
    coroutine: Coroutine[Wait, None, Any] | None = None
    stats: ProgramStats = field(default_factory=ProgramStats)
    start: float = field(default_factory=time.perf_counter)
    waiting: Wait | None = None
    pendings: dict[str, Pending] = field(default_factory=dict)  # live, by request id
    exhausted: bool = False
    reserved_tokens: int = 0  # held for beam searches in flight
    result: ProgramResult[Any] | None = None

    @property
    def tokens_left(self) -> int | None:
        limit = self.budget.max_tokens
        return None if limit is None else limit - self.stats.generated_tokens - self.reserved_tokens

    def launch(self, branches: Sequence[Branch], fields: dict[str, Any]) -> list[Pending]:
        """One engine request per fork group (n samples) and per branch outside one."""
        groups: dict[object, list[Branch]] = {}
        for i, b in enumerate(branches):
            key = b.fork_group if b.fork_group is not None else i
            groups.setdefault(key, []).append(b)
        return [self._submit(bs[0], len(bs), fields) for bs in groups.values()]

    def _submit(self, branch: Branch, n: int, fields: dict[str, Any]) -> Pending:
        width = 0
        if fields.get("use_beam_search"):  # one context; n is how many beams come back
            n = fields.get("n", 1)
            width = fields.get("best_of") or n
        pending = Pending(self.runner.new_request_id(), branch, n, beam_width=width)
        left = self.tokens_left
        # Each sample (each beam) may take at most its share of what is left.
        share = None if left is None else left // max(width, 1)
        if self.exhausted or (share is not None and share <= 0):
            self.exhausted = self.stats.budget_exhausted = True
            pending.finish_reasons = [FINISH_ABORT] * n
            pending.done = True
            return pending
        fields = {"logprobs": 0, **fields, "n": n, "output_kind": "delta"}
        max_tokens = fields.get("max_tokens", 16)
        if share is not None:
            fields["max_tokens"] = share if max_tokens is None else min(max_tokens, share)
            if width:
                pending.reserved_tokens = width * fields["max_tokens"]
                self.reserved_tokens += pending.reserved_tokens
        self.runner.add(self, pending, SamplingParams(**fields))
        return pending

    def launch_score(self, branch: Branch, context: Branch) -> Pending:
        """A request that only reads the log-probabilities of branch's tokens after context."""
        pending = Pending(self.runner.new_request_id(), branch, 1)
        pending.prompt_logprobs = []
        pending.num_scored = len(branch.token_ids) - len(context.token_ids)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, output_kind="final_only")
        self.runner.add(self, pending, params)
        return pending

    def prune(self, pending: Pending) -> None:
        if not pending.done:
            self.runner.engine.abort(pending.request_id)


class ProgramRunner:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._programs: list[ProgramState] = []
        self._owner: dict[str, ProgramState] = {}  # request id -> the program that made it
        self._ids = itertools.count()
        self._prefix = f"search{next(_RUNNERS)}"
        config = engine.core.config
        spec = config.num_speculative_tokens if config.speculative_method else 0
        self._tokens_per_step = 1 + spec  # the most a sample can gain in one step

    # ------------------------------------------------------------ programs
    def start(self, program: Program[Any], budget: Budget | None = None) -> ProgramState:
        """Start a program; it runs up to its first wait now."""
        state = ProgramState(self, budget or Budget())
        state.coroutine = program(Search(state))
        self._programs.append(state)
        self._resume(state)
        return state

    def has_work(self) -> bool:
        return any(p.result is None for p in self._programs)

    def has_requests(self) -> bool:
        """Requests of its programs not yet finished in the engine (pruned ones included)."""
        return bool(self._owner)

    def fail_all(self, message: str) -> None:
        """End every program with an error (the engine is stopping or failed)."""
        for state in self._programs:
            if state.result is None:
                self._end(state, ProgramResult(None, state.stats, message))

    def take_finished(self) -> list[ProgramState]:
        done = [p for p in self._programs if p.result is not None]
        self._programs = [p for p in self._programs if p.result is None]
        return done

    # ------------------------------------------------------------ engine side
    def new_request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def add(self, state: ProgramState, pending: Pending, params: SamplingParams) -> None:
        self.engine.add_request(pending.request_id, list(pending.branch.token_ids), params)
        self._owner[pending.request_id] = state
        state.pendings[pending.request_id] = pending
        state.stats.num_requests += 1
        samples = 1 if params.use_beam_search else params.n  # beams read the prompt once
        state.stats.prompt_tokens += len(pending.branch.token_ids) * samples

    def encode_prompt(self, prompt: str | Sequence[int] | Conversation) -> list[int]:
        tokenizer = self.engine.tokenizer
        if isinstance(prompt, str):
            return list(tokenizer.encode(prompt))
        if prompt and isinstance(prompt[0], dict):
            text, add_special = render_conversation(tokenizer, prompt)  # type: ignore[arg-type]
            return list(tokenizer.encode(text, add_special_tokens=add_special))
        return [int(t) for t in prompt]  # type: ignore[arg-type]

    def encode_text(self, text: str) -> list[int]:
        return list(self.engine.tokenizer.encode(text, add_special_tokens=False))

    def before_step(self) -> None:
        """Enforce budgets: end what could pass a program's tokens or time."""
        now = time.perf_counter()
        for state in self._programs:
            if state.result is not None:
                continue
            budget, live = state.budget, list(state.pendings.values())
            out_of_time = budget.max_seconds is not None and now - state.start >= budget.max_seconds
            left = state.tokens_left
            if left is None and not out_of_time:
                continue
            # Beams keep within the tokens reserved for them; a time limit aborts them whole.
            beams = [p for p in live if p.beam_width]
            live = [p for p in live if not p.beam_width]
            if out_of_time:
                for pending in beams:
                    state.prune(pending)
                    state.exhausted = state.stats.budget_exhausted = True
            num_live = sum(p.num_live for p in live)
            allowed = 0 if out_of_time else max(left or 0, 0) // self._tokens_per_step
            for pending in reversed(live):  # the newest samples end first
                for i in reversed(range(pending.n)):
                    if num_live <= allowed:
                        break
                    if pending.finish_reasons[i] is None:
                        self.engine.abort_sample(pending.request_id, i)
                        pending.finish_reasons[i] = FINISH_ABORT
                        num_live -= 1
                        state.exhausted = state.stats.budget_exhausted = True
                if all(r is not None for r in pending.finish_reasons):
                    self._finish(state, pending)
            self._wake(state)

    def feed(self, outputs: Sequence[RequestOutput]) -> None:
        """Take one step's outputs (others' are ignored) and resume programs now ready."""
        for out in outputs:
            state = self._owner.get(out.request_id)
            if state is None:
                continue
            pending = state.pendings.get(out.request_id)
            if pending is None:  # ended by a budget already
                continue
            self._record(state, pending, out)
            if out.finished:
                self._finish(state, pending)
                state.stats.cached_tokens += out.metrics.num_reused_prompt_tokens
        for state in self._programs:
            if state.result is None:
                blocks: set[int] = set()
                for rid in state.pendings:
                    blocks |= self.engine.core.kv_blocks(rid)
                state.stats.peak_kv_blocks = max(state.stats.peak_kv_blocks, len(blocks))
                self._wake(state)

    def _record(self, state: ProgramState, pending: Pending, out: RequestOutput) -> None:
        if pending.prompt_logprobs is not None:
            if out.finished and out.prompt_logprobs is not None and pending.num_scored > 0:
                entries = out.prompt_logprobs[-pending.num_scored :]
                pending.prompt_logprobs += [next(iter(e.values())) for e in entries if e]
            return
        if pending.beam_width and out.finished:  # width beams grew to the longest length
            longest = max((len(c.token_ids) for c in out.outputs), default=0)
            state.stats.generated_tokens += pending.beam_width * longest
            state.reserved_tokens -= pending.reserved_tokens
        for c in out.outputs:
            if pending.finish_reasons[c.index] is not None:
                continue  # ended by the budget: what comes after is not counted
            pending.token_ids[c.index] += c.token_ids
            pending.texts[c.index].append(c.text)
            if c.cumulative_logprob is not None:  # beam search ranks by it
                pending.logprobs[c.index] += c.cumulative_logprob
            else:
                pending.logprobs[c.index] += sum(next(iter(e.values())) for e in c.logprobs or ())
            pending.finish_reasons[c.index] = c.finish_reason
            pending.stop_reasons[c.index] = c.stop_reason
            if not pending.beam_width:
                state.stats.generated_tokens += len(c.token_ids)

    def _finish(self, state: ProgramState, pending: Pending) -> None:
        pending.done = True
        # An aborted beam search reports no beams: its samples end empty.
        pending.finish_reasons = [r or FINISH_ABORT for r in pending.finish_reasons]
        state.pendings.pop(pending.request_id, None)
        self._owner.pop(pending.request_id, None)

    def _wake(self, state: ProgramState) -> None:
        if state.result is None and state.waiting is not None and state.waiting.ready():
            self._resume(state)

    def _resume(self, state: ProgramState) -> None:
        assert state.coroutine is not None
        try:
            state.waiting = state.coroutine.send(None)
        except StopIteration as e:
            self._end(state, ProgramResult(e.value, state.stats))
            return
        except Exception as e:  # a failing program fails alone
            self._end(state, ProgramResult(None, state.stats, f"{type(e).__name__}: {e}"))
            return
        if state.waiting.ready():  # e.g. launches the budget refused at once
            self._resume(state)

    def _end(self, state: ProgramState, result: ProgramResult[Any]) -> None:
        for pending in list(state.pendings.values()):
            state.prune(pending)  # a program that returns early leaves nothing running
        state.stats.wall_s = time.perf_counter() - state.start
        state.result = result


def run_programs(
    engine: LLMEngine, programs: Sequence[Program[T]], budget: Budget | None = None
) -> list[ProgramResult[T]]:
    """Run programs to completion on the engine's shared batches; results in order."""
    runner = ProgramRunner(engine)
    states = [runner.start(p, budget) for p in programs]
    # Programs that returned early pruned their requests; their ends are flushed here too.
    while runner.has_work() or runner.has_requests():
        runner.before_step()
        if not engine.has_unfinished():
            if runner.has_work():
                raise RuntimeError("a search program waits on nothing the engine is running")
            break
        runner.feed(engine.step())
    results = [s.result for s in states]
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
