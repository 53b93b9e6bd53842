"""Admit one HTTP request's engine requests, all or none, mapping engine errors to HTTP ones."""

from __future__ import annotations

import asyncio

from intaglio.api.async_engine import AsyncEngine, EngineUnavailableError
from intaglio.engine.engine import QueueFullError
from intaglio.engine.outputs import RequestOutput
from intaglio.errors import RequestError
from intaglio.sampling.params import SamplingParams
from intaglio.server.errors import OpenAIError, bad_request


async def admit(
    engine: AsyncEngine,
    requests: list[tuple[str, list[int], SamplingParams]],
    queue: asyncio.Queue[RequestOutput],
    priority: int = 0,
    cache_salt: str | None = None,
    structured_param: str | None = None,
) -> None:
    """Add every (request_id, prompt_token_ids, params); on any failure abort those added.

    `structured_param` names the request field of the output constraint: the engine's errors
    about the grammar are reported against it.
    """
    added: list[str] = []
    try:
        for request_id, token_ids, params in requests:
            await engine.add_request(request_id, token_ids, params, queue, priority, cache_salt)
            added.append(request_id)
    except BaseException as e:
        for request_id in added:
            engine.abort(request_id)
        if isinstance(e, QueueFullError):
            raise OpenAIError(429, str(e), code="queue_full", headers={"Retry-After": "1"}) from e
        if isinstance(e, EngineUnavailableError):
            raise OpenAIError(
                503, str(e), code="service_unavailable", headers={"Retry-After": "1"}
            ) from e
        if isinstance(e, RequestError):  # the engine names the field at fault
            param = e.param or "prompt"
            if param == "structured":
                param = structured_param or param
            raise bad_request(str(e), param, e.code) from e
        if isinstance(e, ValueError):
            raise bad_request(str(e), "prompt") from e
        raise


def engine_error(out: RequestOutput, engine: AsyncEngine) -> OpenAIError:
    """A request the engine failed (not the client's fault): 503 when shutting down, else 500."""
    status = 500 if engine.accepting else 503
    return OpenAIError(status, out.error or "the request failed", code="engine_error")
