"""LLMEngine: admits requests, runs schedule -> execute -> update steps, emits outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from intaglio.config import EngineConfig
from intaglio.engine.block_manager import BlockManager
from intaglio.engine.detokenizer import IncrementalDetokenizer
from intaglio.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from intaglio.engine.request import FINISH_ABORT, FINISH_ERROR, FINISH_STOP, Request
from intaglio.engine.scheduler import Scheduler
from intaglio.executor.base import Executor
from intaglio.sampling.params import SamplingParams

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The waiting queue is at max_num_waiting; retry later."""


@dataclass
class _Group:
    """One user request: its n samples share the prompt and are reported together."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: list[Request]
    detokenizers: list[IncrementalDetokenizer]
    metrics: RequestMetrics
    prompt_logprobs: list[dict[int, float] | None] | None = None
    error: str | None = None
    finished: bool = False


class LLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        executor: Executor,
        tokenizer: Any,
        eos_token_ids: tuple[int, ...],
        max_model_len_limit: int | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        limit = min(executor.max_position_embeddings, max_model_len_limit or 1 << 62)
        self.max_model_len = config.max_model_len or limit
        if self.max_model_len > limit:
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds what the model supports ({limit})"
            )
        capacity = executor.num_kv_blocks * executor.block_size
        if capacity < self.max_model_len:
            if config.max_model_len is not None:
                raise ValueError(
                    f"the KV cache holds {capacity} tokens, fewer than max_model_len "
                    f"{self.max_model_len}; raise kv_cache_memory_gib or lower max_model_len"
                )
            logger.warning(
                "max_model_len lowered from %d to %d, what the KV cache holds",
                self.max_model_len,
                capacity,
            )
            self.max_model_len = capacity
        self.block_manager = BlockManager(
            executor.num_kv_blocks,
            executor.block_size,
            config.prefix_caching,
            executor.num_local_kv_blocks,
            executor.attention_chunk_size,
        )
        self.scheduler = Scheduler(
            self.block_manager,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            config.scheduling_policy,
            config.priority_aging_s,
            config.interleave_policy,
            config.decode_first_max_wait_steps,
        )
        self._groups: dict[str, _Group] = {}
        self._parent_of: dict[str, str] = {}
        self._aborted: list[_Group] = []
        self._grammars: Any = None  # GrammarCompiler, built on the first structured request

    # ---------------------------------------------------------------- admission
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> None:
        """Queue a request; raises ValueError for bad input and QueueFullError at the limit.

        `priority` orders requests under the priority policy (lower first); requests share
        prefix-cache KV only with requests of the same `cache_salt`.
        """
        if request_id in self._groups:
            raise ValueError(f"request id {request_id!r} is already in use")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        if cache_salt is not None and (not isinstance(cache_salt, str) or not cache_salt):
            raise ValueError("cache_salt must be a non-empty string")
        if self.scheduler.num_new_waiting + params.n > self.config.max_num_waiting:
            raise QueueFullError(
                f"the waiting queue is full ({self.config.max_num_waiting} requests); retry later"
            )
        text, token_ids = self._tokenize(prompt)
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(token_ids)} tokens; max_model_len is {self.max_model_len}, "
                "which must leave room for at least one generated token"
            )
        vocab = self.executor.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}")
        for name, ids in (
            ("stop_token_ids", params.stop_token_ids),
            ("logit_bias", [t for t, _ in params.logit_bias]),
        ):
            bad = [t for t in ids if t >= vocab]
            if bad:
                raise ValueError(f"{name} out of range [0, {vocab}): {bad[:5]}")
        group = _Group(request_id, text, token_ids, [], [], RequestMetrics(time.monotonic()))
        for i in range(params.n):
            # Each sample gets its own seed stream; the same seed always gives the same samples.
            seed = None if params.seed is None else params.seed + i
            child, detok = self._new_sample(
                f"{request_id}#{i}", token_ids, params, priority, cache_salt, seed
            )
            child.arrival_time, child.sample_index = group.metrics.arrival_time, i
            group.children.append(child)
            group.detokenizers.append(detok)
        # Register only once every sample was built, so a failure above leaves nothing behind.
        self._groups[request_id] = group
        for child in group.children:
            self._parent_of[child.request_id] = request_id
        # Samples after the first fork from it once the prompt is computed, sharing its KV.
        self.scheduler.add(group.children[0], group.children[1:])

    def fork(
        self, request_id: str, new_request_id: str, params: SamplingParams | None = None
    ) -> None:
        """Split a running single-sample request: the new one starts from its tokens so far and
        shares their KV (copy on write), then continues independently with `params`."""
        group = self._groups.get(request_id)
        if group is None or group.finished or len(group.children) != 1:
            raise ValueError(f"request {request_id!r} is not a running single-sample request")
        if new_request_id in self._groups:
            raise ValueError(f"request id {new_request_id!r} is already in use")
        parent = group.children[0]
        if parent.is_finished:
            raise ValueError(f"request {request_id!r} has finished")
        params = params or parent.params
        if params.n != 1:
            raise ValueError("a fork is one sample; use n=1")
        if params.max_tokens is not None and params.max_tokens <= len(parent.output_token_ids):
            raise ValueError("the fork's max_tokens leaves no room beyond the tokens it inherits")
        child, detok = self._new_sample(
            f"{new_request_id}#0",
            parent.prompt_token_ids,
            params,
            parent.priority,
            parent.cache_salt,
            params.seed,
        )
        child.output_token_ids = list(parent.output_token_ids)
        if child.matcher is not None:
            for token in child.output_token_ids:
                if not child.matcher.accept_token(token):
                    raise ValueError("the tokens so far do not fit the fork's structured grammar")
        if child.logprobs is not None:
            child.logprobs = list(parent.logprobs or [])
        metrics = RequestMetrics(time.monotonic(), group.metrics.first_token_time)
        fork = _Group(
            new_request_id, group.prompt, group.prompt_token_ids, [child], [detok], metrics
        )
        self._groups[new_request_id] = fork
        self._parent_of[child.request_id] = new_request_id
        self.scheduler.fork(parent, child)

    def _new_sample(
        self,
        request_id: str,
        token_ids: list[int],
        params: SamplingParams,
        priority: int,
        cache_salt: str | None,
        seed: int | None,
    ) -> tuple[Request, IncrementalDetokenizer]:
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
        if seed is not None:
            request.generator = torch.Generator(device=self.executor.device).manual_seed(seed)
        if params.structured is not None:  # compiled once per grammar (cached), then matched
            request.matcher = self._compile_grammar(params).matcher()
        detok = IncrementalDetokenizer(
            self.tokenizer,
            params.stop,
            params.include_stop_str_in_output,
            params.skip_special_tokens,
        )
        return request, detok

    def _compile_grammar(self, params: SamplingParams) -> Any:
        """Compile (cached, time-limited); a bad grammar raises ValueError for this request."""
        if self._grammars is None:
            from intaglio.structured import GrammarCompiler, TokenizerInfo

            vocab = TokenizerInfo.from_hf_tokenizer(self.tokenizer, self.eos_token_ids)
            self._grammars = GrammarCompiler(vocab)
        return self._grammars.compile(params.structured)

    def _advance_grammar(self, group: _Group, request: Request, token: int) -> None:
        """Feed the sampled token to the matcher; finish as soon as the grammar is complete."""
        if request.is_finished and token in request.eos_token_ids:
            return
        if not request.matcher.accept_token(token):
            group.error = f"token {token} violates the structured-output grammar"
            self.scheduler.finish(request, FINISH_ERROR)
        elif request.matcher.is_terminated() and not request.is_finished:
            self.scheduler.finish(request, FINISH_STOP)

    def _tokenize(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("the prompt is empty")
            return prompt, list(self.tokenizer.encode(prompt))
        token_ids = [int(t) for t in prompt]
        if not token_ids:
            raise ValueError("the prompt is empty")
        return None, token_ids

    def abort(self, request_id: str) -> None:
        group = self._groups.get(request_id)
        if group is None:
            return
        for child in group.children:
            self.scheduler.finish(child, FINISH_ABORT)
        self._aborted.append(group)  # its final output goes out with the next step

    def has_unfinished(self) -> bool:
        """True while any request has not had its final output emitted (aborted ones too)."""
        return bool(self._groups)

    # ---------------------------------------------------------------- stepping
    def step(self, finished_only: bool = False) -> list[RequestOutput]:
        """Run one engine step; return the outputs of every request it advanced or finished.

        `finished_only` skips building outputs for requests still running (offline batches).
        """
        aborted, self._aborted = [g for g in self._aborted if not g.finished], []
        sched = self.scheduler.schedule()
        if sched.is_empty:
            if self.scheduler.has_unfinished():
                raise RuntimeError("no request could be scheduled; the KV cache is too small")
            return [self._emit(g) for g in aborted]
        result = self.executor.execute(sched)
        self.scheduler.update(sched, result.sampled)
        now = time.monotonic()
        touched: dict[str, _Group] = {g.request_id: g for g in aborted}
        for s in sched.scheduled:
            request = s.request
            group = self._groups[self._parent_of[request.request_id]]
            touched[group.request_id] = group
            entries = result.prompt_logprobs.get(request.request_id)
            if entries is not None:  # only the first sample reports the shared prompt's
                group.prompt_logprobs = group.prompt_logprobs or []
                group.prompt_logprobs.extend(entries)
                request.num_prompt_logprobs += len(entries)
            if request.request_id not in result.sampled:
                continue
            if group.metrics.first_token_time is None:
                group.metrics.first_token_time = now
            if request.logprobs is not None:
                request.logprobs.append(result.logprobs[request.request_id])
            if request.matcher is not None:
                self._advance_grammar(group, request, result.sampled[request.request_id])
            if request.params.detokenize:
                self._detokenize(group, request)
        if finished_only:
            return [self._emit(g) for g in touched.values() if self._all_finished(g)]
        return [self._emit(g) for g in touched.values()]

    def _detokenize(self, group: _Group, request: Request) -> None:
        """Extend the text and apply stop strings; a failure here fails this request alone."""
        try:
            stop = group.detokenizers[request.sample_index].update(
                request.output_token_ids, request.is_finished
            )
        except Exception as e:  # a tokenizer bug must not take the other requests down
            logger.exception("detokenizing request %s failed", request.request_id)
            group.error = f"detokenization failed: {e}"
            self.scheduler.finish(request, FINISH_ERROR)
            return
        # Stop strings count only once min_tokens are out, like EOS and stop token ids.
        if stop is not None and len(request.output_token_ids) >= request.params.min_tokens:
            # A stop string wins over length or EOS reached in the same step.
            request.finish(FINISH_STOP, stop)
            self.scheduler.finish(request, FINISH_STOP, stop)

    @staticmethod
    def _all_finished(group: _Group) -> bool:
        return not group.finished and all(c.is_finished for c in group.children)

    def _emit(self, group: _Group) -> RequestOutput:
        done = all(c.is_finished for c in group.children)
        outputs = []
        for i, (child, detok) in enumerate(zip(group.children, group.detokenizers)):
            outputs.append(
                CompletionOutput(
                    index=i,
                    text=detok.stream_text(child.is_finished),
                    token_ids=list(child.output_token_ids),
                    finish_reason=child.finish_reason,
                    stop_reason=child.stop_reason,
                    # A copy: the engine keeps appending to the request's own list.
                    logprobs=None if child.logprobs is None else list(child.logprobs),
                )
            )
        if done and not group.finished:
            group.finished = True
            group.metrics.finished_time = time.monotonic()
            group.metrics.num_preemptions = sum(c.num_preemptions for c in group.children)
            del self._groups[group.request_id]
            for child in group.children:
                del self._parent_of[child.request_id]
        return RequestOutput(
            request_id=group.request_id,
            prompt=group.prompt,
            prompt_token_ids=group.prompt_token_ids,
            outputs=outputs,
            finished=done,
            metrics=group.metrics,
            prompt_logprobs=None if group.prompt_logprobs is None else list(group.prompt_logprobs),
            error=group.error,
        )
