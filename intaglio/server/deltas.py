"""What is new in each choice since the last streamed chunk, and the usage so far.

One HTTP request may hold several engine requests (a list of prompts), each with n samples;
choice `index` is prompt_index * n + sample_index, as in OpenAI's API.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class _Progress:
    num_chars: int = 0
    num_tokens: int = 0
    started: bool = False
    done: bool = False


class DeltaTracker:
    def __init__(self, request_ids: list[str], n: int) -> None:
        self._prompt_index = {rid: i for i, rid in enumerate(request_ids)}
        self._n = n
        self._progress: dict[tuple[str, int], _Progress] = {}
        self._prompt_tokens: dict[str, int] = {}
        self._completion_tokens: dict[tuple[str, int], int] = {}
        self.finished: set[str] = set()

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self._prompt_index)

    def update(self, out: RequestOutput) -> list[Delta]:
        self._prompt_tokens[out.request_id] = len(out.prompt_token_ids)
        if out.finished:
            self.finished.add(out.request_id)
        deltas = []
        for c in out.outputs:
            key = (out.request_id, c.index)
            self._completion_tokens[key] = len(c.token_ids)
            p = self._progress.setdefault(key, _Progress())
            # Wait for a first token (the prompt is then fully read) and for visible text.
            if p.done or not (c.finished or (c.token_ids and len(c.text) > p.num_chars)):
                continue
            new_tokens = c.token_ids[p.num_tokens :]
            logprobs = None if c.logprobs is None else c.logprobs[p.num_tokens :]
            deltas.append(
                Delta(
                    index=self._prompt_index[out.request_id] * self._n + c.index,
                    text=c.text[p.num_chars :],
                    token_ids=new_tokens,
                    logprobs=logprobs,
                    finish_reason=c.finish_reason,
                    first=not p.started,
                )
            )
            p.num_chars, p.num_tokens = len(c.text), len(c.token_ids)
            p.started, p.done = True, c.finished
        return deltas

    def usage(self) -> dict[str, int]:
        prompt = sum(self._prompt_tokens.values())
        completion = sum(self._completion_tokens.values())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
