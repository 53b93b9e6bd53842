"""SamplingParams: how one request turns logits into tokens and when it stops."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from intaglio.errors import RequestError
from intaglio.sampling.pooling import Pooling

OUTPUT_KINDS = ("cumulative", "delta", "final_only")
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")  # vLLM's names
# llama.cpp's default DRY sequence breakers: a repetition never spans one of these strings.
DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")
# The samplers beyond OpenAI's and vLLM's basics, as the server and CLI take them.
_SAMPLER_NUMBERS = (
    "top_n_sigma",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "mirostat_tau",
    "mirostat_eta",
    "dry_multiplier",
    "dry_base",
    "xtc_probability",
    "xtc_threshold",
)
SAMPLER_FIELDS = (
    *_SAMPLER_NUMBERS,
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "bad_words",
    "allowed_token_ids",
    "logits_processors",
    "extra_args",
    "logprobs_mode",
    "thinking_token_budget",
    "min_thinking_tokens",
    "thinking_continuation",
    "confidence_top_k",
    "confidence_window",
    "confidence_threshold",
)


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
    # Samplers of the chain in intaglio/sampling/sampler.py (vLLM, SGLang and llama.cpp names).
    top_n_sigma: float = -1.0  # keep logits >= max - n * std; < 0 disables
    typical_p: float = 1.0  # locally typical sampling; 1 disables
    epsilon_cutoff: float = 0.0  # drop tokens with prob < epsilon; 0 disables
    eta_cutoff: float = 0.0  # drop tokens with prob < min(eta, sqrt(eta) * exp(-entropy))
    mirostat_tau: float = 0.0  # Mirostat v2 target surprise in bits; 0 disables
    mirostat_eta: float = 0.1  # Mirostat v2 learning rate
    dry_multiplier: float = 0.0  # DRY repetition penalty strength; 0 disables
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1  # how many recent tokens DRY scans; -1: the whole context
    dry_sequence_breakers: tuple[str, ...] = DRY_SEQUENCE_BREAKERS
    xtc_probability: float = 0.0  # chance per step of excluding the top choices; 0 disables
    xtc_threshold: float = 0.1
    bad_words: tuple[str, ...] = ()  # words that may never be generated (vLLM's definition)
    allowed_token_ids: tuple[int, ...] | None = None  # only these may be drawn
    # Logits processors registered by name (intaglio.sampling.processors), applied in order;
    # each reads its arguments from extra_args.
    logits_processors: tuple[str, ...] = ()
    extra_args: Any = field(default=None, hash=False)  # a read-only mapping, or None
    logprobs_mode: str = "raw_logprobs"  # logprobs of the model's or the processed distribution
    # Thinking budgets (engines started with a reasoning parser; see sampling/thinking.py).
    thinking_token_budget: int | None = None  # then the end-of-thinking marker is forced
    min_thinking_tokens: int = 0  # an end of thinking before this becomes the cue below
    thinking_continuation: str = "Wait"
    # Confidence (sampling/confidence.py): per-token confidence over the top-k logprobs (0: off),
    # group confidence over a sliding window, and a threshold that stops a trace early.
    confidence_top_k: int = 0
    confidence_window: int = 2048
    confidence_threshold: float | None = None
    # Beam search inside the engine (engine/beam_search.py; vLLM's and HF's names): best_of
    # beams (default n), the n best returned; the model's raw log-probabilities rank them, so
    # temperature and the samplers above do not apply.
    use_beam_search: bool = False
    best_of: int | None = None
    length_penalty: float = 1.0  # finished beams score logprob / length ** length_penalty
    early_stopping: bool | str = False  # True, False (HF's heuristic) or "never"
    # What each step's output holds: everything so far (cumulative), only what is new (delta:
    # streaming at O(new tokens) per step), or nothing until the request ends (final_only).
    output_kind: str = "cumulative"
    # An embedding request (sampling/pooling.py): the prompt's hidden states pooled into one
    # vector, and no tokens generated. A Pooling, its type ("last", "mean") or its fields.
    pooling: Pooling | None = None

    def __post_init__(self) -> None:
        # Accept lists from users but store tuples so the params stay hashable and immutable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        bias = self.logit_bias.items() if isinstance(self.logit_bias, dict) else self.logit_bias
        object.__setattr__(self, "logit_bias", tuple(sorted((int(t), float(b)) for t, b in bias)))
        for name in ("dry_sequence_breakers", "bad_words", "logits_processors"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.allowed_token_ids is not None:
            ids = tuple(int(t) for t in self.allowed_token_ids)
            object.__setattr__(self, "allowed_token_ids", ids)
        if isinstance(self.extra_args, str):  # JSON text, from the command line
            try:
                object.__setattr__(self, "extra_args", json.loads(self.extra_args))
            except ValueError:
                raise RequestError("extra_args must be a JSON object", "extra_args") from None
        if self.extra_args is not None:
            if not isinstance(self.extra_args, dict | MappingProxyType):
                raise RequestError("extra_args must be a JSON object", "extra_args")
            object.__setattr__(self, "extra_args", MappingProxyType(dict(self.extra_args)))
        if self.structured is not None:
            from intaglio.structured.spec import StructuredOutput  # same layer, loaded on use

            object.__setattr__(self, "structured", StructuredOutput.from_value(self.structured))
        if self.pooling is not None:
            object.__setattr__(self, "pooling", Pooling.from_value(self.pooling))
        self._validate()

    def _validate(self) -> None:
        fields = {f.name for f in dataclasses.fields(self)}

        def fail(msg: str) -> None:  # every message starts with the field it is about
            name = msg.split()[0]
            raise RequestError(f"invalid SamplingParams: {msg}", name if name in fields else None)

        for name in (
            "n",
            "best_of",
            "top_k",
            "min_tokens",
            "max_tokens",
            "logprobs",
            "prompt_logprobs",
            "seed",
            "dry_allowed_length",
            "dry_penalty_last_n",
            "thinking_token_budget",
            "min_thinking_tokens",
            "confidence_top_k",
            "confidence_window",
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
            *_SAMPLER_NUMBERS,
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
        self._validate_samplers(fail)
        self._validate_beam_search(fail)
        pooled = self.pooling is not None
        if pooled and (self.n != 1 or self.use_beam_search or self.structured is not None):
            fail("pooling gives one vector per prompt: n=1, no beam search or structured output")

    def _validate_beam_search(self, fail: Any) -> None:
        """Beam search ranks by the raw model: what would change that, or end a beam from
        outside, is refused rather than ignored."""
        if self.best_of is not None and self.best_of < self.n:
            fail(f"best_of must be at least n ({self.n}), got {self.best_of}")
        if not isinstance(self.length_penalty, (int, float)):
            fail(f"length_penalty must be a number, got {self.length_penalty!r}")
        if self.early_stopping not in (True, False, "never"):
            fail(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        if not self.use_beam_search:
            if self.best_of is not None and self.best_of != self.n:
                fail(
                    "best_of other than n needs use_beam_search (for best-of-N sampling, run "
                    "the best_of_n search program: intaglio.search, or the server's search field)"
                )
            return
        conflicts = {
            "stop": bool(self.stop),
            "stop_token_ids": bool(self.stop_token_ids),
            "min_tokens": self.min_tokens > 0,
            "logit_bias": bool(self.logit_bias),
            "structured": self.structured is not None,
            "bad_words": bool(self.bad_words),
            "allowed_token_ids": self.allowed_token_ids is not None,
            "logits_processors": bool(self.logits_processors),
            "thinking_token_budget": self.uses_thinking_budget,
            "confidence_top_k": self.confidence_top_k > 0,
        }
        for name, conflict in conflicts.items():
            if conflict:
                fail(f"{name} does not combine with use_beam_search (beams rank by the raw model)")

    @property
    def beam_width(self) -> int:
        return self.best_of if self.best_of is not None else self.n

    def _validate_samplers(self, fail: Any) -> None:
        """The samplers added for reasoning models: ranges as vLLM, HF and llama.cpp accept."""
        if self.top_n_sigma != -1.0 and not self.top_n_sigma >= 0.0:
            fail(f"top_n_sigma must be >= 0 (or -1 to disable), got {self.top_n_sigma}")
        if not 0.0 < self.typical_p <= 1.0:
            fail(f"typical_p must be in (0, 1], got {self.typical_p}")
        for name in ("epsilon_cutoff", "eta_cutoff"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.mirostat_tau >= 0.0:
            fail(f"mirostat_tau must be >= 0, got {self.mirostat_tau}")
        if not self.mirostat_eta > 0.0:
            fail(f"mirostat_eta must be > 0, got {self.mirostat_eta}")
        if not self.dry_multiplier >= 0.0:
            fail(f"dry_multiplier must be >= 0, got {self.dry_multiplier}")
        if not self.dry_base >= 1.0:
            fail(f"dry_base must be >= 1, got {self.dry_base}")
        if self.dry_allowed_length < 1:
            fail(f"dry_allowed_length must be at least 1, got {self.dry_allowed_length}")
        if self.dry_penalty_last_n < -1:
            fail(f"dry_penalty_last_n must be -1 (all) or >= 0, got {self.dry_penalty_last_n}")
        if any(not isinstance(s, str) or not s for s in self.dry_sequence_breakers):
            fail("dry_sequence_breakers must be a list of non-empty strings")
        for name in ("xtc_probability", "xtc_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if any(not isinstance(w, str) or not w.strip() for w in self.bad_words):
            fail("bad_words must be a list of non-empty strings")
        if self.allowed_token_ids is not None and (
            not self.allowed_token_ids or any(t < 0 for t in self.allowed_token_ids)
        ):
            fail("allowed_token_ids must be a non-empty list of token ids >= 0")
        if self.logprobs_mode not in LOGPROBS_MODES:
            fail(f"logprobs_mode must be one of {LOGPROBS_MODES}, got {self.logprobs_mode!r}")
        if self.thinking_token_budget is not None and self.thinking_token_budget < 0:
            fail(f"thinking_token_budget must be >= 0, got {self.thinking_token_budget}")
        if self.min_thinking_tokens < 0:
            fail(f"min_thinking_tokens must be >= 0, got {self.min_thinking_tokens}")
        budget = self.thinking_token_budget
        if budget is not None and self.min_thinking_tokens > budget:
            fail(
                f"min_thinking_tokens ({self.min_thinking_tokens}) must not exceed "
                f"thinking_token_budget ({budget})"
            )
        if not isinstance(self.thinking_continuation, str) or not self.thinking_continuation:
            fail("thinking_continuation must be a non-empty string")
        if self.confidence_top_k < 0:
            fail(f"confidence_top_k must be >= 0 (0: off), got {self.confidence_top_k}")
        if self.confidence_window < 1:
            fail(f"confidence_window must be at least 1, got {self.confidence_window}")
        if self.confidence_threshold is not None and (
            not isinstance(self.confidence_threshold, (int, float)) or self.confidence_top_k == 0
        ):
            fail("confidence_threshold must be a number and needs confidence_top_k > 0")
        from intaglio.sampling.processors import registered  # same layer; it imports torch

        unknown = [name for name in self.logits_processors if name not in registered()]
        if unknown:
            fail(f"logits_processors names unregistered processors {unknown}")

    @property
    def uses_mirostat(self) -> bool:
        return self.mirostat_tau > 0.0 and self.temperature > 0.0

    @property
    def uses_thinking_budget(self) -> bool:
        return self.thinking_token_budget is not None or self.min_thinking_tokens > 0

    @property
    def uses_dry(self) -> bool:
        return self.dry_multiplier > 0.0

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
