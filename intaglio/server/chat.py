"""POST /v1/chat/completions: messages through the chat template, streamed or not."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from intaglio.api.reasoning import ReasoningSplitter, message_fields, starts_in_reasoning
from intaglio.engine.outputs import RequestOutput
from intaglio.server.admission import admit
from intaglio.server.bodies import parse_request
from intaglio.server.chat_template import chat_length, render_chat
from intaglio.server.confidence import StreamConfidences, confidence_fields
from intaglio.server.deltas import Delta, DeltaTracker
from intaglio.server.errors import bad_request
from intaglio.server.logprobs import chat_logprobs
from intaglio.server.protocol import ChatCompletionRequest
from intaglio.server.sampling import build_sampling_params, check_fits, structured_param
from intaglio.server.search import check_search, run_search
from intaglio.server.state import ServerState, get_state
from intaglio.server.streams import (
    EventStream,
    abort_all,
    await_finals,
    sse,
    stream_chunks,
)
from intaglio.server.tool_output import ToolCallOutput
from intaglio.server.tools import ToolPlan, plan_tools, writes_hermes

router = APIRouter()


def _check_supported(req: ChatCompletionRequest) -> None:
    """Refuse what would silently change the meaning of the answer if ignored."""
    if req.functions or req.function_call not in (None, "none", "auto"):
        raise bad_request(
            "the legacy functions/function_call fields are not supported; use tools",
            "functions" if req.functions else "function_call",
            "unsupported",
        )
    if req.response_format is not None and req.response_format.type not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise bad_request(
            f"response_format {req.response_format.type!r} is not supported; use 'text', "
            "'json_object' or 'json_schema'",
            "response_format",
            "unsupported",
        )
    if req.audio is not None or (req.modalities and set(req.modalities) != {"text"}):
        raise bad_request("only text output is supported", "modalities", "unsupported")
    if req.web_search_options is not None:
        raise bad_request("web search is not supported", "web_search_options", "unsupported")
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options needs stream=true", "stream_options")


@router.post("/v1/chat/completions")
async def create_chat_completion(raw: Request) -> Response:
    state = get_state(raw)
    req = await parse_request(ChatCompletionRequest, raw)
    state.check_model(req.model)
    _check_supported(req)
    tools = plan_tools(req, writes_hermes(state.text_tokenizer))
    state.check_accepting()
    state.check_length(chat_length(req.messages), "messages")
    text, add_special = await state.off_loop(
        render_chat,
        state.text_tokenizer,
        req.messages,
        True,
        tools.tools if tools is not None and tools.mode != "none" else None,
        req.chat_template_kwargs,
    )
    token_ids = await state.encode(text, add_special, "messages")
    max_tokens = req.max_completion_tokens or req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    check_fits(len(token_ids), max_tokens, state.engine.max_model_len, "messages", param)
    params = build_sampling_params(
        req,
        state.engine,
        max_tokens=max_tokens,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        stream=bool(req.stream),
        structured=tools.structured if tools is not None else None,
    )
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    if req.search is not None:
        pattern = check_search(req.search, params, bool(req.stream))
        out, info = await run_search(state, req.search, pattern, request_id, token_ids, params)
        view = _ChatView(state, req, request_id, 1, text, tools)
        return JSONResponse({**view.response(out), "search": info})
    queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
    await admit(
        state.engine,
        [(request_id, token_ids, params)],
        queue,
        req.priority,
        req.cache_salt,
        "tools" if tools is not None and tools.structured is not None else structured_param(req),
    )
    view = _ChatView(state, req, request_id, params.n, text, tools)
    if req.stream:
        return EventStream(view.stream(queue), lambda: abort_all(state.engine, [request_id]))
    finals = await await_finals(state.engine, queue, [request_id], raw)
    if finals is None:
        return Response(status_code=499)
    return JSONResponse(view.response(finals[request_id]))


class _ChatView:
    def __init__(
        self,
        state: ServerState,
        req: ChatCompletionRequest,
        request_id: str,
        n: int,
        prompt: str,
        tools: ToolPlan | None,
    ) -> None:
        self.state = state
        self.req = req
        self.id = request_id
        self.n = n
        self.created = int(time.time())
        self.strings = state.token_strings
        # With a reasoning parser, one splitter per choice separates thinking from answer.
        markers = state.engine.thinking_markers
        self.splitters: list[ReasoningSplitter] | None = None
        if markers is not None:
            opened = starts_in_reasoning(prompt, *markers)
            self.splitters = [ReasoningSplitter(*markers, opened) for _ in range(n)]
        # With tools in play, one parser per choice finds the calls in its answer.
        self.tool_outputs: list[ToolCallOutput] | None = None
        if tools is not None and tools.mode != "none":
            self.tool_outputs = [ToolCallOutput(tools) for _ in range(n)]

    def _message(self, d: Delta, stream: bool) -> tuple[dict[str, Any], str | None]:
        """The message (or delta) fields of a choice's new text, and its finish reason."""
        reasoning, content = "", d.text
        if self.splitters is not None:
            splitter = self.splitters[d.index]
            reasoning, content = splitter.feed(d.text)
            if d.finish_reason is not None:
                held_reasoning, held_content = splitter.finish()
                reasoning, content = reasoning + held_reasoning, content + held_content
        calls: list[dict[str, Any]] = []
        finish_reason = d.finish_reason
        if self.tool_outputs is not None:
            tool_output = self.tool_outputs[d.index]
            content, calls = tool_output.feed(content, finish_reason is not None)
            if tool_output.has_calls and finish_reason == "stop":
                finish_reason = "tool_calls"  # a call cut short keeps "length"
        if self.splitters is None:
            fields: dict[str, Any] = {"content": content} if content or not stream else {}
        else:
            fields = message_fields(reasoning, content, stream)
        if not calls:
            return fields, finish_reason
        if stream:
            fields["tool_calls"] = calls
        else:
            fields["content"] = content or None
            fields["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        return fields, finish_reason

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.state.served_model_name,
            "choices": choices,
        }

    def _logprobs(self, delta: Delta) -> dict[str, Any] | None:
        if not self.req.logprobs or delta.logprobs is None:
            return None
        top_n = self.req.top_logprobs or 0
        return {"content": chat_logprobs(delta.token_ids, delta.logprobs, top_n, self.strings)}

    def response(self, out: RequestOutput) -> dict[str, Any]:
        tracker = DeltaTracker([self.id], self.n)
        choices = []
        for d in tracker.update(out):
            message, finish_reason = self._message(d, stream=False)
            choices.append(
                {
                    "index": d.index,
                    "message": {"role": "assistant", **message},
                    "logprobs": self._logprobs(d),
                    "finish_reason": finish_reason,
                    **confidence_fields(out.outputs[d.index], self.req.confidence_window),
                }
            )
        return {**self._envelope("chat.completion", choices), "usage": tracker.usage()}

    def _chunk(self, choice: dict[str, Any], include_usage: bool) -> str:
        chunk = self._envelope("chat.completion.chunk", [choice])
        if include_usage:
            chunk["usage"] = None
        return sse(chunk)

    async def stream(self, queue: asyncio.Queue[RequestOutput]) -> AsyncIterator[str]:
        """The role chunk of each choice, then its content until every choice finished."""
        include_usage = bool(self.req.stream_options and self.req.stream_options.include_usage)
        for i in range(self.n):
            role = {"role": "assistant", "content": ""}
            yield self._chunk(
                {"index": i, "delta": role, "logprobs": None, "finish_reason": None},
                include_usage,
            )

        confidences = StreamConfidences(self.req.confidence_window)

        def make_choice(out: RequestOutput, d: Delta) -> dict[str, Any] | None:
            delta, finish_reason = self._message(d, stream=True)
            logprobs = self._logprobs(d)
            confidence = confidences.fields(d.index, d.confidences)
            if not delta and finish_reason is None and logprobs is None and not confidence:
                return None  # all of it held back (a tool call being written)
            return {
                "index": d.index,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
                **confidence,
            }

        def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
            return self._envelope("chat.completion.chunk", choices)

        tracker = DeltaTracker([self.id], self.n)
        chunks = stream_chunks(
            queue, tracker, self.state.engine, envelope, make_choice, include_usage
        )
        async for chunk in chunks:
            yield chunk
