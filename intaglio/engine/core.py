"""EngineCore: the token-level engine both the real engine and the simulator run.

It admits requests (prompt token ids and SamplingParams; n samples forked from the first),
forks and aborts them, and steps: schedule -> execute -> update (which applies the one stop
check, engine/stop.py, to every sampled token). Each step
returns, per user request it touched, only what is new: the tokens and logprobs each sample
gained, and how the ones that ended ended. Text (tokenizing, detokenizing, stop strings) is the
text layer's (engine.py); virtual time is the simulator's (sim/runner.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from intaglio.config import EngineConfig
from intaglio.engine import stop as stops
from intaglio.engine.beam_search import BeamSearch, Continuation
from intaglio.engine.outputs import RequestMetrics
from intaglio.engine.request import FINISH_ABORT, FINISH_STOP, Request
from intaglio.engine.scheduler import Scheduler
from intaglio.engine.speculator import Speculator
from intaglio.errors import RequestError
from intaglio.executor.base import Executor
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.state import SequenceSamplerState, thinking_markers
from intaglio.sampling.thinking import answer_start
from intaglio.spec import SpecStats

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The waiting queue is at max_num_waiting; retry later."""


@dataclass
class SampleUpdate:
    """One sample's news this step."""

    index: int
    new_token_ids: list[int]
    new_logprobs: list[dict[int, float]] | None
    finish_reason: str | None
    stop_reason: str | int | None
    # The sample's whole output and logprobs so far: the request's live lists (do not modify).
    output_token_ids: list[int]
    output_logprobs: list[dict[int, float]] | None
    output_confidences: list[float] | None = None  # the sample's live list, when asked for
    # The new tokens' confidences, copied now: the live list grows while this update waits.
    new_confidences: list[float] | None = None
    cumulative_logprob: float | None = None  # beam search: what ranked the sample


@dataclass
class CoreOutput:
    """What one user request gained this step; `finished` means the core has let it go."""

    request_id: str
    samples: list[SampleUpdate]
    new_prompt_logprobs: list[dict[int, float] | None] | None
    finished: bool
    metrics: RequestMetrics
    error: str | None = None
    embedding: list[float] | None = None  # an embedding request's vector, once it finished


@dataclass
class _Group:
    """One user request: its n samples share the prompt and are reported together."""

    request_id: str
    children: list[Request]
    metrics: RequestMetrics
    reported: list[int] = field(default_factory=list)  # per sample: tokens already reported
    new_prompt_logprobs: list[dict[int, float] | None] | None = None
    error: str | None = None
    finished: bool = False
    # Beam search: the children are the live beams, re-seated every step; the user's n
    # samples are the best finished hypotheses, reported once at the end.
    beam: BeamSearch | None = None


