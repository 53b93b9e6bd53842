"""Chunked local attention layers keep only their chunk's KV, and the KV manager knows it."""

from __future__ import annotations

import math

from checkpoints import LLAMA4_SCOUT_TEXT
from intaglio import LLM, SamplingParams
from intaglio.model.config import ModelConfig
from intaglio.model.kv_layout import split_kv_blocks

CHUNK, BS, BUDGET = 8, 4, 16  # the tiny llama4 checkpoint attends in chunks of 8


def test_long_generation_holds_only_the_current_chunk(checkpoint):
    llm = LLM(
        str(checkpoint("llama4")), dtype="float32", block_size=BS, max_num_batched_tokens=BUDGET
    )
    engine = llm.engine
    bm = engine.block_manager
    assert bm.chunked is not None and bm.chunked.chunk_size == CHUNK
    engine.add_request("r", list(range(3, 33)), SamplingParams(max_tokens=90, ignore_eos=True))
    most_local, most_full = 0, 0
    while engine.has_unfinished():
        engine.step()
        for r in engine.scheduler.running:
            held = [b for b in r.local_block_ids if b != 0]
            most_local = max(most_local, len(held))
            most_full = max(most_full, len(r.block_ids))
            # Every block the current chunk needs is held; none from before it.
            first = (r.num_computed_tokens - r.num_computed_tokens % CHUNK) // BS
            assert all(b != 0 for b in r.local_block_ids[first:])
    # 120 tokens: the full-attention layers hold 30 blocks; the chunked ones never more than
    # a chunk plus one step's tokens.
    assert most_full == 30
    assert most_local <= math.ceil((CHUNK + BUDGET) / BS) + 1
    local = bm.chunked.pool
    assert len(local.free) == local.num_blocks - 1  # everything back but the null block


def _scout(**overrides) -> ModelConfig:
    import transformers as tf

    text = {**LLAMA4_SCOUT_TEXT, **overrides}
    hf = tf.Llama4TextConfig(**text, architectures=["Llama4ForCausalLM"]).to_dict()
    return ModelConfig.from_hf(hf, "bfloat16")


def test_plan_gives_chunked_layers_a_pool_sized_by_the_chunk():
    cfg = _scout()
    block_bytes = 2 * 16 * cfg.kv_size * 2  # bf16 K and V of a 16-token block, one layer
    full, local, nbytes = split_kv_blocks(cfg, 64 * 2**30, block_bytes, 16, 8, 8192)
    per_seq = math.ceil((8192 + 8192) / 16) + 1
    assert local == 8 * per_seq + 1
    assert nbytes <= 64 * 2**30
    # 12 NoPE layers hold the context, 36 chunked layers only their windows: after the
    # windows' share, the same budget holds 2.87x the context tokens it would if every layer
    # kept the whole context (4x at most).
    uniform = 64 * 2**30 // (2 * 48 * 16 * 8 * 128 * 2)
    assert 2.8 * uniform < full < 4 * uniform
    # Without chunked layers nothing changes.
    plain = _scout(attention_chunk_size=None)
    assert split_kv_blocks(plain, 64 * 2**30, block_bytes, 16, 8, 8192)[1] == 0
