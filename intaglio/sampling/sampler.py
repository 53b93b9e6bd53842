"""Batched sampler: raw logits -> one processing chain -> token ids.

Order follows vLLM: logprobs come from the raw logits; logit bias, banned tokens, penalties and
the grammar mask apply to every row; greedy rows take the argmax of the result; random rows are
tempered, truncated (min-p, top-k, top-p) and sampled with the exponential race (argmax of
probs / q, q ~ Exp(1)), which lets a seeded row draw q from its own generator so its tokens
never depend on its neighbours. `target_logits` is the chain, `draw` the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from intaglio.sampling.params import SamplingParams
from intaglio.sampling.penalties import apply_banned_tokens, apply_logit_bias, apply_penalties

# Temperatures below this are treated as greedy: dividing by them overflows float32.
_SAMPLING_EPS = 1e-5


def _pad_token_ids(
    token_ids: list[list[int]], pad_id: int, device: torch.device | str
) -> torch.Tensor:
    """Ragged lists -> [B, max_len] int64 padded with pad_id (built in numpy, one copy)."""
    max_len = max((len(ids) for ids in token_ids), default=0)
    out = np.full((len(token_ids), max_len), pad_id, dtype=np.int64)
    for row, ids in enumerate(token_ids):
        out[row, : len(ids)] = ids
    return torch.from_numpy(out).to(device)


@dataclass
class SamplingMetadata:
    # one row per sequence being sampled this step
    temperature: torch.Tensor  # [B] float32, 0.0 means greedy
    top_k: torch.Tensor | None  # [B] int64, vocab_size where disabled; None if no row uses it
    top_p: torch.Tensor | None  # [B] float32; None if no row uses it
    min_p: torch.Tensor | None  # [B] float32; None if no row uses it
    repetition_penalty: torch.Tensor | None  # [B]; None if all 1.0
    presence_penalty: torch.Tensor | None  # [B]; None if all 0.0
    frequency_penalty: torch.Tensor | None  # [B]; None if all 0.0
    prompt_token_ids: torch.Tensor | None  # [B, max_prompt_len] int64 padded with vocab_size
    output_token_ids: torch.Tensor | None  # [B, max_output_len] int64 padded with vocab_size
    banned_token_ids: list[list[int]]  # per row tokens forbidden this step; mostly empty
    logit_bias: list[tuple[tuple[int, float], ...]]  # per row (token, bias) pairs; mostly empty
    generators: dict[int, torch.Generator]  # row index -> generator of a seeded request
    max_num_logprobs: int | None  # top-N logprobs to return; None: none requested
    all_greedy: bool
    all_random: bool
    # [B, V] bool, False where a structured request's grammar forbids the token; None: no row
    # is constrained. Applied after bias and penalties, so nothing can re-enable a token.
    allowed_token_mask: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        params: list[SamplingParams],
        prompt_token_ids: list[list[int]],
        output_token_ids: list[list[int]],
        generators: dict[int, torch.Generator],
        banned_token_ids: list[list[int]],
        vocab_size: int,
        device: torch.device | str,
    ) -> SamplingMetadata:
        """Gather per-request settings into [B] tensors; vocab_size must equal logits.shape[-1]."""
        greedy = [p.temperature < _SAMPLING_EPS for p in params]
        temperature: list[float] = []
        top_k: list[int] = []
        top_p: list[float] = []
        min_p: list[float] = []
        for p, g in zip(params, greedy, strict=True):
            # Truncation only matters for random rows; greedy rows get the disabled values so
            # an all-greedy batch with top_k set never pays for a sort.
            temperature.append(0.0 if g else p.temperature)
            top_k.append(min(p.top_k, vocab_size) if p.top_k > 0 and not g else vocab_size)
            top_p.append(1.0 if g else p.top_p)
            min_p.append(0.0 if g else p.min_p)
        rep = [p.repetition_penalty for p in params]
        pres = [p.presence_penalty for p in params]
        freq = [p.frequency_penalty for p in params]

        def floats(values: list[float], disabled: float) -> torch.Tensor | None:
            if all(v == disabled for v in values):
                return None
            return torch.tensor(values, dtype=torch.float32, device=device)

        rep_t = floats(rep, 1.0)
        pres_t = floats(pres, 0.0)
        freq_t = floats(freq, 0.0)
        any_penalty = rep_t is not None or pres_t is not None or freq_t is not None
        logprobs = [p.logprobs for p in params if p.logprobs is not None]
        return cls(
            temperature=torch.tensor(temperature, dtype=torch.float32, device=device),
            top_k=(
                None
                if all(k == vocab_size for k in top_k)
                else torch.tensor(top_k, dtype=torch.int64, device=device)
            ),
            top_p=floats(top_p, 1.0),
            min_p=floats(min_p, 0.0),
            repetition_penalty=rep_t,
            presence_penalty=pres_t,
            frequency_penalty=freq_t,
            prompt_token_ids=(
                _pad_token_ids(prompt_token_ids, vocab_size, device) if rep_t is not None else None
            ),
            output_token_ids=(
                _pad_token_ids(output_token_ids, vocab_size, device) if any_penalty else None
            ),
            banned_token_ids=banned_token_ids,
            logit_bias=[p.logit_bias for p in params],
            # A greedy row never draws, so its generator is left untouched.
            generators={i: g for i, g in generators.items() if not greedy[i]},
            max_num_logprobs=max(logprobs) if logprobs else None,
            all_greedy=all(greedy),
            all_random=not any(greedy),
        )


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor | None  # [B] float32, raw-logit logprob of the sampled token
    top_logprobs: torch.Tensor | None  # [B, N] float32, sorted descending
    top_token_ids: torch.Tensor | None  # [B, N] int64


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose prob < min_p * max prob. logits: [B, V]; min_p: [B]."""
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p[:, None]
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """Keep each row's top_k tokens, then the smallest set with cumulative prob >= top_p.

    logits: [B, V]; top_k: [B] int64 (V disables); top_p: [B] float32 (1.0 disables).
    """
    if top_k is None and top_p is None:
        return logits
    vocab_size = logits.shape[1]
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    if top_k is not None:
        # Threshold at the k-th largest value so ties with it are kept, not split arbitrarily.
        kth = sorted_logits.gather(1, (top_k.clamp(1, vocab_size) - 1)[:, None])
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        # Mass strictly before each position; a token is kept while that mass is < top_p,
        # so the first token is always kept and the kept set is the smallest one reaching top_p.
        before = probs.cumsum(dim=-1) - probs
        drop = before >= top_p[:, None]
        # top_p == 1 must drop nothing, even where float rounding lets the cumsum reach 1 early.
        drop &= (top_p < 1.0)[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, sorted_idx, sorted_logits)


