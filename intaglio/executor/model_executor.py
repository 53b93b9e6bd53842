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

from intaglio.attention.metadata import AttentionMetadata, PrefillChunk
from intaglio.config import EngineConfig
from intaglio.model.kv_layout import split_kv_blocks
from intaglio.model.loader import load_model
from intaglio.ops.cpu_kernels import cpu_kernels
from intaglio.ops.linear import HALF_DTYPES, cache_fp32_weights
from intaglio.sampling.sampler import Sampler, SamplingMetadata
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
        if self.model.compute_dtype == torch.float32 and self.model.cfg.dtype in HALF_DTYPES:
            cached = cache_fp32_weights(self.model, int(config.fp32_weight_cache_gib * 2**30))
            logger.info("fp32 copies of half weights for batched matmuls: %.2f GiB", cached / 2**30)
        cfg = self.model.cfg
        self.block_size = config.block_size
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
        logger.info(
            "KV cache: %d blocks of %d tokens (+%d for chunked-attention layers), %.2f GiB",
            self.num_kv_blocks,
            config.block_size,
            self.num_local_kv_blocks,
            nbytes / 2**30,
        )

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput[SequenceView]) -> ExecutorOutput:
        self._copy_blocks(out.block_copies, chunked=False)
        self._copy_blocks(out.local_block_copies, chunked=True)
        batch = sorted(out.scheduled, key=lambda s: s.num_new_tokens != 1)  # decodes first
        input_ids, positions, meta, local_meta, starts = self._prepare(batch)
        # Grammar masks are filled on a worker thread while the forward pass runs (torch
        # releases the GIL inside its kernels).
        constrained = [s.request for s in batch if s.samples and s.request.matcher is not None]
        masks = self._mask_pool().submit(self._grammar_masks, constrained) if constrained else None
        hidden = self.model(input_ids, positions, self.kv_caches, meta, local_meta)

        # Rows whose logits we need: each sampling request's last token, plus prompt positions
        # of requests asking for prompt logprobs.
        sample_rows = [starts[i] + s.num_new_tokens - 1 for i, s in enumerate(batch) if s.samples]
        samplers = [s.request for s in batch if s.samples]
        result = ExecutorOutput()
        if samplers:
            logits = self.model.compute_logits(hidden[sample_rows])
            allowed = None
            if masks is not None:
                allowed = self._allowed_mask(samplers, constrained, masks.result())
            self._sample(samplers, logits, result, allowed)
        for i, s in enumerate(batch):
            if s.request.wants_prompt_logprobs:
                self._prompt_logprobs(s, hidden, starts[i], result)
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

        nd = sum(1 for s in batch if s.num_new_tokens == 1)  # decodes come first
        decode_tables = key_range = None
        if nd:
            lens = np.array([s.request.num_computed_tokens + 1 for s in batch[:nd]], dtype=np.int64)
            max_len = int(lens.max())
            tables = np.zeros((nd, -(-max_len // bs)), dtype=np.int64)
            for row, table in enumerate(block_tables[:nd]):
                blocks = table[: tables.shape[1]]
                tables[row, : len(blocks)] = blocks
            decode_tables = torch.from_numpy(tables).to(self.device)
            ranges = np.stack((np.zeros_like(lens), lens), axis=1)
            key_range = torch.from_numpy(ranges).to(self.device)
        prefills = [
            PrefillChunk(
                query_start=starts[i],
                query_len=s.num_new_tokens,
                context_len=s.request.num_computed_tokens + s.num_new_tokens,
                block_table=torch.tensor(block_tables[i], dtype=torch.int64, device=self.device),
            )
            for i, s in enumerate(batch)
            if i >= nd
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

    def _grammar_masks(self, requests: list[SequenceView]) -> np.ndarray:
        """[len(requests), vocab_size] bool: the tokens each request's grammar allows next."""
        packed = np.zeros((len(requests), -(-self.vocab_size // 8)), dtype=np.uint8)
        for row, r in enumerate(requests):
            assert r.matcher is not None  # only constrained requests come here
            r.matcher.fill_next_token_bitmask(packed[row])
        return np.unpackbits(packed, axis=1, count=self.vocab_size, bitorder="little").view(bool)

    def _allowed_mask(
        self, samplers: list[SequenceView], constrained: list[SequenceView], rows: np.ndarray
    ) -> torch.Tensor:
        allowed = np.ones((len(samplers), self.vocab_size), dtype=bool)
        index = {id(r): i for i, r in enumerate(constrained)}
        for i, r in enumerate(samplers):
            if id(r) in index:
                allowed[i] = rows[index[id(r)]]
        return torch.from_numpy(allowed).to(self.device)

    def _sample(
        self,
        requests: list[SequenceView],
        logits: torch.Tensor,
        result: ExecutorOutput,
        allowed: torch.Tensor | None = None,
    ) -> None:
        meta = SamplingMetadata.build(
            [r.params for r in requests],
            [r.prompt_token_ids for r in requests],
            [r.output_token_ids for r in requests],
            {i: r.generator for i, r in enumerate(requests) if r.generator is not None},
            [r.banned_token_ids for r in requests],
            logits.shape[-1],
            self.device,
            [r.sampler_state for r in requests],
        )
        meta.allowed_token_mask = allowed
        sampled = self.sampler(logits, meta)
        token_ids = sampled.token_ids.tolist()
        for i, r in enumerate(requests):
            result.sampled[r.request_id] = token_ids[i]
        if sampled.logprobs is None:
            return
        assert sampled.top_logprobs is not None and sampled.top_token_ids is not None
        lps = sampled.logprobs.tolist()
        top_lps, top_ids = sampled.top_logprobs.tolist(), sampled.top_token_ids.tolist()
        for i, r in enumerate(requests):
            n = r.params.logprobs
            if n is not None:
                result.logprobs[r.request_id] = _logprob_entry(
                    token_ids[i], lps[i], top_ids[i][:n], top_lps[i][:n]
                )

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