class EngineCore:
    def __init__(
        self,
        config: EngineConfig,
        executor: Executor,
        eos_token_ids: tuple[int, ...],
        max_model_len_limit: int | None = None,
        grammar_tokenizer: Any = None,
    ) -> None:
        """`grammar_tokenizer` (a HF tokenizer) gives structured requests their vocabulary."""
        self.config = config
        self.executor = executor
        self.eos_token_ids = eos_token_ids
        self.max_model_len = _max_model_len(config, executor, max_model_len_limit)
        self.scheduler = Scheduler.from_config(config, executor)
        self.block_manager = self.scheduler.block_manager
        self._grammar_tokenizer = grammar_tokenizer
        self._grammars: Any = None  # GrammarCompiler, built on the first structured request
        self._thinking_markers = thinking_markers(config.thinking_markers, grammar_tokenizer)
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, _Group] = {}  # sample request id -> its group
        self._aborted: list[_Group] = []
        self._beam_ids = itertools.count(1)  # request ids of forked beams
        self._speculator = Speculator.from_config(config) if config.speculative_method else None

    # ---------------------------------------------------------------- admission
    def add(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int = 0,
        cache_salt: str | None = None,
        arrival_time: float | None = None,
    ) -> None:
        """Queue a request; raises RequestError for bad input and QueueFullError at the limit.

        `priority` orders requests under the priority policy (lower first); requests share
        prefix-cache KV only with requests of the same `cache_salt`.
        """
        if request_id in self._groups:
            raise RequestError(f"request id {request_id!r} is already in use", "request_id")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise RequestError(f"priority must be an integer, got {priority!r}", "priority")
        if cache_salt is not None and (not isinstance(cache_salt, str) or not cache_salt):
            raise RequestError("cache_salt must be a non-empty string", "cache_salt")
        if self.scheduler.num_new_waiting + params.n > self.config.max_num_waiting:
            raise QueueFullError(
                f"the waiting queue is full ({self.config.max_num_waiting} requests); retry later"
            )
        self._check_tokens(prompt_token_ids, params)
        now = time.monotonic() if arrival_time is None else arrival_time
        group = _Group(request_id, [], RequestMetrics(now))
        if params.use_beam_search:
            self._add_beam_search(group, prompt_token_ids, params, priority, cache_salt)
            return
        for i in range(params.n):
            # Each sample gets its own seed stream; the same seed always gives the same samples.
            seed = None if params.seed is None else params.seed + i
            child = self._new_sample(
                f"{request_id}#{i}", prompt_token_ids, params, priority, cache_salt, seed
            )
            child.arrival_time, child.sample_index = now, i
            group.children.append(child)
        # Register only once every sample was built, so a failure above leaves nothing behind.
        self._register(group)
        # Samples after the first fork from it once the prompt is computed, sharing its KV.
        self.scheduler.add(group.children[0], group.children[1:])

    def _add_beam_search(
        self,
        group: _Group,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int,
        cache_salt: str | None,
    ) -> None:
        """One greedy request computes the prompt; the beams fork from it after each step."""
        eos = () if params.ignore_eos else self.eos_token_ids
        beam = BeamSearch(
            params.beam_width, params.n, 1, eos, params.length_penalty, params.early_stopping
        )
        if beam.num_candidates > self.executor.vocab_size:
            raise RequestError(
                f"a beam width of {params.beam_width} needs {beam.num_candidates} candidates "
                f"per step, more than the vocabulary's {self.executor.vocab_size} tokens",
                "best_of",
            )
        beam_params = dataclasses.replace(
            params, n=1, best_of=None, temperature=0.0, logprobs=0, ignore_eos=True, seed=None
        )
        # Each beam needs its top K next tokens; K may pass the API's cap of 20 logprobs.
        object.__setattr__(beam_params, "logprobs", beam.num_candidates)
        root = self._new_sample(
            f"{group.request_id}#0", prompt_token_ids, beam_params, priority, cache_salt, None
        )
        root.arrival_time = group.metrics.arrival_time
        beam.max_tokens = root.max_tokens
        group.beam, group.children = beam, [root]
        self._register(group)
        self.scheduler.add(root)

    def _check_tokens(self, token_ids: list[int], params: SamplingParams) -> None:
        if not token_ids:
            raise RequestError("the prompt is empty", "prompt")
        pooled = params.pooling is not None  # nothing is generated: the prompt may fill it
        if len(token_ids) > self.max_model_len - (0 if pooled else 1):
            room = "" if pooled else ", which must leave room for at least one generated token"
            raise RequestError(
                f"the prompt has {len(token_ids)} tokens; max_model_len is {self.max_model_len}"
                + room,
                "prompt",
                "context_length_exceeded",
            )
        vocab = self.executor.vocab_size
        for label, name, ids in (
            ("prompt token ids", "prompt", token_ids),
            ("stop_token_ids", "stop_token_ids", params.stop_token_ids),
            ("logit_bias", "logit_bias", [t for t, _ in params.logit_bias]),
            ("allowed_token_ids", "allowed_token_ids", params.allowed_token_ids or ()),
        ):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise RequestError(f"{label} out of range [0, {vocab}): {bad[:5]}", name)

    def fork(
        self, request_id: str, new_request_id: str, params: SamplingParams | None = None
    ) -> None:
        """Split a running single-sample request: the new one starts from its tokens so far and
        shares their KV (copy on write), then continues independently with `params`."""
        group = self._groups.get(request_id)
        if group is None or group.finished or len(group.children) != 1:
            raise RequestError(f"request {request_id!r} is not a running single-sample request")
        if new_request_id in self._groups:
            raise RequestError(f"request id {new_request_id!r} is already in use", "request_id")
        parent = group.children[0]
        if parent.is_finished:
            raise RequestError(f"request {request_id!r} has finished")
        params = params or parent.params
        if params.n != 1:
            raise RequestError("a fork is one sample; use n=1", "n")
        if params.max_tokens is not None and params.max_tokens <= len(parent.output_token_ids):
            raise RequestError(
                "the fork's max_tokens leaves no room beyond the tokens it inherits", "max_tokens"
            )
        child = self._new_sample(
            f"{new_request_id}#0",
            parent.prompt_token_ids,
            params,
            parent.priority,
            parent.cache_salt,
            params.seed,
        )
        child.output_token_ids = list(parent.output_token_ids)
        if child.sampler_state is not None:
            child.sampler_state.continue_from(parent.sampler_state)
        if child.matcher is not None:
            for token in _answer_tokens(child):
                if not child.matcher.accept_token(token):
                    raise RequestError(
                        "the tokens so far do not fit the fork's structured grammar", "structured"
                    )
        if child.logprobs is not None:
            child.logprobs = list(parent.logprobs or [])
        metrics = RequestMetrics(time.monotonic(), group.metrics.first_token_time)
        self._register(_Group(new_request_id, [child], metrics))
        self.scheduler.fork(parent, child)

    def _register(self, group: _Group) -> None:
        group.reported = [0] * len(group.children)  # a fork reports its inherited tokens too
        self._groups[group.request_id] = group
        for child in group.children:
            self._group_of[child.request_id] = group

    def _new_sample(
        self,
        request_id: str,
        token_ids: list[int],
        params: SamplingParams,
        priority: int,
        cache_salt: str | None,
        seed: int | None,
    ) -> Request:
        room = self.max_model_len - len(token_ids)
        request = Request(
            request_id=request_id,
            prompt_token_ids=token_ids,
            params=params,
            eos_token_ids=self.eos_token_ids,
            max_tokens=room if params.max_tokens is None else min(params.max_tokens, room),
            priority=priority,
            cache_salt=cache_salt,
            logprobs=[] if params.logprobs is not None else None,
        )
        request.seed = seed
        request.sampler_state = SequenceSamplerState.for_request(
            params, self._grammar_tokenizer, token_ids, self._thinking_markers
        )
        if params.structured is not None:  # compiled once per grammar (cached), then matched
            request.matcher = self._compile_grammar(params).matcher()
        return request

    @property
    def grammar_compiler(self) -> Any:
        """The GrammarCompiler (cached grammars for this vocabulary), built on first use. The
        server compiles in a worker process and hands the result in (add_automaton)."""
        if self._grammars is None:
            from intaglio.structured import GrammarCompiler, TokenizerInfo

            if self._grammar_tokenizer is None:
                raise RequestError("structured output needs a tokenizer", "structured")
            vocab = TokenizerInfo.from_hf_tokenizer(self._grammar_tokenizer, self.eos_token_ids)
            self._grammars = GrammarCompiler(vocab, self.config.grammar_timeout_s)
        return self._grammars

    def _compile_grammar(self, params: SamplingParams) -> Any:
        """Compile (cached, time-limited); a bad grammar raises ValueError for this request."""
        try:
            return self.grammar_compiler.compile(params.structured)
        except ValueError as e:
            raise RequestError(str(e), "structured") from e

    def abort(self, request_id: str) -> None:
        group = self._groups.get(request_id)
        if group is None or group.finished:
            return
        for child in group.children:
            self.scheduler.finish(child, FINISH_ABORT)
        self._aborted.append(group)  # its final output goes out with the next step

    def stop(self, request_id: str, index: int, stop: stops.Stop) -> bool:
        """End sample `index` from outside (a stop string, a detokenizer failure); True when
        that ends the whole request, which the core then lets go."""
        group = self._groups[request_id]
        child = group.children[index]
        child.finish(stop.reason, stop.stop_reason)  # wins over an end reached this step
        self.scheduler.finish(child, stop.reason, stop.stop_reason)
        if stop.error is not None:
            group.error = stop.error
        return self._release_if_done(group)

    def kv_blocks(self, request_id: str) -> set[int]:
        """The KV blocks a user request's live samples hold now (shared ones once)."""
        group = self._groups.get(request_id)
        if group is None:
            return set()
        return {b for child in group.children for b in child.block_ids}

    @property
    def speculator(self) -> Speculator | None:
        """Who drafts for running decodes (None without speculation); the simulator swaps in
        a proposer that drafts at a measured rate."""
        return self._speculator

    def has_unfinished(self) -> bool:
        """True while any request has not had its final output (aborted ones too)."""
        return bool(self._groups)

    # ---------------------------------------------------------------- stepping
    def step(self) -> list[CoreOutput]:
        """Run one step; return what every request it advanced (or aborted) gained."""
        touched = {g.request_id: g for g in self._aborted}
        self._aborted = []
        sched = self.scheduler.schedule()
        if self._speculator is not None:
            sched.num_draft_tokens = self._speculator.num_draft_tokens
        if sched.is_empty:
            if self.scheduler.has_unfinished():
                raise RuntimeError("no request could be scheduled; the KV cache is too small")
            return [self._output(g) for g in touched.values()]
        start = time.perf_counter()
        result = self.executor.execute(sched)
        # The draft-length controller learns what a decode row costs, so it times only steps of
        # decodes and verifications: a prefill token is far cheaper than a row that reads its
        # whole context, and mixing them would make drafts look cheap.
        if self._speculator is not None and all(s.is_decode for s in sched.scheduled):
            num_tokens = sum(s.num_new_tokens for s in sched.scheduled)
            seconds = result.duration_s
            if seconds is None:
                seconds = time.perf_counter() - start
            self._speculator.observe_step(num_tokens, seconds)
        for request in self.scheduler.update(sched, result.sampled):
            if request.error is not None:
                self._group_of[request.request_id].error = request.error
            if self._speculator is not None:
                self._speculator.finish(request)
        now = time.monotonic()
        for s in sched.scheduled:
            request = s.request
            group = self._group_of[request.request_id]
            touched[group.request_id] = group
            entries = result.prompt_logprobs.get(request.request_id)
            if entries is not None:  # only the first sample reports the shared prompt's
                group.new_prompt_logprobs = [*(group.new_prompt_logprobs or []), *entries]
                request.num_prompt_logprobs += len(entries)
            pooled = result.pooled.get(request.request_id)
            if pooled is not None:
                total, count = pooled
                if request.pooled_sum is not None:
                    total = [a + b for a, b in zip(request.pooled_sum, total)]
                request.pooled_sum = total
                request.num_pooled += count
            if request.request_id not in result.sampled:
                continue
            if group.metrics.first_token_time is None:
                group.metrics.first_token_time = now
            if request.logprobs is not None:  # one entry per token kept (a stop drops the rest)
                kept = len(request.output_token_ids) - len(request.logprobs)
                request.logprobs.extend(result.logprobs[request.request_id][:kept])
        for group in touched.values():
            if group.beam is not None and not group.beam.done and not group.finished:
                self._advance_beams(group)
        if self._speculator is not None:
            self._speculator.propose(self.scheduler, result.draft_token_ids)
        return [self._output(g) for g in touched.values()]

    def _advance_beams(self, group: _Group) -> None:
        """Once every live beam has drawn, choose the next beams and re-seat the requests."""
        beam = group.beam
        assert beam is not None
        live = group.children
        drawn = [len(r.output_token_ids) == beam.num_generated + 1 for r in live]
        if not all(drawn):  # a beam was preempted or left out of this step: the others wait
            for r, d in zip(live, drawn):
                r.held = d
            return
        assert all(r.logprobs for r in live)
        if beam.num_generated == 0:  # the prompt's request, before any beam forks
            group.metrics.num_cached_tokens = live[0].num_cached_prompt_tokens
        tops = [r.logprobs[-1] for r in live]  # type: ignore[index]
        chosen = beam.advance(tops, [r.output_token_ids[:-1] for r in live])
        seated: list[Request] = []
        first_use: set[int] = set()
        for c in chosen:
            parent = live[c.parent]
            if c.parent in first_use:
                seated.append(self._fork_beam(group, parent, c))
                continue
            first_use.add(c.parent)
            seated.append(parent)
        for request, c in zip(seated, chosen):  # after the forks copied the parents' tokens
            if request is live[c.parent]:
                request.output_token_ids[-1] = c.token_id
        for b, r in enumerate(live):
            if b not in first_use:  # not chosen: its blocks return to the pool now
                if not r.is_finished:
                    self.scheduler.finish(r, FINISH_STOP)
                group.metrics.num_reused_prompt_tokens += r.num_cached_prompt_tokens
                del self._group_of[r.request_id]
        for r in seated:
            r.held = False
            r.logprobs = []  # only the next step's entry is read
        group.children = seated or [r for r in live if r.request_id in self._group_of]

    def _fork_beam(self, group: _Group, parent: Request, c: Continuation) -> Request:
        """A second beam from the same parent: its tokens with the chosen last one, its KV."""
        child = self._new_sample(
            f"{group.request_id}#{next(self._beam_ids)}",
            parent.prompt_token_ids,
            parent.params,
            parent.priority,
            parent.cache_salt,
            None,
        )
        child.arrival_time = parent.arrival_time
        child.output_token_ids = [*parent.output_token_ids[:-1], c.token_id]
        self._group_of[child.request_id] = group
        self.scheduler.fork(parent, child)
        child.num_cached_tokens = 0  # the search's own KV, not a prefix-cache hit
        return child

    def _output(self, group: _Group) -> CoreOutput:
        samples = [] if group.beam is None else _beam_samples(group)
        for i, child in enumerate(() if group.beam is not None else group.children):
            start = group.reported[i]
            num = len(child.output_token_ids)
            if num == start and not child.is_finished:
                continue
            group.reported[i] = num
            confidences = _confidences(child)
            samples.append(
                SampleUpdate(
                    index=i,
                    new_token_ids=child.output_token_ids[start:num],
                    new_logprobs=None if child.logprobs is None else child.logprobs[start:num],
                    finish_reason=child.finish_reason,
                    stop_reason=child.stop_reason,
                    output_token_ids=child.output_token_ids,
                    output_logprobs=child.logprobs,
                    output_confidences=confidences,
                    new_confidences=None if confidences is None else confidences[start:num],
                )
            )
        new_prompt, group.new_prompt_logprobs = group.new_prompt_logprobs, None
        if group.beam is None:  # a beam search's is set when its first beams are chosen
            group.metrics.num_cached_tokens = group.children[0].num_cached_prompt_tokens
        return CoreOutput(
            group.request_id,
            samples,
            new_prompt,
            self._release_if_done(group),
            group.metrics,
            group.error,
            None if group.beam is not None else _embedding(group.children[0]),
        )

    def _release_if_done(self, group: _Group) -> bool:
        if group.finished:
            return True
        if not all(c.is_finished for c in group.children):
            return False
        group.finished = True
        group.metrics.finished_time = time.monotonic()
        group.metrics.num_preemptions = sum(c.num_preemptions for c in group.children)
        reused = sum(c.num_cached_prompt_tokens for c in group.children)
        group.metrics.num_reused_prompt_tokens += reused
        if self._speculator is not None:
            group.metrics.spec = SpecStats()
            for child in group.children:
                group.metrics.spec.add(child.spec)
        del self._groups[group.request_id]
        for child in group.children:
            del self._group_of[child.request_id]
        return True


