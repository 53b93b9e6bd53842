"""What the engine hands back: per-request results, one CompletionOutput per sample."""

from __future__ import annotations

import time
from dataclasses import dataclass

from intaglio.spec import SpecStats


@dataclass
class RequestMetrics:
    arrival_time: float
    first_token_time: float | None = None
    finished_time: float | None = None
    num_preemptions: int = 0
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache when first admitted
    # Prompt tokens its samples did not compute, summed over samples: prefix-cache hits, and
    # the prompt a sample forked from a sibling shares (what a search program's cost counts).
    num_reused_prompt_tokens: int = 0
    spec: SpecStats | None = None  # speculative decoding: drafts and acceptance, when it ran

    @property
    def time_to_first_token(self) -> float | None:
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time

    @property
    def decode_time(self) -> float | None:
        """Time from the first token to the last."""
        if self.first_token_time is None or self.finished_time is None:
            return None
        return self.finished_time - self.first_token_time


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # stop, length, abort, or error
    stop_reason: str | int | None = None  # the stop string or stop token id that matched
    logprobs: list[dict[int, float]] | None = None  # per token: sampled token first, then top N
    confidences: list[float] | None = None  # per token, when confidence_top_k > 0
    cumulative_logprob: float | None = None  # beam search: the sample's summed logprob

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    prompt_logprobs: list[dict[int, float] | None] | None = None
    error: str | None = None  # set when the request failed; finish_reason is then "error"
    embedding: list[float] | None = None  # an embedding request's vector (params.pooling)

    @classmethod
    def failed(
        cls, request_id: str, message: str, prompt: str | list[int] | None = None
    ) -> RequestOutput:
        """The final output of a request that failed (rejected, or its engine failed)."""
        now = time.monotonic()
        return cls(
            request_id=request_id,
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=list(prompt) if isinstance(prompt, list) else [],
            outputs=[CompletionOutput(index=0, text="", token_ids=[], finish_reason="error")],
            finished=True,
            metrics=RequestMetrics(arrival_time=now, finished_time=now),
            error=message,
        )
