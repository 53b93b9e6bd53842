"""Batched sampler: raw logits -> one processing chain -> token ids.

`target` is the chain (`target_logits` its result over the whole vocabulary), `draw` the
choice. The chain, in order:

1. every row: allowed_token_ids, logit bias, banned tokens (min_tokens, bad words);
2. every row: repetition, frequency and presence penalties, then DRY;
3. every row: the request's named logits processors (processors.py);
4. every row: the grammar mask, last, so nothing can re-enable a token it forbids;
   greedy rows take the argmax of this;
5. random rows: temperature, then top-nσ, min-p, top-k, top-p, typical, epsilon, eta, XTC and
   Mirostat (truncation.py), then the draw: inverse transform sampling with one uniform per
   row (draw.py), which a seeded row takes from its own generator so its tokens never depend
   on its neighbours.

Cost: top-nσ and top-k keep the same tokens at any temperature, so they run on the untempered
logits; when every random row has a top_k (up to _COMPACT_MAX_K), the rest of step 5 and the
draw see only each row's top-k candidates (`Target`), and the penalties and DRY touch only the
tokens of each row's history. No step draws random numbers over the vocabulary.

Steps 1, 2 and 4 and temperature before truncation follow vLLM (so requests written for vLLM
sample what they would there); HF's typical/epsilon/eta warpers also run after temperature.
llama.cpp instead tempers last, after truncation; we keep vLLM's order and take from llama.cpp
where vLLM has no such sampler: DRY right after the penalties, top-nσ first among the
truncations (its kept set is the same before or after temperature), XTC after the other
truncations, and Mirostat last, because it measures the surprise of the drawn token on the
distribution it was drawn from. Logprobs come from the raw logits, or from this chain's result
for rows with logprobs_mode="processed_logprobs".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from intaglio.sampling.confidence import token_confidence
from intaglio.sampling.draw import inverse_cdf, uniforms
from intaglio.sampling.dry import DryRows, apply_dry_
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.penalties import apply_banned_tokens, apply_logit_bias, apply_penalties_
from intaglio.sampling.processors import ProcessorRow, apply_processors
from intaglio.sampling.state import SequenceSamplerState
from intaglio.sampling.target import Target
from intaglio.sampling.truncation import (
    apply_epsilon_cutoff,
    apply_eta_cutoff,
    apply_mirostat,
    apply_typical_p,
    apply_xtc,
    mirostat_next_mu,
    top_n_sigma_threshold,
)
from intaglio.sampling.workspace import Workspace

# Temperatures below this are treated as greedy: dividing by them overflows float32.
_SAMPLING_EPS = 1e-5


def _pad_token_ids(token_ids: list[list[int]], pad_id: int) -> np.ndarray:
    """Ragged lists -> [B, max_len] int64 padded with pad_id."""
    max_len = max((len(ids) for ids in token_ids), default=0)
    out = np.full((len(token_ids), max_len), pad_id, dtype=np.int64)
    for row, ids in enumerate(token_ids):
        out[row, : len(ids)] = ids
    return out


class _Histories:
    """The rows' prompt and output tokens as padded arrays, each converted from its Python
    lists at most once per step (the penalties and DRY read the same tokens)."""

    def __init__(self, prompts: list[list[int]], outputs: list[list[int]], pad_id: int) -> None:
        self.prompts, self.outputs, self._pad_id = prompts, outputs, pad_id
        self._prompt: np.ndarray | None = None
        self._output: np.ndarray | None = None

    def prompt(self) -> np.ndarray:
        if self._prompt is None:
            self._prompt = _pad_token_ids(self.prompts, self._pad_id)
        return self._prompt

    def output(self) -> np.ndarray:
        if self._output is None:
            self._output = _pad_token_ids(self.outputs, self._pad_id)
        return self._output


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
    # The samplers below: None when no row of the batch uses them.
    allowed_token_ids: list[tuple[int, ...] | None] | None = None  # per row; None: all allowed
    dry: DryRows | None = None
    processors: list[tuple[str, ...]] | None = None  # per row, the named processors in order
    processor_rows: list[ProcessorRow] | None = None
    top_n_sigma: torch.Tensor | None = None  # [B] float32, -1 where disabled
    typical_p: torch.Tensor | None = None  # [B] float32, 1 where disabled
    epsilon_cutoff: torch.Tensor | None = None  # [B] float32, 0 where disabled
    eta_cutoff: torch.Tensor | None = None  # [B] float32, 0 where disabled
    xtc_threshold: torch.Tensor | None = None  # [B] float32
    xtc_active: torch.Tensor | None = None  # [B] bool: this step's coin said exclude
    # Mirostat: mu per row (+inf where off) and the states that get the next mu after the draw.
    mirostat_mu: torch.Tensor | None = None
    mirostat_tau: torch.Tensor | None = None
    mirostat_eta: torch.Tensor | None = None
    states: list[SequenceSamplerState | None] | None = None
    # Thinking budgets: per row the token it must produce, and (end marker's first token, cue's
    # first token) where an end of thinking would come too early.
    forced_token_ids: list[int | None] | None = None
    early_end: list[tuple[int, int] | None] | None = None
    processed_logprobs: torch.Tensor | None = None  # [B] bool: logprobs of the chain's result
    confidence_top_k: torch.Tensor | None = None  # [B] int64 (1 where off): DeepConf's k

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
        states: list[SequenceSamplerState | None] | None = None,
    ) -> SamplingMetadata:
        """Gather per-request settings into [B] tensors; vocab_size must equal logits.shape[-1].

        `states` are the rows' SequenceSamplerStates (bad words, DRY breakers, Mirostat's mu).
        """
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
        states = states if states is not None else [None] * len(params)
        banned_token_ids = _with_bad_words(banned_token_ids, states, output_token_ids)
        histories = _Histories(prompt_token_ids, output_token_ids, vocab_size)
        meta = cls(
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
                torch.from_numpy(histories.prompt()).to(device) if rep_t is not None else None
            ),
            output_token_ids=(
                torch.from_numpy(histories.output()).to(device) if any_penalty else None
            ),
            banned_token_ids=banned_token_ids,
            logit_bias=[p.logit_bias for p in params],
            # A greedy row never draws, so its generator is left untouched.
            generators={i: g for i, g in generators.items() if not greedy[i]},
            max_num_logprobs=max(logprobs) if logprobs else None,
            all_greedy=all(greedy),
            all_random=not any(greedy),
        )
        meta._add_samplers(params, greedy, histories, generators, states)
        return meta

    def _add_samplers(
        self,
        params: list[SamplingParams],
        greedy: list[bool],
        histories: _Histories,
        generators: dict[int, torch.Generator],
        states: list[SequenceSamplerState | None],
    ) -> None:
        """The samplers added for reasoning models; each stays None unless a row uses it."""
        prompt_token_ids, output_token_ids = histories.prompts, histories.outputs
        device = self.temperature.device

        def floats(values: list[float], disabled: float) -> torch.Tensor | None:
            if all(v == disabled for v in values):
                return None
            return torch.tensor(values, dtype=torch.float32, device=device)

        if any(p.allowed_token_ids is not None for p in params):
            self.allowed_token_ids = [p.allowed_token_ids for p in params]
        dry = [i for i, p in enumerate(params) if p.uses_dry]
        if dry:
            self.dry = _dry_rows(dry, params, histories, states, device)
        if any(p.logits_processors for p in params):
            self.processors = [p.logits_processors for p in params]
            self.processor_rows = [
                ProcessorRow(prompt, output, p.extra_args or {})
                for p, prompt, output in zip(params, prompt_token_ids, output_token_ids)
            ]
        thinking = [s.thinking if s is not None else None for s in states]
        if any(t is not None for t in thinking):
            self.states = states
            self.forced_token_ids = [t.forced_token() if t else None for t in thinking]
            self.early_end = [
                (t.markers.end[0], t.cue[0]) if t and t.replaces_end() else None for t in thinking
            ]
        if any(p.confidence_top_k for p in params):
            self.states = states
            k = [max(p.confidence_top_k, 1) for p in params]
            self.confidence_top_k = torch.tensor(k, dtype=torch.int64, device=device)
        if any(p.logprobs_mode == "processed_logprobs" for p in params):
            processed = [p.logprobs_mode == "processed_logprobs" for p in params]
            self.processed_logprobs = torch.tensor(processed, device=device)
        if self.all_greedy:
            return
        random = [(p, not g) for p, g in zip(params, greedy)]
        self.top_n_sigma = floats([p.top_n_sigma if r else -1.0 for p, r in random], -1.0)
        self.typical_p = floats([p.typical_p if r else 1.0 for p, r in random], 1.0)
        self.epsilon_cutoff = floats([p.epsilon_cutoff if r else 0.0 for p, r in random], 0.0)
        self.eta_cutoff = floats([p.eta_cutoff if r else 0.0 for p, r in random], 0.0)
        coins = _xtc_coins(params, greedy, output_token_ids, generators)
        if any(coins):
            self.xtc_active = torch.tensor(coins, device=device)
            self.xtc_threshold = floats([p.xtc_threshold for p in params], -1.0)
        mu = [
            s.mirostat_mu if s is not None and r and p.uses_mirostat else float("inf")
            for (p, r), s in zip(random, states)
        ]
        if any(m != float("inf") for m in mu):
            self.mirostat_mu = torch.tensor(mu, dtype=torch.float32, device=device)
            self.mirostat_tau = floats([p.mirostat_tau for p in params], float("nan"))
            self.mirostat_eta = floats([p.mirostat_eta for p in params], float("nan"))
            self.states = states


def _with_bad_words(
    banned: list[list[int]],
    states: list[SequenceSamplerState | None],
    output_token_ids: list[list[int]],
) -> list[list[int]]:
    """Add each row's bad-word completions: a word's last token is banned once the output ends
    with the rest of it (vLLM's definition; one-token words are always banned)."""
    out = banned
    for row, state in enumerate(states):
        if state is None or not state.bad_words:
            continue
        output = output_token_ids[row]
        extra = [
            word[-1]
            for word in state.bad_words
            if len(word) == 1 or tuple(output[len(output) - len(word) + 1 :]) == word[:-1]
        ]
        if extra:
            out = list(out) if out is banned else out
            out[row] = [*out[row], *extra]
    return out


def _dry_rows(
    rows: list[int],
    params: list[SamplingParams],
    histories: _Histories,
    states: list[SequenceSamplerState | None],
    device: torch.device | str,
) -> DryRows:
    windows = []  # each row's last dry_penalty_last_n tokens of prompt and output
    prompts, outputs = histories.prompt(), histories.output()
    for i in rows:
        num_prompt, num_output = len(histories.prompts[i]), len(histories.outputs[i])
        last_n = params[i].dry_penalty_last_n
        last_n = num_prompt + num_output if last_n == -1 else last_n
        output = outputs[i, max(num_output - last_n, 0) : num_output]
        prompt = prompts[i, max(num_prompt - last_n + len(output), 0) : num_prompt]
        windows.append(np.concatenate([prompt, output]))
    breakers = []
    for i in rows:
        state = states[i]
        assert state is not None and state.dry_breakers is not None, "DRY needs its state"
        breakers.append(state.dry_breakers)
    return DryRows.build(
        rows,
        windows,
        [params[i].dry_multiplier for i in rows],
        [params[i].dry_base for i in rows],
        [params[i].dry_allowed_length for i in rows],
        breakers,
        device,
    )


def _xtc_coins(
    params: list[SamplingParams],
    greedy: list[bool],
    output_token_ids: list[list[int]],
    generators: dict[int, torch.Generator],
) -> list[bool]:
    """Whether XTC acts on each row this step (chance xtc_probability). A seeded row's coin is
    a function of its seed and output position alone, so it never depends on the batch."""
    if all(p.xtc_probability <= 0.0 for p in params):
        return [False] * len(params)
    coins = []
    unseeded = torch.rand(len(params)).tolist()  # one call for the rows without a seed
    for row, p in enumerate(params):
        if greedy[row] or p.xtc_probability <= 0.0:
            coins.append(False)
            continue
        generator = generators.get(row)
        u = unseeded[row]
        if generator is not None:
            rng = np.random.default_rng([generator.initial_seed(), len(output_token_ids[row])])
            u = float(rng.random())
        coins.append(u < p.xtc_probability)
    return coins


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


class Sampler:
    """Turns one step's logits into token ids (and logprobs when asked)."""

    def __init__(self) -> None:
        self.workspace = Workspace()  # buffers kept from step to step

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        # logits: [B, V] any float dtype -> SamplerOutput with [B] token ids
        wants_raw = meta.max_num_logprobs is not None or meta.confidence_top_k is not None
        raw_logprobs = logits.float().log_softmax(dim=-1) if wants_raw else None
        target = self.target(logits, meta, self.workspace)
        token_ids = self.draw(target, meta)
        self.advance(target, token_ids, meta, raw_logprobs)
        if meta.max_num_logprobs is None or raw_logprobs is None:
            return SamplerOutput(token_ids, None, None, None)
        logprobs = raw_logprobs
        if meta.processed_logprobs is not None:
            processed = target.full().log_softmax(dim=-1)
            logprobs = torch.where(meta.processed_logprobs[:, None], processed, raw_logprobs)
        sampled = logprobs.gather(1, token_ids[:, None]).squeeze(1)
        top = logprobs.topk(meta.max_num_logprobs, dim=-1, sorted=True)
        return SamplerOutput(token_ids, sampled, top.values, top.indices)

    @staticmethod
    def target_logits(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        """The distribution each row samples from, as float32 logits [B, V] (the chain of the
        module docstring). A greedy row's target is the argmax of its result. Speculative
        verification accepts drafts against these same logits, so a speculated request samples
        exactly what it asked for."""
        return Sampler.target(logits, meta).full()

    @staticmethod
    def target(
        logits: torch.Tensor, meta: SamplingMetadata, workspace: Workspace | None = None
    ) -> Target:
        """The chain's result, compact where every random row keeps at most its top-k tokens.
        `workspace`: the buffers to reuse (the result may alias them), None for fresh ones."""
        workspace = Workspace() if workspace is None else workspace
        # The chain edits its copy in place; the caller's logits stay as they are.
        logits = workspace.copy_of(logits)
        num_rows, vocab_size = logits.shape
        if meta.allowed_token_ids is not None:
            logits = _keep_allowed(logits, meta.allowed_token_ids)
        apply_logit_bias(logits, meta.logit_bias)
        apply_banned_tokens(logits, meta.banned_token_ids)
        if meta.output_token_ids is not None or meta.dry is not None:
            table = workspace.zeros(num_rows, vocab_size + 1, logits.device)
            apply_penalties_(
                logits,
                meta.prompt_token_ids,
                meta.output_token_ids,
                meta.repetition_penalty,
                meta.presence_penalty,
                meta.frequency_penalty,
                table,
            )
            if meta.dry is not None:
                apply_dry_(logits, meta.dry, table)
        if meta.processors is not None:
            assert meta.processor_rows is not None
            logits = apply_processors(logits, meta.processors, meta.processor_rows)
        if meta.forced_token_ids is not None and meta.early_end is not None:
            logits = _control_thinking(
                logits, meta.forced_token_ids, meta.early_end, meta.temperature
            )
        if meta.allowed_token_mask is not None:
            logits = logits.masked_fill(~meta.allowed_token_mask, float("-inf"))
        if meta.all_greedy:
            return Target(logits, None, vocab_size)
        values, index = _truncate(logits, meta)
        if meta.all_random:
            return Target(values, index, vocab_size)
        # Greedy rows keep their untempered logits (same argmax, no division by zero).
        return Target(values, index, vocab_size, meta.temperature == 0.0, logits)

    @staticmethod
    def draw(target: Target, meta: SamplingMetadata) -> torch.Tensor:
        """One token per row from the chain's result: [B] int64."""
        if meta.all_greedy:
            return target.logits.argmax(dim=-1)
        u = uniforms(target.logits.shape[0], meta.generators, target.logits.device)
        column = inverse_cdf(target.logits.softmax(dim=-1), u)
        if target.index is None:
            token_ids = column
        else:
            token_ids = target.index.gather(1, column[:, None]).squeeze(1)
        if target.greedy is None or target.untempered is None:
            return token_ids
        greedy = target.greedy.nonzero().squeeze(1)
        return token_ids.index_copy(0, greedy, target.untempered[greedy].argmax(dim=-1))

    @staticmethod
    def advance(
        target: Target,
        token_ids: torch.Tensor,
        meta: SamplingMetadata,
        raw_logprobs: torch.Tensor | None = None,
    ) -> None:
        """After a row's token is accepted: update its state (Mirostat's mu, where its thinking
        stands, its confidence) from the target it was drawn from and the model's own
        log-probabilities (needed when a row asks for confidence). Call once per accepted
        token, in order."""
        if meta.confidence_top_k is not None and meta.states is not None:
            assert raw_logprobs is not None, "confidence needs the raw log-probabilities"
            confidences = token_confidence(raw_logprobs, meta.confidence_top_k).tolist()
            for row, state in enumerate(meta.states):
                if state is not None and state.confidence is not None:
                    state.confidence.add(confidences[row])
        if meta.forced_token_ids is not None and meta.states is not None:
            tokens = token_ids.tolist()
            for row, state in enumerate(meta.states):
                if state is not None and state.thinking is not None:
                    state.thinking.advance(tokens[row])
        if meta.mirostat_mu is None:
            return
        assert meta.states is not None
        assert meta.mirostat_tau is not None and meta.mirostat_eta is not None
        old_mu = meta.mirostat_mu.tolist()
        mu = mirostat_next_mu(
            target.log_prob(token_ids), meta.mirostat_mu, meta.mirostat_tau, meta.mirostat_eta
        ).tolist()
        for row, state in enumerate(meta.states):
            # A row without Mirostat this step (mu +inf: off, or greedy) keeps its state.
            if state is not None and old_mu[row] != float("inf"):
                state.mirostat_mu = mu[row]


def _keep_allowed(logits: torch.Tensor, allowed: list[tuple[int, ...] | None]) -> torch.Tensor:
    """Mask every token outside a row's allowed_token_ids (rows without a list keep all)."""
    rows = [row for row, ids in enumerate(allowed) for _ in ids or ()]
    cols = [t for ids in allowed for t in ids or ()]
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device)] = True
    free = torch.tensor([ids is None for ids in allowed], device=logits.device)
    return logits.masked_fill(~(keep | free[:, None]), float("-inf"))


