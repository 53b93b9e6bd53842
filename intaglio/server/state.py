"""ServerState: what every route needs (engine, model name, metrics), kept on app.state."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from intaglio.api.async_engine import AsyncEngine
from intaglio.engine.engine import encode_prompt
from intaglio.errors import RequestError
from intaglio.server.errors import OpenAIError, bad_request
from intaglio.server.logprobs import TokenStrings
from intaglio.server.metrics import ServerMetrics


@dataclass
class ServerState:
    engine: AsyncEngine
    served_model_name: str
    api_key: str | None = None
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.token_strings = TokenStrings(self.engine.tokenizer)

    def encode(
        self, text: str, add_special_tokens: bool = True, param: str = "prompt"
    ) -> list[int]:
        """Tokenize on the event loop with the server's own tokenizer; failures are a 400."""
        if not text:
            return []  # check_fits refuses an empty prompt, naming the field
        try:
            return encode_prompt(self.engine.tokenizer, text, add_special_tokens)
        except RequestError as e:
            raise bad_request(str(e), param) from None

    def decode(self, token_ids: list[int], param: str = "prompt") -> str:
        vocab = self.engine.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"token ids out of range [0, {vocab}): {bad[:5]}", param)
        try:
            return str(self.engine.tokenizer.decode(token_ids))
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