def exponential_race(probs: torch.Tensor, generators: dict[int, torch.Generator]) -> torch.Tensor:
    """Sample one token per row: argmax(probs / q), q ~ Exp(1). probs: [B, V] -> [B] int64.

    Seeded rows draw q from their own generator so their tokens depend only on their own state.
    """
    q = torch.empty_like(probs)
    if len(generators) < probs.shape[0]:
        q.exponential_()  # one draw for the whole batch; seeded rows are overwritten below
    for row, generator in generators.items():
        q[row].exponential_(generator=generator)
    # A zero draw would turn a masked token's 0/0 into NaN, which argmax would pick.
    q.clamp_min_(torch.finfo(q.dtype).tiny)
    return (probs / q).argmax(dim=-1)


class Sampler:
    """Turns one step's logits into token ids (and logprobs when asked)."""

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        # logits: [B, V] any float dtype -> SamplerOutput with [B] token ids
        raw_logprobs = (
            logits.float().log_softmax(dim=-1) if meta.max_num_logprobs is not None else None
        )
        token_ids = self.draw(self.target_logits(logits, meta), meta)
        if raw_logprobs is None:
            return SamplerOutput(token_ids, None, None, None)
        assert meta.max_num_logprobs is not None
        sampled = raw_logprobs.gather(1, token_ids[:, None]).squeeze(1)
        top = raw_logprobs.topk(meta.max_num_logprobs, dim=-1, sorted=True)
        return SamplerOutput(token_ids, sampled, top.values, top.indices)

    @staticmethod
    def target_logits(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        """The distribution each row samples from, as float32 logits [B, V].

        The one processing chain: bias, bans, penalties and the grammar mask for every row;
        then for random rows temperature, min-p, top-k and top-p. A greedy row's target is the
        argmax of its result. Speculative verification accepts drafts against these same
        logits, so a speculated request samples exactly what it asked for.
        """
        # A float32 input would alias the caller's tensor; clone so edits stay local.
        logits = logits.to(torch.float32, copy=True)
        apply_logit_bias(logits, meta.logit_bias)
        apply_banned_tokens(logits, meta.banned_token_ids)
        logits = apply_penalties(
            logits,
            meta.prompt_token_ids,
            meta.output_token_ids,
            meta.repetition_penalty,
            meta.presence_penalty,
            meta.frequency_penalty,
        )
        if meta.allowed_token_mask is not None:
            logits = logits.masked_fill(~meta.allowed_token_mask, float("-inf"))
        if meta.all_greedy:
            return logits
        temperature = torch.where(meta.temperature == 0.0, 1.0, meta.temperature)
        tempered = logits / temperature[:, None]
        if meta.min_p is not None:
            tempered = apply_min_p(tempered, meta.min_p)
        tempered = apply_top_k_top_p(tempered, meta.top_k, meta.top_p)
        if meta.all_random:
            return tempered
        # Greedy rows keep their untempered logits (same argmax, no division by zero).
        return torch.where((meta.temperature == 0.0)[:, None], logits, tempered)

    @staticmethod
    def draw(target: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        """One token per row from target_logits' result: [B, V] -> [B] int64."""
        if meta.all_greedy:
            return target.argmax(dim=-1)
        random_ids = exponential_race(target.softmax(dim=-1), meta.generators)
        if meta.all_random:
            return random_ids
        return torch.where(meta.temperature == 0.0, target.argmax(dim=-1), random_ids)
