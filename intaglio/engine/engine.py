"""LLMEngine: the text layer in front of the engine core, used by the offline API and the server.

It tokenizes prompts, detokenizes each sample incrementally, applies stop strings (through the
core's one stop check) and shapes the core's per-step news into RequestOutputs as each request
asked (`SamplingParams.output_kind`): `delta` (only what is new: streaming costs O(new tokens)
per step), `cumulative` (everything so far, every step) or `final_only` (one output at the end).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from intaglio.config import EngineConfig
from intaglio.engine import stop as stops
from intaglio.engine.core import CoreOutput, EngineCore, QueueFullError, SampleUpdate
from intaglio.engine.detokenizer import IncrementalDetokenizer
from intaglio.engine.outputs import CompletionOutput, RequestOutput
from intaglio.engine.request import FINISH_ABORT, FINISH_ERROR
from intaglio.errors import RequestError
from intaglio.executor.base import Executor
from intaglio.sampling.params import SamplingParams

logger = logging.getLogger(__name__)

__all__ = ["LLMEngine", "QueueFullError", "encode_prompt"]


def encode_prompt(tokenizer: Any, prompt: str, add_special_tokens: bool = True) -> list[int]:
    """Text to token ids; the one place prompts are tokenized (the server calls it too)."""
    if not prompt:
        raise RequestError("the prompt is empty", "prompt")
    try:
        return list(tokenizer.encode(prompt, add_special_tokens=add_special_tokens))
    except Exception as e:  # the tokenizer is user-supplied code and data
        raise RequestError(f"cannot tokenize the prompt: {e}", "prompt") from None


@dataclass
class _Sample:
    detokenizer: IncrementalDetokenizer
    # The request's live output lists (from the core); copied only into cumulative outputs.
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None
    confidences: list[float] | None = None
    num_chars_sent: int = 0  # delta outputs: text already handed out
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    cumulative_logprob: float | None = None


@dataclass
class _Text:
    """The text side of one user request."""

    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    samples: list[_Sample]
    prompt_logprobs: list[dict[int, float] | None] | None = None


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
        self.core = EngineCore(config, executor, eos_token_ids, max_model_len_limit, tokenizer)
        self.max_model_len = self.core.max_model_len
        self.scheduler = self.core.scheduler
        self.block_manager = self.core.block_manager
        self._texts: dict[str, _Text] = {}

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.core.eos_token_ids

    @eos_token_ids.setter
    def eos_token_ids(self, ids: tuple[int, ...]) -> None:  # new requests end on these
        self.core.eos_token_ids = ids

    # ---------------------------------------------------------------- requests
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> None:
        """Queue a request; raises RequestError (a ValueError naming the field) for bad input
        and QueueFullError at the queue limit."""
        if isinstance(prompt, str):
            text: str | None = prompt
            token_ids = encode_prompt(self.tokenizer, prompt)
        else:
            text, token_ids = None, [int(t) for t in prompt]
        self.core.add(request_id, token_ids, params, priority, cache_salt)
        self._texts[request_id] = _Text(
            text, token_ids, params, [self._sample(params) for _ in range(params.n)]
        )

    def fork(
        self, request_id: str, new_request_id: str, params: SamplingParams | None = None
    ) -> None:
        """Split a running single-sample request (EngineCore.fork); the fork's first output
        carries the tokens it inherited."""
        parent = self._texts.get(request_id)
        self.core.fork(request_id, new_request_id, params)
        assert parent is not None  # the core refuses unknown requests
        params = params or parent.params
        self._texts[new_request_id] = _Text(
            parent.prompt, parent.prompt_token_ids, params, [self._sample(params)]
        )

    def _sample(self, params: SamplingParams) -> _Sample:
        detok = IncrementalDetokenizer(
            self.tokenizer,
            params.stop,
            params.include_stop_str_in_output,
            params.skip_special_tokens,
        )
        return _Sample(detok, logprobs=[] if params.logprobs is not None else None)

    def abort(self, request_id: str) -> None:
        self.core.abort(request_id)

    def abort_sample(self, request_id: str, index: int) -> None:
        """End one sample of a request now (its KV returns to the pool); when it was the last
        one running, the request ends without a further output."""
        if self.core.stop(request_id, index, stops.Stop(FINISH_ABORT)):
            del self._texts[request_id]

    def has_unfinished(self) -> bool:
        """True while any request has not had its final output emitted (aborted ones too)."""
        return self.core.has_unfinished()

    # ---------------------------------------------------------------- stepping
    def step(self) -> list[RequestOutput]:
        """Run one engine step; return an output for every request that has one to give."""
        outputs = []
        for news in self.core.step():
            text = self._texts[news.request_id]
            finished = news.finished
            for update in news.samples:
                finished |= self._take(news, text, update)
            if news.new_prompt_logprobs is not None:
                text.prompt_logprobs = [*(text.prompt_logprobs or []), *news.new_prompt_logprobs]
            if finished:
                del self._texts[news.request_id]
            out = self._output(news, text, finished)
            if out is not None:
                outputs.append(out)
        return outputs

    def _take(self, news: CoreOutput, text: _Text, update: SampleUpdate) -> bool:
        """Record one sample's news and detokenize it; True when a stop string ended the
        whole request."""
        sample = text.samples[update.index]
        sample.token_ids, sample.logprobs = update.output_token_ids, update.output_logprobs
        sample.confidences = update.output_confidences
        sample.cumulative_logprob = update.cumulative_logprob
        sample.finish_reason, sample.stop_reason = update.finish_reason, update.stop_reason
        if not text.params.detokenize:
            return False
        done = update.finish_reason is not None
        try:
            hit = sample.detokenizer.update(update.output_token_ids, done)
        except Exception as e:  # a tokenizer bug must not take the other requests down
            logger.exception("detokenizing request %s failed", news.request_id)
            end: stops.Stop | None = stops.Stop(FINISH_ERROR, error=f"detokenization failed: {e}")
        else:
            num_out = len(update.output_token_ids)
            end = None if hit is None else stops.check_stop_string(num_out, text.params, hit)
        if end is None:
            return False
        sample.finish_reason, sample.stop_reason = end.reason, end.stop_reason
        if end.error is not None:
            news.error = end.error
        if done:  # already ended this step: the stop string only names why
            return False
        return self.core.stop(news.request_id, update.index, end)

    def _output(self, news: CoreOutput, text: _Text, finished: bool) -> RequestOutput | None:
        kind = text.params.output_kind
        if kind == "final_only" and not finished:
            return None
        delta = kind == "delta"
        completions = []
        updated = {u.index: u for u in news.samples}
        for i, sample in enumerate(text.samples):
            if delta and i not in updated:
                continue
            completions.append(self._completion(i, sample, updated.get(i), delta, finished))
        prompt_logprobs = news.new_prompt_logprobs if delta else text.prompt_logprobs
        return RequestOutput(
            request_id=news.request_id,
            prompt=text.prompt,
            prompt_token_ids=text.prompt_token_ids,
            outputs=completions,
            finished=finished,
            metrics=news.metrics,
            prompt_logprobs=None if prompt_logprobs is None else list(prompt_logprobs),
            error=news.error,
            embedding=news.embedding,
        )

    @staticmethod
    def _completion(
        index: int, sample: _Sample, update: SampleUpdate | None, delta: bool, finished: bool
    ) -> CompletionOutput:
        detok = sample.detokenizer
        done = finished or sample.finish_reason is not None
        if delta:
            end = detok.safe_length(done)
            text = detok.text_range(sample.num_chars_sent, end)
            sample.num_chars_sent = max(end, sample.num_chars_sent)
            token_ids = [] if update is None else update.new_token_ids
            logprobs = None if update is None else update.new_logprobs
            confidences = None if update is None else update.new_confidences
        else:  # a copy: the core keeps appending to the request's own lists
            text = detok.stream_text(done)
            token_ids = list(sample.token_ids)
            logprobs = None if sample.logprobs is None else list(sample.logprobs)
            confidences = None if sample.confidences is None else list(sample.confidences)
            if confidences is not None:  # the live list may already hold later tokens'
                confidences = confidences[: len(token_ids)]
        return CompletionOutput(
            index=index,
            text=text,
            token_ids=token_ids,
            finish_reason=sample.finish_reason,
            stop_reason=sample.stop_reason,
            logprobs=logprobs,
            confidences=confidences,
            cumulative_logprob=sample.cumulative_logprob,
        )
