"""EngineConfig: every engine setting in one frozen, validated place (CLI flags map 1:1)."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULING_POLICIES = ("fcfs", "priority", "cache-aware")
INTERLEAVE_POLICIES = ("stall-free", "prefill-first", "decode-first")
SPECULATIVE_METHODS = ("ngram", "suffix", "draft_model", "eagle")
# Methods whose drafts come from a network the executor runs (it reserves lookahead slots).
MODEL_DRAFT_METHODS = ("draft_model", "eagle")
# Reasoning models that think between markers: parser name -> (start, end) marker.
REASONING_PARSERS = {
    "think": ("<think>", "</think>"),
    "deepseek_r1": ("<think>", "</think>"),
    "qwen3": ("<think>", "</think>"),
}


@dataclass(frozen=True)
class EngineConfig:
    model: str | None = None  # local HF folder; None: the embedded default model
    dtype: str = "auto"  # auto (the checkpoint's), float32, bfloat16, float16
    device: str = "cpu"
    seed: int = 0
    block_size: int = 16  # tokens per KV cache block
    kv_cache_memory_gib: float = 1.0  # KV cache budget; sets the number of blocks
    num_kv_blocks: int | None = None  # overrides the memory budget (tests, experiments)
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    max_num_seqs: int = 128  # most requests running at once
    max_num_batched_tokens: int = 2048  # per-step token budget (prefill chunks + decodes)
    max_num_waiting: int = 4096  # queue bound: add_request fails beyond it
    num_threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    # CPUs without bf16/fp16 units: fp32 copies of half weights, up to this size, let batched
    # matmuls skip widening the weights every step (single rows still read the half weights).
    fp32_weight_cache_gib: float = 1.0
    prefix_caching: bool = True  # reuse the KV of prompt prefixes already computed
    # A request's logits (so greedy output and logprobs) bitwise independent of the rest of the
    # batch, of prompt chunking and of prefix-cache hits: fp32 compute through our row-invariant
    # kernels (model/batch_invariant.py; CPU with AVX-512 only), at a cost in speed.
    batch_invariant: bool = False
    scheduling_policy: str = "fcfs"  # fcfs, priority or cache-aware (longest prefix first)
    priority_aging_s: float = 10.0  # waiting this long raises a request one priority level
    interleave_policy: str = "stall-free"  # stall-free, prefill-first or decode-first
    decode_first_max_wait_steps: int = 8  # decode-first: decode steps before prefill runs
    # Speculative decoding (intaglio/spec): who proposes drafts (ngram, suffix; None: off),
    # the most draft tokens per request per step, whether that number adapts to measured
    # acceptance and step cost, and the match lengths the lookup proposers try.
    speculative_method: str | None = None
    speculative_model: str | None = None  # draft_model / eagle: its folder (default: README)
    num_speculative_tokens: int = 4
    speculative_adaptive: bool = True
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 5
    # A reasoning model's think markers (a name of REASONING_PARSERS): chat responses split
    # the thinking from the answer, and requests may set thinking budgets.
    reasoning_parser: str | None = None
    reasoning_markers: tuple[str, ...] = ()  # (start, end): other markers than the parser's
    grammar_timeout_s: float = 10.0  # wall time one structured-output grammar may compile

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"invalid EngineConfig: {msg}")

        if self.block_size < 1:
            fail(f"block_size must be positive, got {self.block_size}")
        if self.kv_cache_memory_gib <= 0:
            fail(f"kv_cache_memory_gib must be positive, got {self.kv_cache_memory_gib}")
        if self.fp32_weight_cache_gib < 0:
            fail(f"fp32_weight_cache_gib must be >= 0, got {self.fp32_weight_cache_gib}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            fail(f"num_kv_blocks must be positive, got {self.num_kv_blocks}")
        if self.max_model_len is not None and self.max_model_len < 2:
            fail(f"max_model_len must be at least 2, got {self.max_model_len}")
        if self.max_num_seqs < 1:
            fail(f"max_num_seqs must be positive, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            fail(f"max_num_batched_tokens must be positive, got {self.max_num_batched_tokens}")
        if self.max_num_waiting < 1:
            fail(f"max_num_waiting must be positive, got {self.max_num_waiting}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            fail(f"scheduling_policy must be one of {SCHEDULING_POLICIES}")
        if self.interleave_policy not in INTERLEAVE_POLICIES:
            fail(f"interleave_policy must be one of {INTERLEAVE_POLICIES}")
        if self.batch_invariant and self.device != "cpu":
            fail(f"batch_invariant runs on CPU only, got device {self.device!r}")
        if self.grammar_timeout_s <= 0:
            fail(f"grammar_timeout_s must be positive, got {self.grammar_timeout_s}")
        if self.priority_aging_s < 0:
            fail(f"priority_aging_s must be >= 0 (0 turns aging off), got {self.priority_aging_s}")
        if self.decode_first_max_wait_steps < 1:
            fail("decode_first_max_wait_steps must be positive")
        if self.speculative_method not in (None, *SPECULATIVE_METHODS):
            fail(f"speculative_method must be one of {SPECULATIVE_METHODS} or None")
        if not 1 <= self.num_speculative_tokens <= 32:
            fail(f"num_speculative_tokens must be in [1, 32], got {self.num_speculative_tokens}")
        if (
            self.speculative_model is not None
            and self.speculative_method not in MODEL_DRAFT_METHODS
        ):
            fail(f"speculative_model needs speculative_method in {MODEL_DRAFT_METHODS}")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            fail("prompt_lookup_min and prompt_lookup_max must satisfy 1 <= min <= max")
        object.__setattr__(self, "reasoning_markers", tuple(self.reasoning_markers))
        if self.reasoning_parser is not None and self.reasoning_parser not in REASONING_PARSERS:
            fail(f"reasoning_parser must be one of {sorted(REASONING_PARSERS)}")
        if self.reasoning_markers and (
            self.reasoning_parser is None
            or len(self.reasoning_markers) != 2
            or not all(self.reasoning_markers)
        ):
            fail("reasoning_markers takes two non-empty strings (start, end) with reasoning_parser")

    @property
    def thinking_markers(self) -> tuple[str, str] | None:
        """The (start, end) strings a reasoning model thinks between; None: not configured."""
        if self.reasoning_parser is None:
            return None
        if self.reasoning_markers:
            return self.reasoning_markers[0], self.reasoning_markers[1]
        return REASONING_PARSERS[self.reasoning_parser]
