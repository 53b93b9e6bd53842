"""When a request ends: the one stop check (EOS, stop token ids, min_tokens, length, the grammar,
stop strings), used by the engine core after every sampled token and by the text layer for stop
strings; the executor asks it which tokens may not be drawn yet.

Order, for a token just appended: a grammar that rejects it fails the request; then a stop
token id or EOS ends it (once min_tokens are out); then a grammar that is complete; then a
group confidence below the request's threshold; then the length limit. A stop string found
in the text ends it too (once min_tokens are out), and wins over length or EOS reached in the
same step. An embedding request (params.pooling) samples nothing and ends with its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from intaglio.sampling.params import SamplingParams

if TYPE_CHECKING:
    from intaglio.engine.request import Request


# OpenAI/vLLM finish reasons.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_ABORT = "abort"
FINISH_ERROR = "error"
FINISH_LOW_CONFIDENCE = "low_confidence"  # DeepConf's early stop (sampling/confidence.py)


@dataclass(frozen=True)
class Stop:
    reason: str  # stop, length or error
    stop_reason: str | int | None = None  # the stop string or stop token id that matched
    error: str | None = None  # what went wrong, for reason == error


def banned_token_ids(request: Request) -> list[int]:
    """Until min_tokens are out, no token that would end the request may be drawn."""
    params = request.params
    if len(request.output_token_ids) >= params.min_tokens:
        return []
    ends = () if params.ignore_eos else request.eos_token_ids
    return [*ends, *params.stop_token_ids]


def check_token(request: Request, token: int) -> Stop | None:
    """After `token` was appended to the request's output: how it ends here, if it does."""
    params = request.params
    early = len(request.output_token_ids) < params.min_tokens
    is_eos = not params.ignore_eos and token in request.eos_token_ids
    matcher = request.matcher
    state = request.sampler_state
    if matcher is not None and state is not None and not state.last_token_in_answer:
        matcher = None  # a reasoning model's thinking: the grammar waits for the answer
    # The EOS that a grammar allows once complete ends the request; any other token must fit.
    if matcher is not None and not (is_eos and not early) and not matcher.accept_token(token):
        return Stop(FINISH_ERROR, error=f"token {token} violates the structured-output grammar")
    if not early and token in params.stop_token_ids:
        return Stop(FINISH_STOP, token)
    if not early and is_eos:
        return Stop(FINISH_STOP)
    if matcher is not None and matcher.is_terminated():
        return Stop(FINISH_STOP)
    if state is not None and state.confidence is not None and state.confidence.low:
        return Stop(FINISH_LOW_CONFIDENCE)
    if len(request.output_token_ids) >= request.max_tokens:
        return Stop(FINISH_LENGTH)
    return None


def check_prompt_done(request: Request) -> Stop | None:
    """After a step that sampled nothing: an embedding request ends once its prompt is pooled."""
    if request.params.pooling is not None and request.num_computed_tokens == request.num_tokens:
        return Stop(FINISH_STOP)
    return None


def check_stop_string(num_output_tokens: int, params: SamplingParams, stop: str) -> Stop | None:
    """A stop string the text layer found; it counts once min_tokens are out."""
    if num_output_tokens < params.min_tokens:
        return None
    return Stop(FINISH_STOP, stop)
