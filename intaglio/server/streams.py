"""Reading a request's outputs off its queue: in order for streaming, watched for disconnects.

Streamed outputs are deltas (each holds only what is new); a reader that fell behind takes all
that are ready at once and merges each request's into one, so it sends one chunk per choice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from intaglio.api.async_engine import AsyncEngine
from intaglio.engine.outputs import RequestOutput
from intaglio.server.admission import engine_error
from intaglio.server.deltas import Delta, DeltaTracker
from intaglio.server.errors import error_body

DONE = "data: [DONE]\n\n"


class EventStream(StreamingResponse):
    """An SSE response that runs `on_close` however it ends, even if it never started.

    The generator's own `finally` misses one case: a client gone before the first chunk, when
    the generator is never entered. This catches it, so no request outlives its client.
    """

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def next_outputs(queue: asyncio.Queue[RequestOutput]) -> list[RequestOutput]:
    """Wait for at least one output, then take all that are ready: one per request, each
    request's deltas merged in order."""
    merged: dict[str, RequestOutput] = {}
    out = await queue.get()
    while True:
        earlier = merged.get(out.request_id)
        merged[out.request_id] = out if earlier is None else _merge(earlier, out)
        if queue.empty():
            return list(merged.values())
        out = queue.get_nowait()


def _merge(first: RequestOutput, then: RequestOutput) -> RequestOutput:
    """Two delta outputs of one request as one (the later one's state, both one's news)."""
    if first.error is not None or then.error is not None:  # a failed request ends there
        return first if first.error is not None else then
    by_index = {c.index: c for c in first.outputs}
    completions = []
    for c in then.outputs:
        a = by_index.pop(c.index, None)
        if a is not None:
            logprobs = None if c.logprobs is None else [*(a.logprobs or []), *c.logprobs]
            confidences = c.confidences
            if confidences is not None:
                confidences = [*(a.confidences or []), *confidences]
            c = replace(
                c,
                text=a.text + c.text,
                token_ids=a.token_ids + c.token_ids,
                logprobs=logprobs,
                confidences=confidences,
            )
        completions.append(c)
    prompt_logprobs = first.prompt_logprobs
    if then.prompt_logprobs is not None:
        prompt_logprobs = [*(prompt_logprobs or []), *then.prompt_logprobs]
    outputs = sorted([*by_index.values(), *completions], key=lambda c: c.index)
    return replace(then, outputs=outputs, prompt_logprobs=prompt_logprobs)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client hangs up (the body must already have been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ClientDisconnected(Exception):
    pass


async def collect_final(
    queue: asyncio.Queue[RequestOutput], request_ids: Iterable[str], request: Request
) -> dict[str, RequestOutput]:
    """Wait for every request's final output (or the first error); raise ClientDisconnected
    if the client leaves first."""
    pending = set(request_ids)
    finals: dict[str, RequestOutput] = {}
    disconnect = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        while pending:
            getter = asyncio.ensure_future(next_outputs(queue))
            await asyncio.wait({getter, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                raise ClientDisconnected
            for out in getter.result():
                if out.error is not None:
                    return {out.request_id: out}  # the whole HTTP request fails; stop waiting
                if out.finished:
                    finals[out.request_id] = out
                    pending.discard(out.request_id)
        return finals
    finally:
        disconnect.cancel()


def abort_all(engine: AsyncEngine, request_ids: Iterable[str]) -> None:
    """Abort every request still in flight (a no-op for those already finished)."""
    for request_id in request_ids:
        engine.abort(request_id)


async def await_finals(
    engine: AsyncEngine,
    queue: asyncio.Queue[RequestOutput],
    request_ids: list[str],
    request: Request,
) -> dict[str, RequestOutput] | None:
    """Every request's final output, or None when the client left first (answer 499, and
    what still runs is aborted); a request the engine failed raises engine_error."""
    try:
        finals = await collect_final(queue, request_ids, request)
    except ClientDisconnected:
        return None
    finally:
        abort_all(engine, request_ids)  # only matters when the client left
    for out in finals.values():
        if out.error is not None:
            raise engine_error(out, engine)
    return finals


async def stream_chunks(
    queue: asyncio.Queue[RequestOutput],
    tracker: DeltaTracker,
    engine: AsyncEngine,
    envelope: Callable[[list[dict[str, Any]]], dict[str, Any]],
    make_choice: Callable[[RequestOutput, Delta], dict[str, Any] | None],
    include_usage: bool,
) -> AsyncIterator[str]:
    """The SSE body both endpoints share: one chunk per choice delta (unless make_choice has
    nothing to send for it) until every choice has finished, then the usage chunk (when asked
    for) and [DONE]. A failed request ends the stream with an error event and [DONE];
    EventStream aborts the rest if the client leaves first.

    With include_usage every chunk carries "usage": null and the final one the totals, as in
    OpenAI's API.
    """
    while not tracker.all_finished:
        for out in await next_outputs(queue):
            if out.error is not None:
                err = engine_error(out, engine)
                yield sse(error_body(err.status, err.message, code=err.code))
                yield DONE
                return
            for delta in tracker.update(out):
                choice = make_choice(out, delta)
                if choice is None:  # nothing to send yet (text held back)
                    continue
                chunk = envelope([choice])
                if include_usage:
                    chunk["usage"] = None
                yield sse(chunk)
    if include_usage:
        yield sse({**envelope([]), "usage": tracker.usage()})
    yield DONE
