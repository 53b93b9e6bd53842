"""OpenAI request bodies as pydantic models: wrong types and out-of-range values are a 400.

Top-level requests forbid unknown fields (a typo such as `max_token` should not be silently
ignored), so every field the official client can send is declared, even those we only accept
and ignore (`user`, `store`, `metadata`, ...). Fields that would change the output in ways we
cannot honour (tools, JSON mode, audio) are declared too and refused with a clear 400 later.
Strict mode: "5" is not an int and 1 is not a bool, as in OpenAI's API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_INT64 = 2**63

Probability = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Field(ge=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # OpenAI padding against side channels; ignored


class SearchSpec(BaseModel):
    """`search` (an extra_body field): run a search program instead of one plain generation;
    the response's one choice is what the program chose (intaglio/search)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    method: Literal["best_of_n", "self_consistency"]
    n: Annotated[int, Field(ge=1, le=256)]
    # best_of_n: rank by mean log-probability, or by the model judging its own answer.
    scorer: Literal["mean_logprob", "judge"] = "mean_logprob"
    judge_question: str = "\nIs the answer above correct? Answer Yes or No.\nAnswer:"
    # self_consistency: the answer is the regex's last match (its first group, if it has one);
    # by default the last number in the text.
    answer_regex: str | None = None
    weighted: bool = False
    early_stop: bool = True
    # A budget for the whole program: generated tokens, wall seconds.
    max_search_tokens: PositiveInt | None = None
    max_search_seconds: Annotated[float, Field(gt=0)] | None = None


class SamplingFields(_Strict):
    """What completions and chat share: OpenAI's sampling fields plus vLLM-style extras."""

    model: str | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    max_tokens: PositiveInt | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=0, lt=_INT64)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Extras (vLLM names).
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    # Lower runs first under --scheduling-policy priority (vLLM's convention).
    priority: Annotated[int, Field(ge=-_INT64, lt=_INT64)] = 0
    # Requests share cached prefix KV only with requests of the same salt (tenant isolation).
    cache_salt: Annotated[str, Field(min_length=1)] | None = None
    # Structured output extras (vLLM names); chat also takes OpenAI's response_format.
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    guided_decoding_backend: str | None = None  # "intaglio" (default) or "xgrammar"
    # Samplers for reasoning models (vLLM, SGLang and llama.cpp names); SamplingParams checks
    # the ranges and a bad value is a 400 naming the field.
    top_n_sigma: float | None = None
    typical_p: float | None = None
    epsilon_cutoff: float | None = None
    eta_cutoff: float | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    dry_multiplier: float | None = None
    dry_base: float | None = None
    dry_allowed_length: int | None = None
    dry_penalty_last_n: int | None = None
    dry_sequence_breakers: list[str] | None = None
    xtc_probability: float | None = None
    xtc_threshold: float | None = None
    bad_words: list[str] | None = None
    allowed_token_ids: list[int] | None = None
    logits_processors: list[str] | None = None
    extra_args: dict[str, Any] | None = None
    logprobs_mode: str | None = None
    # Thinking budgets (a server started with --reasoning-parser).
    thinking_token_budget: int | None = None
    min_thinking_tokens: int | None = None
    thinking_continuation: str | None = None
    # Confidence (DeepConf): per-token and group confidences returned, early stop below it.
    confidence_top_k: int | None = None
    confidence_window: int | None = None
    confidence_threshold: float | None = None
    # Beam search inside the engine (vLLM's names): best_of beams, the n best returned.
    use_beam_search: bool | None = None
    length_penalty: float | None = None
    early_stopping: bool | Literal["never"] | None = None
    search: SearchSpec | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    # 0 scores the prompt (with echo and logprobs, as lm-eval's loglikelihood does).
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    best_of: PositiveInt | None = None  # beam search's width; otherwise it must equal n
    echo: bool | None = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None  # insertion is not supported; refused when non-empty


class ContentPart(BaseModel):
    """Any content part; only `text` parts can be used (checked when rendering)."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    arguments: str  # JSON text, as OpenAI returns it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    # Messages echo back whatever a previous response held (refusal, audio...), so unknown
    # keys are ignored here rather than refused.
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; none means no arguments
    strict: bool | None = None  # arguments are always enforced when the call is forced


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    audio: Any = None
    modalities: list[str] | None = None
    web_search_options: Any = None
    # Advisory fields: accepted and ignored.
    metadata: Any = None
    store: bool | None = None
    service_tier: str | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    moderation: Any = None
    prompt_cache_key: str | None = None
    prompt_cache_options: Any = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    # Extra variables for the chat template (e.g. {"enable_thinking": false}).
    chat_template_kwargs: dict[str, Any] | None = None


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    tools: list[Tool] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class EmbeddingRequest(_Strict):
    """POST /v1/embeddings: OpenAI's fields, plus vLLM's `normalize` and the scheduling ones."""

    input: str | list[str] | TokenIds | list[TokenIds]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None  # shortened (Matryoshka) vectors: refused
    user: str | None = None
    normalize: bool | None = None  # unit-length vectors (default: yes, as vLLM)
    priority: Annotated[int, Field(ge=-_INT64, lt=_INT64)] = 0
    cache_salt: Annotated[str, Field(min_length=1)] | None = None