def _control_thinking(
    logits: torch.Tensor,
    forced: list[int | None],
    early_end: list[tuple[int, int] | None],
    temperature: torch.Tensor,
) -> torch.Tensor:
    """Thinking budgets (thinking.py): a forced row keeps only its forced token; where an end of
    thinking is too early, the end marker's probability at the row's temperature moves to the
    cue's first token (as drawing the end marker and replacing it would; greedy: the larger
    logit of the two goes to the cue)."""
    device = logits.device
    rows = [row for row, token in enumerate(forced) if token is not None]
    if rows:
        index = torch.tensor(rows, device=device)
        cols = torch.tensor([forced[row] for row in rows], device=device)
        logits = logits.index_fill(0, index, float("-inf"))
        logits[index, cols] = 0.0
    early = [(row, pair) for row, pair in enumerate(early_end) if pair and forced[row] is None]
    if early:
        index = torch.tensor([row for row, _ in early], device=device)
        end = torch.tensor([pair[0] for _, pair in early], device=device)
        cue = torch.tensor([pair[1] for _, pair in early], device=device)
        t = temperature[index]
        t = torch.where(t == 0.0, 1.0, t)
        lc, le = logits[index, cue], logits[index, end]
        merged = torch.where(
            temperature[index] == 0.0, torch.maximum(lc, le), t * torch.logaddexp(lc / t, le / t)
        )
        logits[index, cue] = merged
        logits[index, end] = float("-inf")
    return logits