def _max_model_len(
    config: EngineConfig, executor: Executor, max_model_len_limit: int | None
) -> int:
    """The longest sequence: what the model supports and the KV cache holds, or the user's."""
    limit = min(executor.max_position_embeddings, max_model_len_limit or 1 << 62)
    max_model_len = config.max_model_len or limit
    if max_model_len > limit:
        raise ValueError(f"max_model_len {max_model_len} exceeds what the model supports ({limit})")
    capacity = executor.num_kv_blocks * executor.block_size
    if capacity < max_model_len:
        if config.max_model_len is not None:
            raise ValueError(
                f"the KV cache holds {capacity} tokens, fewer than max_model_len "
                f"{max_model_len}; raise kv_cache_memory_gib or lower max_model_len"
            )
        logger.warning(
            "max_model_len lowered from %d to %d, what the KV cache holds", max_model_len, capacity
        )
        max_model_len = capacity
    return max_model_len


def _answer_tokens(request: Request) -> list[int]:
    """The output tokens a structured request's grammar has seen: all of them, or for a
    reasoning model those after its thinking ended."""
    state, output = request.sampler_state, request.output_token_ids
    if state is None or state.thinking is None:
        return output
    if not state.thinking.ended:
        return []
    start = answer_start(output, state.thinking.markers)
    return output if start is None else output[start:]


def _beam_samples(group: _Group) -> list[SampleUpdate]:
    """The n best finished hypotheses, once the search has ended."""
    beam = group.beam
    assert beam is not None
    if not beam.done:
        return []
    return [
        SampleUpdate(
            index=i,
            new_token_ids=h.token_ids,
            new_logprobs=None,
            finish_reason=h.finish_reason,
            stop_reason=h.token_ids[-1] if h.finish_reason == FINISH_STOP else None,
            output_token_ids=h.token_ids,
            output_logprobs=None,
            cumulative_logprob=h.logprob,
        )
        for i, h in enumerate(beam.finished[: beam.num_returned])
    ]


def _embedding(request: Request) -> list[float] | None:
    """An embedding request's vector, once its prompt is pooled (not when it was aborted)."""
    pooling = request.params.pooling
    if pooling is None or request.pooled_sum is None or request.finish_reason != FINISH_STOP:
        return None
    return pooling.vector(request.pooled_sum, request.num_pooled)


def _confidences(request: Request) -> list[float] | None:
    state = request.sampler_state
    return None if state is None or state.confidence is None else state.confidence.values
