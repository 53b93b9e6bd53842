"""Choices' streamed pieces from the engine's delta outputs, and the usage so far.

The server asks the engine for `delta` outputs when streaming (each holds only what is new, so
a long stream costs O(new tokens) per step) and `final_only` outputs otherwise (one output
holding everything); either way this tracker hands out a choice's tokens once they show as
text. One HTTP request may hold several engine requests (a list of prompts), each with n
samples; choice `index` is prompt_index * n + sample_index, as in OpenAI's API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from intaglio.engine.outputs import RequestOutput
from intaglio.server.logprobs import LogprobEntry


@dataclass
class Delta:
    index: int
    text: str
    token_ids: list[int]  # tokens since the previous chunk of this choice
    logprobs: list[LogprobEntry] | None  # their logprob entries, when asked for
    finish_reason: str | None
    first: bool  # the choice's first chunk (where echo and the chat role go)
    confidences: list[float] | None = None  # their confidences, when asked for


@dataclass
class _Progress:
    """A choice's tokens and text not handed out yet, and how many it has in all."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[LogprobEntry] | None = None
    confidences: list[float] | None = None
    num_tokens: int = 0
    started: bool = False
    done: bool = False


class DeltaTracker:
    def __init__(self, request_ids: list[str], n: int, drop_output: bool = False) -> None:
        """`drop_output`: prompt scoring (max_tokens 0), where the one token the engine must
        sample is neither returned nor counted."""
        self._prompt_index = {rid: i for i, rid in enumerate(request_ids)}
        self._n = n
        self._drop_output = drop_output
        self._progress: dict[tuple[str, int], _Progress] = {}
        self._prompt_tokens: dict[str, int] = {}
        self._cached_tokens: dict[str, int] = {}
        self.finished: set[str] = set()

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self._prompt_index)

    def update(self, out: RequestOutput) -> list[Delta]:
        self._prompt_tokens[out.request_id] = len(out.prompt_token_ids)
        self._cached_tokens[out.request_id] = out.metrics.num_cached_tokens
        if out.finished:
            self.finished.add(out.request_id)
        deltas = []
        for c in out.outputs:
            p = self._progress.setdefault((out.request_id, c.index), _Progress())
            if p.done:
                continue
            if self._drop_output:
                dropped: list[float] | None = None if c.confidences is None else []
                c = replace(c, text="", token_ids=[], logprobs=None, confidences=dropped)
            p.text += c.text
            p.token_ids.extend(c.token_ids)
            if c.logprobs is not None:
                p.logprobs = [*(p.logprobs or []), *c.logprobs]
            if c.confidences is not None:
                p.confidences = [*(p.confidences or []), *c.confidences]
            p.num_tokens += len(c.token_ids)
            # Wait for a first token (the prompt is then fully read) and for visible text.
            if not (c.finished or (p.num_tokens and p.text)):
                continue
            deltas.append(
                Delta(
                    index=self._prompt_index[out.request_id] * self._n + c.index,
                    text=p.text,
                    token_ids=p.token_ids,
                    logprobs=p.logprobs,
                    finish_reason=c.finish_reason,
                    first=not p.started,
                    confidences=p.confidences,
                )
            )
            p.text, p.token_ids, p.logprobs, p.confidences = "", [], None, None
            p.started, p.done = True, c.finished
        return deltas

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage object; `cached_tokens` are prompt tokens whose KV came from the
        prefix cache."""
        prompt = sum(self._prompt_tokens.values())
        completion = sum(p.num_tokens for p in self._progress.values())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(self._cached_tokens.values())},
        }
