"""ServerState: what every route needs (engine, model name, metrics), kept on app.state.

Tokenizing, detokenizing and chat templates run on one thread of their own with their own
tokenizer copy (HF tokenizers are not safe to share between threads), never on the event loop:
a long prompt then delays no other request's tokens. A prompt longer in characters than the
context could hold even in the vocabulary's longest tokens is refused before any tokenizing.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from intaglio.api.async_engine import AsyncEngine
from intaglio.engine.engine import encode_prompt
from intaglio.errors import RequestError
from intaglio.server.errors import OpenAIError, bad_request
from intaglio.server.logprobs import TokenStrings
from intaglio.server.metrics import ServerMetrics

T = TypeVar("T")


@dataclass
class ServerState:
    engine: AsyncEngine
    served_model_name: str
    body_timeout_s: float = 30.0  # a request body must arrive within this
    pooling: str = "last"  # how /v1/embeddings pools hidden states (sampling/pooling.py)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.token_strings = TokenStrings(self.engine.tokenizer)
        self.text_tokenizer = copy.deepcopy(self.engine.tokenizer)  # the text thread's own
        self._text_thread = ThreadPoolExecutor(1, thread_name_prefix="intaglio-text")
        self.max_prompt_chars = self.engine.max_model_len * _longest_token(self.text_tokenizer)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn (which may use text_tokenizer) on the text thread."""
        return await asyncio.get_running_loop().run_in_executor(self._text_thread, fn, *args)

    def close(self) -> None:
        self._text_thread.shutdown(wait=False, cancel_futures=True)

    def check_length(self, num_chars: int, param: str) -> None:
        """Refuse text that cannot fit the context whatever its tokens, without tokenizing."""
        if num_chars > self.max_prompt_chars:
            limit = self.engine.max_model_len
            raise bad_request(
                f"this model's maximum context length is {limit} tokens; the prompt has "
                f"{num_chars} characters, more than {limit} tokens of this vocabulary can hold",
                param,
                "context_length_exceeded",
            )

    async def encode(
        self, text: str, add_special_tokens: bool = True, param: str = "prompt"
    ) -> list[int]:
        """Tokenize on the text thread; failures are a 400."""
        if not text:
            return []  # check_fits refuses an empty prompt, naming the field
        self.check_length(len(text), param)
        try:
            return await self.off_loop(encode_prompt, self.text_tokenizer, text, add_special_tokens)
        except RequestError as e:
            raise bad_request(str(e), param) from None

    async def decode(self, token_ids: list[int], param: str = "prompt") -> str:
        vocab = self.engine.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"token ids out of range [0, {vocab}): {bad[:5]}", param)
        try:
            return str(await self.off_loop(self.text_tokenizer.decode, token_ids))
        except Exception as e:
            raise bad_request(f"cannot detokenize the input: {e}", param) from None

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.served_model_name:
            raise bad_request(
                f"model {model!r} does not exist; this server serves {self.served_model_name!r}",
                "model",
                "model_not_found",
            )

    def check_accepting(self) -> None:
        if not self.engine.accepting:
            raise OpenAIError(
                503,
                "the server is shutting down or its engine has stopped; retry elsewhere",
                code="service_unavailable",
                headers={"Retry-After": "1"},
            )


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.intaglio
    return state


def _longest_token(tokenizer: Any) -> int:
    """Characters of the longest vocabulary entry (special tokens included): no token covers
    more of a prompt. Byte-level BPE spells a byte as one character, so this is safe there."""
    try:
        return max(len(t) for t in tokenizer.get_vocab())
    except (AttributeError, TypeError, ValueError):  # not an HF tokenizer: a loose bound
        return 1024
