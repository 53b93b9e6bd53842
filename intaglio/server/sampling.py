"""From an OpenAI request to engine inputs: token ids that fit, and SamplingParams."""

from __future__ import annotations

import dataclasses
from typing import Any

from intaglio.api.async_engine import AsyncEngine
from intaglio.sampling.params import SAMPLER_FIELDS, SamplingParams
from intaglio.server.errors import bad_request
from intaglio.server.protocol import SamplingFields
from intaglio.structured.spec import StructuredOutput

# Request fields copied one-to-one into SamplingParams when the client sets them.
_DIRECT = (
    "n",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "ignore_eos",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "use_beam_search",
    "length_penalty",
    "early_stopping",
)


def build_sampling_params(
    req: SamplingFields,
    engine: AsyncEngine,
    max_tokens: int | None,
    logprobs: int | None,
    prompt_logprobs: int | None = None,
    num_prompts: int = 1,
    stream: bool = False,
    structured: StructuredOutput | None = None,
) -> SamplingParams:
    """The model's defaults (generation_config.json) overridden by what the client set.

    `structured` is a constraint the route derived itself (a forced tool call), in place of
    the request's response_format / guided_* fields.

    `num_prompts` x n sequences must fit in the waiting queue at once, or the request could never
    be admitted whole: that is a 400, not a 429 to retry.
    """
    given = (*_DIRECT, *SAMPLER_FIELDS)
    values: dict[str, Any] = {k: getattr(req, k) for k in given if getattr(req, k) is not None}
    values["max_tokens"] = max_tokens
    values["logprobs"] = logprobs
    values["prompt_logprobs"] = prompt_logprobs
    if req.stop is not None:
        values["stop"] = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop)
    if req.stop_token_ids:  # the engine checks the ids against the vocabulary
        values["stop_token_ids"] = tuple(req.stop_token_ids)
    if req.logit_bias:  # token id -> bias added to its logit before sampling
        values["logit_bias"] = _logit_bias(req.logit_bias)
    best_of = getattr(req, "best_of", None)  # completions: beam search's width
    if best_of is not None:
        values["best_of"] = best_of
    values["output_kind"] = "delta" if stream else "final_only"
    structured = structured or _structured(req)
    if structured is not None:
        values["structured"] = structured
    _check_queue_room(num_prompts, req.n, engine.max_num_waiting)
    try:
        return dataclasses.replace(engine.default_sampling_params, **values)
    except ValueError as e:  # SamplingParams validates (a RequestError names the field)
        raise bad_request(str(e), getattr(e, "param", None)) from None


_GUIDED = (
    ("guided_json", "json_schema"),
    ("guided_regex", "regex"),
    ("guided_grammar", "grammar"),
    ("guided_choice", "choice"),
)


def structured_param(req: SamplingFields) -> str | None:
    """The request field that holds the output constraint (named by errors about it)."""
    fmt = getattr(req, "response_format", None)
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        return "response_format"
    return next((field for field, _ in _GUIDED if getattr(req, field) is not None), None)


def _structured(req: SamplingFields) -> StructuredOutput | None:
    """response_format (chat) or one guided_* extra -> a StructuredOutput; a 400 if malformed.

    Whether the schema or grammar compiles is checked when the engine admits the request.
    """
    given: dict[str, Any] = {}
    fmt = getattr(req, "response_format", None)
    if fmt is not None and fmt.type == "json_object":
        given["json_object"] = True
    elif fmt is not None and fmt.type == "json_schema":
        spec = (fmt.model_extra or {}).get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request(
                "response_format json_schema needs {'json_schema': {'name', 'schema'}}",
                "response_format",
            )
        # strict or not, we enforce the schema; a schema we cannot enforce is refused.
        given["json_schema"] = spec.get("schema", {})
    for field, key in _GUIDED:
        value = getattr(req, field)
        if value is not None:
            given[key] = value
    if not given:
        return None
    param = structured_param(req)
    if len(given) > 1:
        raise bad_request(
            f"give at most one structured-output constraint, got {sorted(given)}", param
        )
    if req.guided_decoding_backend is not None:
        given["backend"] = req.guided_decoding_backend
    try:
        return StructuredOutput(**given)
    except ValueError as e:
        raise bad_request(str(e), param) from None


def _check_queue_room(num_prompts: int, n: int, limit: int) -> None:
    if num_prompts * n <= limit:
        return
    if num_prompts == 1:
        raise bad_request(f"n={n} exceeds this server's waiting-queue size ({limit})", "n")
    raise bad_request(
        f"{num_prompts} prompts x n={n} exceeds this server's waiting-queue size ({limit})",
        "prompt",
    )


def _logit_bias(bias: dict[str, float]) -> dict[int, float]:
    """JSON's string keys to token ids (the engine checks them against the vocabulary)."""
    parsed: dict[int, float] = {}
    for key, value in bias.items():
        # Digits only: int() would also read "1_0" as 10 and " 7" as 7.
        if not (key.isascii() and key.isdigit()):
            message = f"logit_bias keys must be token ids, got {key!r}"
            raise bad_request(message, "logit_bias")
        parsed[int(key)] = value
    return parsed


def check_fits(
    num_prompt_tokens: int,
    max_tokens: int | None,
    max_model_len: int,
    param: str,
    max_tokens_param: str = "max_tokens",
) -> None:
    """Refuse prompts that leave no room, and max_tokens beyond the context, with a 400."""
    if num_prompt_tokens == 0:
        raise bad_request("the prompt is empty", param)
    if num_prompt_tokens >= max_model_len:
        raise bad_request(
            f"this model's maximum context length is {max_model_len} tokens; the prompt has "
            f"{num_prompt_tokens}, which leaves no room to generate",
            param,
            "context_length_exceeded",
        )
    if max_tokens is not None and num_prompt_tokens + max_tokens > max_model_len:
        raise bad_request(
            f"this model's maximum context length is {max_model_len} tokens; the prompt has "
            f"{num_prompt_tokens} and {max_tokens_param} asks for {max_tokens} more "
            f"(at most {max_model_len - num_prompt_tokens})",
            max_tokens_param,
            "context_length_exceeded",
        )
