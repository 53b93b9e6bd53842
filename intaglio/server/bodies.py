"""Reading a JSON request body: its content type, its size, and how long it may take to arrive.

A body must say it is JSON (`application/json`, or a `+json` type): browsers send `text/plain`
and form bodies cross-origin without asking first, so a server that parsed them as JSON would
take requests from any web page its user opens. A body that stops arriving is answered 408
after the server's body timeout, which closes the connection (the rest of it is never read).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from intaglio.server.errors import OpenAIError, from_validation_error

M = TypeVar("M", bound=BaseModel)

# Above any one prompt that fits a 128k-token context even JSON-escaped (about 3 MiB), and
# small enough that validating a body this size (on the event loop: pydantic holds the GIL)
# costs about a decode step.
MAX_BODY_BYTES = 8 << 20


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def parse_request(model: type[M], request: Request) -> M:
    """Validate a JSON body: 415 for another content type, 413 when too big, 408 when it
    does not arrive within the body timeout, 400 when invalid."""
    if not is_json(request.headers.get("content-type", "")):
        raise OpenAIError(
            415,
            "the request body must be JSON: send 'Content-Type: application/json'",
            code="unsupported_media_type",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise OpenAIError(413, f"request body over {MAX_BODY_BYTES} bytes")
    timeout: float = request.app.state.intaglio.body_timeout_s
    try:
        body = await asyncio.wait_for(_read(request), timeout)
    except asyncio.TimeoutError:
        raise OpenAIError(
            408, f"the request body did not arrive within {timeout} s", code="timeout"
        ) from None
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        if any("recursion limit" in str(err.get("msg", "")) for err in e.errors()):
            raise OpenAIError(
                400,
                "the request body nests objects or arrays too deeply to read (the JSON itself "
                "may be valid); flatten it, e.g. a schema's nesting",
                code="nesting_too_deep",
            ) from None
        raise from_validation_error(e) from None


async def _read(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise OpenAIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
