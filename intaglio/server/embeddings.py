"""POST /v1/embeddings: one vector per input, the input's final hidden states pooled
(sampling/pooling.py) as the server's --pooling says: the last token's (the default, as vLLM
serves decoder models) or the mean; unit length unless the request sets `normalize: false`.

Each input is one prompt-only engine request, batched with everything else; the response
waits for all of them. Vectors are JSON floats, or with `encoding_format: "base64"` the
little-endian float32 bytes in base64, which is what the official client asks for by default.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from intaglio.engine.outputs import RequestOutput
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.pooling import Pooling
from intaglio.server.admission import admit
from intaglio.server.bodies import parse_request
from intaglio.server.errors import bad_request
from intaglio.server.protocol import EmbeddingRequest
from intaglio.server.state import ServerState, get_state
from intaglio.server.streams import await_finals

router = APIRouter()

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request


async def _inputs(req: EmbeddingRequest, state: ServerState) -> list[list[int]]:
    """Token ids per input; empty, too long or out-of-vocabulary inputs are a 400."""
    items = req.input
    if isinstance(items, str):
        items = [items]
    elif not items:
        raise bad_request("input must not be empty", "input")
    elif isinstance(items[0], int):
        items = [items]  # type: ignore[list-item]
    if len(items) > MAX_INPUTS:
        raise bad_request(f"input holds {len(items)} inputs, more than {MAX_INPUTS}", "input")
    limit, vocab = state.engine.max_model_len, state.engine.vocab_size
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise bad_request(f"input {i} is an empty string", "input")
            ids = await state.encode(item, param="input")
        else:
            ids = list(item)  # type: ignore[arg-type]
        if len(ids) > limit:
            raise bad_request(
                f"this model's maximum context length is {limit} tokens; input {i} has {len(ids)}",
                "input",
                "context_length_exceeded",
            )
        bad = [t for t in ids if t >= vocab]
        if bad:
            raise bad_request(
                f"input {i} has token ids out of range [0, {vocab}): {bad[:5]}", "input"
            )
        out.append(ids)
    return out


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.post("/v1/embeddings")
async def create_embeddings(raw: Request) -> Response:
    state = get_state(raw)
    req = await parse_request(EmbeddingRequest, raw)
    state.check_model(req.model)
    if req.dimensions is not None:
        raise bad_request(
            "dimensions is not supported: this model's embeddings cannot be shortened",
            "dimensions",
            "unsupported",
        )
    state.check_accepting()
    inputs = await _inputs(req, state)
    normalize = True if req.normalize is None else req.normalize
    params = SamplingParams(
        pooling=Pooling(state.pooling, normalize), output_kind="final_only", detokenize=False
    )
    base_id = f"embd-{uuid.uuid4().hex}"
    request_ids = [f"{base_id}-{i}" for i in range(len(inputs))]
    queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
    await admit(
        state.engine,
        [(rid, ids, params) for rid, ids in zip(request_ids, inputs)],
        queue,
        req.priority,
        req.cache_salt,
    )
    finals = await await_finals(state.engine, queue, request_ids, raw)
    if finals is None:
        return Response(status_code=499)
    data: list[dict[str, Any]] = []
    for i, rid in enumerate(request_ids):
        vector = finals[rid].embedding
        assert vector is not None  # every embedding request that finished without error
        data.append(
            {"object": "embedding", "index": i, "embedding": _encode(vector, req.encoding_format)}
        )
    num_tokens = sum(len(ids) for ids in inputs)
    return JSONResponse(
        {
            "id": base_id,
            "object": "list",
            "created": int(time.time()),
            "model": state.served_model_name,
            "data": data,
            "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens},
        }
    )
