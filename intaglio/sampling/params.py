"""SamplingParams: how one request turns logits into tokens and when it stops."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from intaglio.errors import RequestError

OUTPUT_KINDS = ("cumulative", "delta", "final_only")


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings, validated at construction (field names follow vLLM)."""

    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 (or 0) disables
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF style, over prompt and output tokens
    presence_penalty: float = 0.0  # OpenAI style, over output tokens
    frequency_penalty: float = 0.0  # OpenAI style, over output tokens
    max_tokens: int | None = 16  # None: up to max_model_len
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # top-N logprobs per output token (0: the sampled token only)
    prompt_logprobs: int | None = None  # same, per prompt token
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs; a dict is accepted
    skip_special_tokens: bool = True
    detokenize: bool = True  # False: token ids only (benchmarks, token-level clients)
    # A constraint on the output (intaglio.structured.StructuredOutput, or a dict of its fields).
    structured: Any = None
    # What each step's output holds: everything so far (cumulative), only what is new (delta:
    # streaming at O(new tokens) per step), or nothing until the request ends (final_only).
    output_kind: str = "cumulative"

    def __post_init__(self) -> None:
        # Accept lists from users but store tuples so the params stay hashable and immutable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        object.__setattr__(self, "logit_bias", tuple(sorted((int(t), float(b)) for t, b in bias)))
        if self.structured is not None:
            from intaglio.structured.spec import StructuredOutput  # same layer, loaded on use

            object.__setattr__(self, "structured", StructuredOutput.from_value(self.structured))
        self._validate()

    def _validate(self) -> None:
        fields = {f.name for f in dataclasses.fields(self)}

        def fail(msg: str) -> None:  # every message starts with the field it is about
            name = msg.split()[0]
            raise RequestError(f"invalid SamplingParams: {msg}", name if name in fields else None)

        for name in (
            "n",
            "top_k",
            "min_tokens",
            "max_tokens",
            "logprobs",
            "prompt_logprobs",
            "seed",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                fail(f"{name} must be an integer, got {value!r}")
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            if not isinstance(getattr(self, name), (int, float)):
                fail(f"{name} must be a number, got {getattr(self, name)!r}")
        if self.seed is not None and not 0 <= self.seed < 2**63 - 2**16:
            fail(f"seed must be in [0, 2**63 - 2**16), got {self.seed}")
        if self.n < 1:
            fail(f"n must be at least 1, got {self.n}")
        if not self.temperature >= 0.0:
            fail(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            fail(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            fail(f"top_k must be -1 (disabled), 0 (disabled) or positive, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            fail(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0.0:
            fail(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            fail(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            fail(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        if self.max_tokens is not None and self.max_tokens < 1:
            fail(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.min_tokens < 0:
            fail(f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            fail(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            fail("stop must be a list of non-empty strings")
        if self.stop and not self.detokenize:
            fail("stop strings need detokenize=True")
        if any(t < 0 for t in self.stop_token_ids):
            fail("stop_token_ids must be non-negative")
        if any(t < 0 or not -100.0 <= b <= 100.0 for t, b in self.logit_bias):
            fail("logit_bias needs token ids >= 0 and biases in [-100, 100]")
        if self.output_kind not in OUTPUT_KINDS:
            fail(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 20:
                fail(f"{name} must be between 0 and 20, got {value}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamplingParams:
        """Build from user input, naming any unknown field instead of a bare TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RequestError(
                f"invalid SamplingParams: unknown field(s) {unknown}; known fields: {sorted(known)}"
            )
        return cls(**values)
