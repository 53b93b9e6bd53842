"""ModelExecutor: lays a scheduled step out as one flat batch, runs the model, samples.

Flat batch order: every decode (one new token) first, then each prefill chunk; this is the
layout AttentionMetadata describes. Metadata is built with numpy, one copy per tensor.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from intaglio.attention.metadata import AttentionMetadata, PrefillChunk, decode_rows
from intaglio.config import MODEL_DRAFT_METHODS, EngineConfig
from intaglio.executor.drafter import Drafter, DraftModel, DraftStep, EagleDrafter
from intaglio.model.batch_invariant import make_batch_invariant
from intaglio.model.checkpoint import default_draft_model
from intaglio.model.kv_layout import split_kv_blocks
from intaglio.model.loader import load_model
from intaglio.ops.cpu_kernels import cpu_kernels
from intaglio.ops.linear import HALF_DTYPES, cache_fp32_weights
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.sampler import Sampler, SamplingMetadata
from intaglio.sampling.state import SequenceSamplerState
from intaglio.spec import accepted_tokens, position_seed
from intaglio.step import (
    ExecutorOutput,
    ScheduledRequest,
    SchedulerOutput,
    SequenceView,
    token_slice,
)

logger = logging.getLogger(__name__)


def _logprob_entry(
    token: int, token_lp: float, top_ids: list[int], top_lps: list[float]
) -> dict[int, float]:
    entry = {token: token_lp}
    for t, lp in zip(top_ids, top_lps):
        entry.setdefault(t, lp)
    return entry


class ModelExecutor:
    def __init__(self, model_path: str | Path, config: EngineConfig) -> None:
        self.device = torch.device(config.device)
        self.model = load_model(model_path, config.dtype, config.device)
        if self.device.type == "cpu":
            cpu_kernels()  # built (first time only) while loading, not in the first request
        if config.batch_invariant:
            make_batch_invariant(self.model)  # its matmul reads the stored weights
        elif self.model.compute_dtype == torch.float32 and self.model.cfg.dtype in HALF_DTYPES:
            cached = cache_fp32_weights(self.model, int(config.fp32_weight_cache_gib * 2**30))
            logger.info("fp32 copies of half weights for batched matmuls: %.2f GiB", cached / 2**30)
        cfg = self.model.cfg
        self.block_size = config.block_size
        self.num_speculative_tokens = config.num_speculative_tokens
        self.vocab_size = cfg.vocab_size
        self.max_position_embeddings = cfg.max_position_embeddings
        # The checkpoint's dtype, also when a half-precision model computes in fp32 on a CPU
        # without half units: half the bytes for decode attention to read, as HF would store.
        kv_dtype = cfg.dtype
        elem = torch.empty(0, dtype=kv_dtype).element_size()
        self.num_kv_blocks, self.num_local_kv_blocks, nbytes = split_kv_blocks(
            cfg,
            int(config.kv_cache_memory_gib * 2**30),
            2 * config.block_size * cfg.kv_size * elem,
            config.block_size,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            config.num_kv_blocks,
        )
        # Set when the chunked-attention layers have a KV pool of their own.
        self.attention_chunk_size = cfg.attention_chunk_size if self.num_local_kv_blocks else None
        if self.num_kv_blocks < 1 or self.num_local_kv_blocks == 1:
            raise ValueError(
                f"the KV cache budget of {config.kv_cache_memory_gib} GiB holds too few blocks "
                "for this model; raise kv_cache_memory_gib"
            )

        def tensors(num_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
            shape = (num_blocks, config.block_size, cfg.num_kv_heads, cfg.head_dim)
            return (
                torch.zeros(shape, dtype=kv_dtype, device=self.device),
                torch.zeros(shape, dtype=kv_dtype, device=self.device),
            )

        self.chunked_layers = [
            self.attention_chunk_size is not None and cfg.uses_chunked_attention(i)
            for i in range(cfg.num_layers)
        ]
        self.kv_caches = [
            tensors(self.num_local_kv_blocks if chunked else self.num_kv_blocks)
            for chunked in self.chunked_layers
        ]
        self.sampler = Sampler()
        self._pool: ThreadPoolExecutor | None = None
        self.drafter = self._draft_model(Path(model_path), config)
        logger.info(
            "KV cache: %d blocks of %d tokens (+%d for chunked-attention layers), %.2f GiB",
            self.num_kv_blocks,
            config.block_size,
            self.num_local_kv_blocks,
            nbytes / 2**30,
        )

    def _draft_model(self, target: Path, config: EngineConfig) -> Drafter | None:
        method = config.speculative_method
        if method not in MODEL_DRAFT_METHODS:
            return None
        path = config.speculative_model or default_draft_model(target, method)
        if path is None:
            raise ValueError(f"speculative_method {method} needs speculative_model (a folder)")
        if method == "eagle":
            return EagleDrafter(path, self.model, self.device, self.num_kv_blocks, self.block_size)
        return DraftModel(
            path, config.dtype, self.device, self.num_kv_blocks, self.block_size, self.vocab_size
        )

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput[SequenceView]) -> ExecutorOutput:
        self._copy_blocks(out.block_copies, chunked=False)
        self._copy_blocks(out.local_block_copies, chunked=True)
        batch = sorted(out.scheduled, key=lambda s: not s.is_decode)  # decodes first
        input_ids, positions, meta, local_meta, starts = self._prepare(batch)
        samplers = [s for s in batch if s.samples]
        # Grammar masks are filled on a worker thread while the forward pass runs (torch
        # releases the GIL inside its kernels).
        constrained = any(_grammar_applies(s.request) for s in samplers)
        masks = self._mask_pool().submit(self._grammar_masks, samplers) if constrained else None
        hidden = self.model(input_ids, positions, self.kv_caches, meta, local_meta)

        # Rows whose logits we need: each sampling request's last token and the drafts after it
        # (the positions it verifies), plus prompt positions of requests asking for prompt
        # logprobs.
        first_rows = [  # each sampling request's row of its last known token
            starts[i] + s.num_new_tokens - 1 - len(s.spec_token_ids)
            for i, s in enumerate(batch)
            if s.samples
        ]
        sample_rows = [
            row + j
            for row, s in zip(first_rows, samplers)
            for j in range(len(s.spec_token_ids) + 1)
        ]
        result = ExecutorOutput()
        if samplers:
            logits = self.model.compute_logits(hidden[sample_rows])
            allowed = None if masks is None else torch.from_numpy(masks.result()).to(self.device)
            self._sample(samplers, logits, result, allowed)
        if self.drafter is not None:
            step = DraftStep(
                input_ids,
                positions,
                meta,
                hidden,
                first_rows,
                [s.request.num_tokens - 1 for s in samplers],
                [result.sampled[s.request.request_id] for s in samplers],
                [s.request.block_ids for s in samplers],
            )
            drafts = self.drafter.draft(
                step, min(out.num_draft_tokens, self.num_speculative_tokens)
            )
            for s, d in zip(samplers, drafts):
                result.draft_token_ids[s.request.request_id] = d
        for i, s in enumerate(batch):
            if s.request.wants_prompt_logprobs:
                self._prompt_logprobs(s, hidden, starts[i], result)
            if s.request.params.pooling is not None:
                self._pooled_rows(s, hidden, starts[i], result)
        return result

    def _copy_blocks(self, copies: list[tuple[int, int]], chunked: bool) -> None:
        if not copies:
            return
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for (k_cache, v_cache), is_chunked in zip(self.kv_caches, self.chunked_layers):
            if is_chunked != chunked:
                continue
            k_cache.index_copy_(0, dst, k_cache.index_select(0, src))
            v_cache.index_copy_(0, dst, v_cache.index_select(0, src))
        if self.drafter is not None and not chunked:
            self.drafter.copy_blocks(src, dst)

    def _prepare(
        self, batch: list[ScheduledRequest]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, AttentionMetadata | None, list[int]]:
        ids: list[int] = []
        pos_chunks = []
        starts = []
        for s in batch:
            start = s.request.num_computed_tokens
            starts.append(len(ids))
            ids.extend(token_slice(s.request, start, start + s.num_new_tokens))
            ids.extend(s.spec_token_ids)  # the slice stops at the known tokens
            pos_chunks.append(np.arange(start, start + s.num_new_tokens, dtype=np.int64))
        meta = self._metadata(batch, pos_chunks, starts, [s.request.block_ids for s in batch])
        local_meta = None
        if self.attention_chunk_size is not None:
            tables = [s.request.local_block_ids for s in batch]
            local_meta = self._metadata(batch, pos_chunks, starts, tables)
        input_ids = torch.tensor(ids, dtype=torch.int64, device=self.device)
        positions = torch.from_numpy(np.concatenate(pos_chunks)).to(self.device)
        return input_ids, positions, meta, local_meta, starts

    def _metadata(
        self,
        batch: list[ScheduledRequest],
        pos_chunks: list[np.ndarray],
        starts: list[int],
        block_tables: list[list[int]],  # per request, indexed by position // block_size
    ) -> AttentionMetadata:
        bs = self.block_size
        positions = np.concatenate(pos_chunks)
        # Slot of each token: its block's id * block_size + its offset in the block.
        block_of_token = np.concatenate(
            [np.asarray(t, dtype=np.int64)[p // bs] for t, p in zip(block_tables, pos_chunks)]
        )
        slot_mapping = block_of_token * bs + positions % bs

        # Decodes come first, one row per token: a verification's k + 1 tokens are k + 1 rows
        # on the same block table, row i seeing the keys up to its own position.
        num_decodes = sum(1 for s in batch if s.is_decode)
        nd = sum(s.num_new_tokens for s in batch[:num_decodes])
        decode_tables = key_range = None
        if nd:
            row_tables = [
                block_tables[i] for i in range(num_decodes) for _ in range(batch[i].num_new_tokens)
            ]
            decode_tables, key_range = decode_rows(row_tables, positions[:nd], bs, self.device)
        prefills = [
            PrefillChunk(
                query_start=starts[i],
                query_len=s.num_new_tokens,
                context_len=s.request.num_computed_tokens + s.num_new_tokens,
                block_table=torch.tensor(block_tables[i], dtype=torch.int64, device=self.device),
            )
            for i, s in enumerate(batch)
            if i >= num_decodes
        ]
        return AttentionMetadata(
            slot_mapping=torch.from_numpy(slot_mapping).to(self.device),
            num_decode_tokens=nd,
            decode_block_tables=decode_tables,
            decode_key_range=key_range,
            prefills=prefills,
        )

    def _mask_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-mask")
        return self._pool

    def _grammar_masks(self, samplers: list[ScheduledRequest]) -> np.ndarray:
        """[sampled rows, vocab_size] bool: the tokens each row's grammar allows (all tokens for
        requests without one). A verification's row i is the state after its first i drafts,
        which the speculator checked the grammar accepts."""
        rows = sum(len(s.spec_token_ids) + 1 for s in samplers)
        packed = np.full((rows, -(-self.vocab_size // 8)), 255, dtype=np.uint8)
        row = 0
        for s in samplers:
            matcher = s.request.matcher
            if matcher is not None and _grammar_applies(s.request):
                for i, draft in enumerate([*s.spec_token_ids, None]):
                    matcher.fill_next_token_bitmask(packed[row + i])
                    if draft is not None:
                        assert matcher.accept_token(draft)
                matcher.rollback(len(s.spec_token_ids))
            row += len(s.spec_token_ids) + 1
        return np.unpackbits(packed, axis=1, count=self.vocab_size, bitorder="little").view(bool)

    def _sample(
        self,
        samplers: list[ScheduledRequest],
        logits: torch.Tensor,
        result: ExecutorOutput,
        allowed: torch.Tensor | None = None,
    ) -> None:
        """Draw a token at every verified position (one per plain decode), each from the
        position's own noise, and keep the drafts that match (spec/verify.py)."""
        params: list[SamplingParams] = []
        prompts: list[list[int]] = []
        outputs: list[list[int]] = []
        banned: list[list[int]] = []
        # A request with drafts has no per-token sampler state (the speculator saw to it), so
        # its rows may share one state: only bad words and DRY breakers are read from it.
        states: list[SequenceSamplerState | None] = []
        generators: dict[int, torch.Generator] = {}
        for s in samplers:
            r = s.request
            for i in range(len(s.spec_token_ids) + 1):
                if r.seed is not None:
                    seed = position_seed(r.seed, r.num_tokens + i)
                    generator = torch.Generator(device=self.device).manual_seed(seed)
                    generators[len(params)] = generator
                params.append(r.params)
                prompts.append(r.prompt_token_ids)
                # Penalties at row i see the drafts before it as output.
                output = r.output_token_ids
                outputs.append(output + s.spec_token_ids[:i] if i else output)
                banned.append(r.banned_token_ids)  # the speculator keeps rows alike
                states.append(r.sampler_state)
        meta = SamplingMetadata.build(
            params, prompts, outputs, generators, banned, logits.shape[-1], self.device, states
        )
        meta.allowed_token_mask = allowed
        sampled = self.sampler(logits, meta)
        drawn = sampled.token_ids.tolist()
        lps = top_lps = top_ids = None
        if sampled.logprobs is not None:
            assert sampled.top_logprobs is not None and sampled.top_token_ids is not None
            lps = sampled.logprobs.tolist()
            top_lps, top_ids = sampled.top_logprobs.tolist(), sampled.top_token_ids.tolist()
        row = 0
        for s in samplers:
            r, drafts = s.request, s.spec_token_ids
            tokens = accepted_tokens(drawn[row : row + len(drafts) + 1], drafts)
            result.sampled[r.request_id] = tokens
            n = r.params.logprobs
            if n is not None:
                assert lps is not None and top_lps is not None and top_ids is not None
                result.logprobs[r.request_id] = [
                    _logprob_entry(t, lps[row + i], top_ids[row + i][:n], top_lps[row + i][:n])
                    for i, t in enumerate(tokens)
                ]
            row += len(drafts) + 1

    def _prompt_logprobs(
        self, s: ScheduledRequest, hidden: torch.Tensor, row0: int, result: ExecutorOutput
    ) -> None:
        r = s.request
        start, end = r.num_computed_tokens, r.num_computed_tokens + s.num_new_tokens
        # The logits at position p predict prompt token p + 1. Report the prompt positions not
        # reported yet (a recompute after preemption passes over some again) that this chunk
        # reaches; position 0 is predicted by nothing.
        first = max(r.num_prompt_logprobs, start + 1)
        last = min(end, r.num_prompt_tokens - 1)  # the last predicted position
        entries: list[dict[int, float] | None] = [None] if r.num_prompt_logprobs == 0 else []
        if last >= first:
            rows = hidden[row0 + first - 1 - start : row0 + last - start]
            logprobs = self.model.compute_logits(rows).log_softmax(-1)
            targets = torch.tensor(r.prompt_token_ids[first : last + 1], device=self.device)
            target_lps = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
            n = r.params.prompt_logprobs or 0
            top = logprobs.topk(n, dim=-1) if n else None
            for j, token in enumerate(targets.tolist()):
                top_ids = top.indices[j].tolist() if top is not None else []
                top_lps = top.values[j].tolist() if top is not None else []
                entries.append(_logprob_entry(token, target_lps[j], top_ids, top_lps))
        if entries:
            result.prompt_logprobs[r.request_id] = entries

    def _pooled_rows(
        self, s: ScheduledRequest, hidden: torch.Tensor, row0: int, result: ExecutorOutput
    ) -> None:
        """An embedding request's hidden rows that this chunk pools: for mean pooling every
        position not pooled yet (a recompute after preemption passes over some again), for
        last pooling the prompt's last position once the chunk reaches it."""
        r = s.request
        pooling = r.params.pooling
        assert pooling is not None
        start, end = r.num_computed_tokens, r.num_computed_tokens + s.num_new_tokens
        if pooling.reads_every_position:
            first = max(r.num_pooled, start)
        else:
            first = end - 1 if end == r.num_prompt_tokens else end
        if first < end:
            rows = hidden[row0 + first - start : row0 + end - start].float()
            result.pooled[r.request_id] = (rows.sum(0).tolist(), end - first)


def _grammar_applies(request: SequenceView) -> bool:
    state = request.sampler_state
    return request.matcher is not None and (state is None or state.grammar_applies)
