"""POST /v1/completions: prompts as text, token ids, or lists of either; streamed or not."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from intaglio.engine.outputs import RequestOutput
from intaglio.sampling.params import SamplingParams
from intaglio.server.admission import admit
from intaglio.server.bodies import parse_request
from intaglio.server.confidence import StreamConfidences, confidence_fields
from intaglio.server.deltas import Delta, DeltaTracker
from intaglio.server.errors import bad_request
from intaglio.server.logprobs import completion_logprobs
from intaglio.server.protocol import CompletionRequest
from intaglio.server.sampling import build_sampling_params, check_fits, structured_param
from intaglio.server.search import check_search, run_search
from intaglio.server.state import ServerState, get_state
from intaglio.server.streams import EventStream, abort_all, await_finals, stream_chunks

router = APIRouter()

OPENAI_DEFAULT_MAX_TOKENS = 16  # the legacy completions API's documented default


async def _prompts(req: CompletionRequest, state: ServerState) -> list[tuple[str, list[int]]]:
    """(text for echo, token ids) per prompt, tokenized the way the offline LLM does."""
    prompt = req.prompt
    if isinstance(prompt, str):
        items: list[str | list[int]] = [prompt]
    elif not prompt:
        raise bad_request("prompt must not be empty", "prompt")
    elif isinstance(prompt[0], int):
        items = [prompt]  # type: ignore[list-item]
    else:
        items = list(prompt)  # type: ignore[arg-type]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append((item, await state.encode(item)))
        else:  # the engine checks the ids against the vocabulary when it admits them
            out.append((await state.decode(item) if req.echo else "", list(item)))
    return out


def _check_supported(req: CompletionRequest) -> None:
    if req.suffix:
        raise bad_request("suffix is not supported", "suffix", "unsupported")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options needs stream=true", "stream_options")
    if req.max_tokens == 0 and not req.echo:
        raise bad_request("max_tokens 0 generates nothing; it needs echo=true", "max_tokens")


@router.post("/v1/completions")
async def create_completion(raw: Request) -> Response:
    state = get_state(raw)
    req = await parse_request(CompletionRequest, raw)
    state.check_model(req.model)
    _check_supported(req)
    state.check_accepting()
    prompts = await _prompts(req, state)
    for _, token_ids in prompts:
        check_fits(len(token_ids), req.max_tokens, state.engine.max_model_len, "prompt")
    max_tokens = req.max_tokens if req.max_tokens is not None else OPENAI_DEFAULT_MAX_TOKENS
    # Scoring a prompt: the engine samples one token (its last step computes the prompt's last
    # logprob anyway) and the view drops it.
    max_tokens = max(max_tokens, 1)
    params = build_sampling_params(
        req,
        state.engine,
        max_tokens=max_tokens,
        logprobs=req.logprobs,
        prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None,
        num_prompts=len(prompts),
        stream=bool(req.stream),
    )
    base_id = f"cmpl-{uuid.uuid4().hex}"
    if req.search is not None:
        return await _search(state, req, base_id, prompts, params)
    request_ids = [f"{base_id}-{i}" for i in range(len(prompts))]
    queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
    await admit(
        state.engine,
        [(rid, ids, params) for rid, (_, ids) in zip(request_ids, prompts)],
        queue,
        req.priority,
        req.cache_salt,
        structured_param(req),
    )
    view = _View(state, req, base_id, request_ids, [text for text, _ in prompts], params)
    if req.stream:
        return EventStream(view.stream(queue), lambda: abort_all(state.engine, request_ids))
    finals = await await_finals(state.engine, queue, request_ids, raw)
    if finals is None:
        return Response(status_code=499)
    return JSONResponse(view.response([finals[rid] for rid in request_ids]))


async def _search(
    state: ServerState,
    req: CompletionRequest,
    base_id: str,
    prompts: list[tuple[str, list[int]]],
    params: SamplingParams,
) -> Response:
    """One search program per prompt, run together; one choice per prompt."""
    assert req.search is not None
    pattern = check_search(req.search, params, bool(req.stream))
    runs = [
        run_search(state, req.search, pattern, f"{base_id}-{i}", ids, params)
        for i, (_, ids) in enumerate(prompts)
    ]
    results = await asyncio.gather(*runs)
    view = _View(
        state,
        req,
        base_id,
        [o.request_id for o, _ in results],
        [t for t, _ in prompts],
        dataclasses.replace(params, n=1),
    )
    return JSONResponse(
        {**view.response([o for o, _ in results]), "search": [i for _, i in results]}
    )


class _View:
    """Turns engine outputs into completion responses and chunks for one HTTP request."""

    def __init__(
        self,
        state: ServerState,
        req: CompletionRequest,
        base_id: str,
        request_ids: list[str],
        echo_texts: list[str],
        params: SamplingParams,
    ) -> None:
        self.state = state
        self.req = req
        self.id = base_id
        self.request_ids = request_ids
        self.echo_texts = echo_texts if req.echo else ["" for _ in request_ids]
        self.n = params.n
        self.created = int(time.time())
        self.strings = state.token_strings
        self.scoring = req.max_tokens == 0

    def _tracker(self) -> DeltaTracker:
        return DeltaTracker(self.request_ids, self.n, drop_output=self.scoring)

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.state.served_model_name,
            "choices": choices,
        }

    def _echo_logprobs(self, out: RequestOutput) -> tuple[list[int], list[Any]]:
        """Prompt tokens and their logprob entries, when echoing with logprobs."""
        if not (self.req.echo and self.req.logprobs is not None):
            return [], []
        # One entry per prompt position (None for the first token), shared by the n samples.
        entries = out.prompt_logprobs
        if entries is None:  # not expected when asked for; list the tokens without logprobs
            entries = [None] * len(out.prompt_token_ids)
        return out.prompt_token_ids, list(entries)

    def _choice(
        self, out: RequestOutput, delta: Delta, prompt_index: int, text_offset: int
    ) -> dict[str, Any]:
        text = delta.text
        logprobs = None
        token_ids = delta.token_ids
        entries: list[Any] = list(delta.logprobs or [])
        if delta.first and self.req.echo:
            text = self.echo_texts[prompt_index] + text
            prompt_ids, prompt_entries = self._echo_logprobs(out)
            token_ids = prompt_ids + token_ids
            entries = prompt_entries + entries
            text_offset = 0
        if self.req.logprobs is not None:
            logprobs = completion_logprobs(token_ids, entries, self.strings, text_offset)
        finish_reason = delta.finish_reason
        if self.scoring and finish_reason == "stop":  # the dropped token was EOS
            finish_reason = "length"
        return {
            "index": delta.index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }

    def response(self, finals: list[RequestOutput]) -> dict[str, Any]:
        tracker = self._tracker()
        choices = []
        for prompt_index, out in enumerate(finals):
            for delta in tracker.update(out):
                choice = self._choice(out, delta, prompt_index, 0)
                sample = out.outputs[delta.index - prompt_index * self.n]
                choices.append({**choice, **confidence_fields(sample, self.req.confidence_window)})
        return {**self._envelope(choices), "usage": tracker.usage()}

    def stream(self, queue: asyncio.Queue[RequestOutput]) -> AsyncIterator[str]:
        """SSE chunks until every choice finished; EventStream aborts the rest if cut short."""
        offsets: dict[int, int] = {}  # choice index -> characters sent (logprob text_offset)
        prompt_index = {rid: i for i, rid in enumerate(self.request_ids)}

        confidences = StreamConfidences(self.req.confidence_window)

        def make_choice(out: RequestOutput, delta: Delta) -> dict[str, Any]:
            start = offsets.get(delta.index, 0)
            choice = self._choice(out, delta, prompt_index[out.request_id], start)
            offsets[delta.index] = start + len(choice["text"])
            return {**choice, **confidences.fields(delta.index, delta.confidences)}

        return stream_chunks(
            queue,
            self._tracker(),
            self.state.engine,
            self._envelope,
            make_choice,
            include_usage=bool(self.req.stream_options and self.req.stream_options.include_usage),
        )