# Rows that all keep at most this many tokens (top_k, with ties at the k-th) are truncated
# further on those candidates alone, instead of the whole vocabulary.
_COMPACT_MAX_K = 1024


def _truncate(
    logits: torch.Tensor, meta: SamplingMetadata
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step 5 of the chain on the untempered logits [B, V]: (tempered, truncated logits of each
    row's candidates [B, C], their token ids ascending, or None when they are all V tokens).

    top-nσ and top-k keep the same tokens at any temperature, so they run first, untempered:
    then the candidates alone need tempering."""
    threshold = None
    if meta.top_n_sigma is not None:  # its std is over the whole vocabulary: before top-k
        threshold = top_n_sigma_threshold(logits, meta.top_n_sigma)
    temperature = torch.where(meta.temperature == 0.0, 1.0, meta.temperature)[:, None]
    compact = _top_k_candidates(logits, meta)
    if compact is None:
        if threshold is not None:
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        return _truncate_candidates(logits / temperature, meta, top_k_done=False), None
    values, index = compact
    if threshold is not None:
        values = values.masked_fill(values < threshold, float("-inf"))
    values = _truncate_candidates(values / temperature, meta, top_k_done=True)
    # Token-id order, as over the whole vocabulary: the draw then picks the same token.
    index, order = index.sort(dim=-1)
    return values.gather(1, order), index


def _top_k_candidates(
    logits: torch.Tensor, meta: SamplingMetadata
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(values, token ids) [B, C] of each row's top_k tokens and the tokens tied with its k-th
    (as masking the whole vocabulary keeps them), the rest -inf; None where some row has no
    top_k or keeps more than _COMPACT_MAX_K tokens."""
    if meta.top_k is None:
        return None
    # Greedy rows take their untempered logits in the end, so their k does not matter.
    top_k = torch.where(meta.temperature == 0.0, 1, meta.top_k)
    k = int(top_k.max())
    if k >= min(_COMPACT_MAX_K, logits.shape[1]):
        return None
    # A few more than k: logits rounded from bfloat16 often tie at the k-th value, and a row
    # keeps every token tied with it. The candidates hold them all once the last one is below
    # every row's k-th value; until then, widen.
    width = min(k + _TIE_MARGIN, logits.shape[1])
    while True:
        values, index = _top(logits, width)
        kth = values.gather(1, (top_k - 1)[:, None])
        more = (values[:, -1:] >= kth) & torch.isfinite(kth)
        if width == logits.shape[1] or not bool(more.any()):
            return values.masked_fill(values < kth, float("-inf")), index
        width = min(2 * width, logits.shape[1])
        if width > _COMPACT_MAX_K:
            return None


# Candidates beyond the largest top_k, so that ties with the k-th rarely need a second search.
_TIE_MARGIN = 8
# Blocks of the vocabulary for _top.
_TOP_BLOCK = 128


def _top(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits.topk(k): each row's k largest values, descending, and their token ids.

    Where the vocabulary splits into many more than k blocks, the k largest values all lie in
    the k blocks with the largest maxima (any other value has k block maxima at least as
    large), so only those blocks are searched: a max per block, then a top-k over k blocks.
    """
    rows, width = logits.shape
    num_blocks = width // _TOP_BLOCK
    if width % _TOP_BLOCK or 2 * k > num_blocks:
        values, index = logits.topk(k, dim=-1)
        return values, index
    blocks = logits.view(rows, num_blocks, _TOP_BLOCK)
    best = blocks.amax(dim=-1).topk(k, dim=-1).indices  # [B, k]
    first_block = torch.arange(rows, device=logits.device)[:, None] * num_blocks
    flat = logits.view(rows * num_blocks, _TOP_BLOCK)
    searched = flat.index_select(0, (best + first_block).view(-1)).view(rows, -1)
    values, position = searched.topk(k, dim=-1)
    block = best.gather(1, position // _TOP_BLOCK)
    return values, block * _TOP_BLOCK + position % _TOP_BLOCK


def _truncate_candidates(
    logits: torch.Tensor, meta: SamplingMetadata, top_k_done: bool
) -> torch.Tensor:
    """min-p, top-k, top-p, typical, epsilon, eta, XTC and Mirostat over [B, C] candidates (the
    whole vocabulary, or each row's top-k): tokens outside them have probability 0 either way."""
    if meta.min_p is not None:  # commutes with top-k: both keep the most likely tokens
        logits = apply_min_p(logits, meta.min_p)
    logits = apply_top_k_top_p(logits, None if top_k_done else meta.top_k, meta.top_p)
    if meta.typical_p is not None:
        logits = apply_typical_p(logits, meta.typical_p)
    if meta.epsilon_cutoff is not None:
        logits = apply_epsilon_cutoff(logits, meta.epsilon_cutoff)
    if meta.eta_cutoff is not None:
        logits = apply_eta_cutoff(logits, meta.eta_cutoff)
    if meta.xtc_active is not None and meta.xtc_threshold is not None:
        logits = apply_xtc(logits, meta.xtc_threshold, meta.xtc_active)
    if meta.mirostat_mu is not None:
        logits = apply_mirostat(logits, meta.mirostat_mu)
    return logits
