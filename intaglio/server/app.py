"""The FastAPI app: OpenAI routes, tokenizer routes, health and metrics, around one AsyncEngine.

engine = AsyncEngine.from_model(path)
app = build_app(engine, served_model_name="my-model", api_key=None)
# run it with intaglio.server.launch (uvicorn), which also handles SIGTERM gracefully
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from intaglio.api.async_engine import AsyncEngine
from intaglio.sampling.pooling import Pooling
from intaglio.server import chat, completions, embeddings
from intaglio.server.auth import ApiKeyMiddleware
from intaglio.server.bodies import parse_request
from intaglio.server.chat_template import chat_length, render_chat
from intaglio.server.errors import OpenAIError, bad_request, install_error_handlers
from intaglio.server.protocol import DetokenizeRequest, TokenizeRequest
from intaglio.server.state import ServerState, get_state
from intaglio.server.tokenizer_info import tokenizer_config

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    engine = get_state(request).engine
    if not engine.accepting:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _model_card(state: ServerState) -> dict[str, Any]:
    return {
        "id": state.served_model_name,
        "object": "model",
        "created": state.created,
        "owned_by": "intaglio",
        "max_model_len": state.engine.max_model_len,
    }


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(get_state(request))]}


@router.get("/v1/models/{model_id:path}")  # ids may hold slashes ("org/name")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = get_state(request)
    if model_id != state.served_model_name:
        raise OpenAIError(
            404, f"model {model_id!r} does not exist", param="model", code="model_not_found"
        )
    return _model_card(state)


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request) -> dict[str, Any]:
    """The tokenizer's configuration, as vLLM's route of the same name gives it."""
    state = get_state(request)
    return tokenizer_config(
        state.text_tokenizer, state.engine.max_model_len, state.engine.vocab_size
    )


@router.post("/tokenize")
async def tokenize(request: Request) -> dict[str, Any]:
    state = get_state(request)
    req = await parse_request(TokenizeRequest, request)
    state.check_model(req.model)
    if (req.prompt is None) == (req.messages is None):
        raise bad_request("give exactly one of prompt or messages", "prompt")
    if req.messages is not None:
        state.check_length(chat_length(req.messages), "messages")
        tools = [t.model_dump(exclude_none=True) for t in req.tools or []] or None
        text, add_special = await state.off_loop(
            render_chat,
            state.text_tokenizer,
            req.messages,
            req.add_generation_prompt,
            tools,
            req.chat_template_kwargs,
        )
    else:
        text, add_special = req.prompt or "", req.add_special_tokens
    tokens = await state.encode(text, add_special)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": state.engine.max_model_len}


@router.post("/detokenize")
async def detokenize(request: Request) -> dict[str, Any]:
    state = get_state(request)
    req = await parse_request(DetokenizeRequest, request)
    state.check_model(req.model)
    return {"prompt": await state.decode(req.tokens, "tokens")}


def build_app(
    engine: AsyncEngine,
    served_model_name: str,
    api_key: str | None = None,
    drain_timeout: float = 1.0,
    open_metrics: bool = False,
    body_timeout_s: float = 30.0,
    pooling: str = "last",
) -> FastAPI:
    """The app; starting it (lifespan) starts the engine thread, stopping it stops the thread.

    With `api_key`, every route but /health needs it (/metrics too unless `open_metrics`).
    `drain_timeout` is how long shutdown waits for in-flight requests before failing them;
    uvicorn's own graceful shutdown (see launch.py) has usually drained them already.
    `body_timeout_s` bounds how long a request body may take to arrive. `pooling` ("last" or
    "mean") is how /v1/embeddings pools the model's hidden states.
    """
    Pooling(pooling)  # a bad value fails here, not in every request
    state = ServerState(engine, served_model_name, body_timeout_s=body_timeout_s, pooling=pooling)
    state.metrics.attach_engine(lambda: engine.stats)
    engine.on_finished.append(state.metrics.observe_finished)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start(asyncio.get_running_loop())
        yield
        await engine.shutdown(drain_timeout)
        state.close()

    app = FastAPI(title="Intaglio", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.intaglio = state
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(completions.router)
    app.include_router(chat.router)
    app.include_router(embeddings.router)
    if api_key is not None:
        open_paths = {"/health", "/metrics"} if open_metrics else {"/health"}
        app.add_middleware(ApiKeyMiddleware, key=api_key, open_paths=frozenset(open_paths))
    return app
