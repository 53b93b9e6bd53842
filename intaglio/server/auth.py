"""The API key: every route but /health needs it (and /metrics too, unless opened to a
scraper), unknown paths and /openapi.json included, checked before any body is read."""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from intaglio.server.errors import error_body


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, key: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self.key = key.encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._valid(scope):
            await self.app(scope, receive, send)
            return
        body = error_body(
            401,
            "invalid or missing API key; send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
        response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _valid(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)
