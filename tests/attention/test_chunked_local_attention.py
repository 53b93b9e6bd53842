"""Chunked local attention over the paged cache against a dense brute force.

A query at position p may attend to positions j with j // C == p // C and j <= p. Sequences sit
in shuffled blocks; chunk sizes that do and do not divide the block size are both covered.
With `freed`, the block table entries before each sequence's current chunk point at a block
full of NaN, as they would once a KV manager frees those blocks: the output must not change.
"""

from __future__ import annotations

import pytest
import torch

from intaglio.attention.metadata import AttentionMetadata, PrefillChunk, chunked_local_metadata
from intaglio.attention.torch_backend import TorchAttentionBackend

BLOCK, HEADS, KV_HEADS, DIM = 4, 4, 2, 8


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos, chunk: int | None):
    """q [n, heads, d] at positions q_pos; k, v [ctx, kv_heads, d] of positions 0..ctx-1."""
    key_pos = torch.arange(k.shape[0])
    mask = key_pos[None, :] <= q_pos[:, None]
    if chunk is not None:
        mask &= key_pos[None, :] // chunk == q_pos[:, None] // chunk
    kk = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
    vv = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
    scores = torch.einsum("nhd,khd->hnk", q, kk) * DIM**-0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("hnk,khd->nhd", probs, vv)


@pytest.mark.parametrize(
    "chunk,freed",
    [
        (3, False),
        (4, False),
        (6, False),
        (8, False),
        (None, False),
        (3, True),
        (6, True),
        (8, True),
    ],
)
def test_decodes_and_prefills_match_brute_force(chunk, freed):
    g = torch.Generator().manual_seed(chunk or 0)
    # (cached tokens before this step, new tokens this step): decodes first, then prefills.
    seqs = [(0, 1), (5, 1), (11, 1), (23, 1), (37, 1), (0, 19), (7, 9), (14, 3), (24, 13)]
    num_blocks = sum(-(-(c + n) // BLOCK) for c, n in seqs)
    perm = torch.randperm(num_blocks, generator=g).tolist()
    null_block = num_blocks  # stands for a freed block: reading it poisons the output
    k_cache = torch.zeros(num_blocks + 1, BLOCK, KV_HEADS, DIM)
    k_cache[null_block] = float("nan")
    v_cache = k_cache.clone()
    full_k, full_v, tables = [], [], []
    for cached, new in seqs:
        n_blocks = -(-(cached + new) // BLOCK)
        table = torch.tensor([perm.pop() for _ in range(n_blocks)])
        keys = torch.randn(cached + new, KV_HEADS, DIM, generator=g)
        vals = torch.randn(cached + new, KV_HEADS, DIM, generator=g)
        slots = table[torch.arange(cached) // BLOCK] * BLOCK + torch.arange(cached) % BLOCK
        k_cache.view(-1, KV_HEADS, DIM)[slots] = keys[:cached]
        v_cache.view(-1, KV_HEADS, DIM)[slots] = vals[:cached]
        if freed:  # blocks wholly before the chunk of this step's first query
            table[: (cached - cached % chunk) // BLOCK] = null_block
        full_k.append(keys), full_v.append(vals), tables.append(table)

    q_all, k_new, v_new, slot, pos, prefills = [], [], [], [], [], []
    for i, (cached, new) in enumerate(seqs):
        p = torch.arange(cached, cached + new)
        if new > 1:
            prefills.append(PrefillChunk(len(pos), new, cached + new, tables[i]))
        q_all.append(torch.randn(new, HEADS, DIM, generator=g))
        k_new.append(full_k[i][cached:]), v_new.append(full_v[i][cached:])
        slot.append(tables[i][p // BLOCK] * BLOCK + p % BLOCK)
        pos.extend(p.tolist())
    nd = sum(1 for _, n in seqs if n == 1)
    lens = torch.tensor([c + 1 for c, n in seqs[:nd]])
    width = max(len(t) for t in tables[:nd])
    dec_tables = torch.zeros(nd, width, dtype=torch.int64)
    for row, t in enumerate(tables[:nd]):
        dec_tables[row, : len(t)] = t
    meta = AttentionMetadata(
        slot_mapping=torch.cat(slot),
        num_decode_tokens=nd,
        decode_block_tables=dec_tables,
        decode_key_range=torch.stack((torch.zeros_like(lens), lens), dim=1),
        prefills=prefills,
    )
    positions = torch.tensor(pos)
    if chunk is not None:
        meta = chunked_local_metadata(meta, positions, chunk, BLOCK)
        assert meta.decode_block_tables.shape[1] <= (chunk - 1) // BLOCK + 2
    q = torch.cat(q_all)
    out = TorchAttentionBackend().forward(
        q, torch.cat(k_new), torch.cat(v_new), k_cache, v_cache, meta, DIM**-0.5
    )
    row = 0
    for i, (cached, new) in enumerate(seqs):
        q_pos = torch.arange(cached, cached + new)
        expected = _reference(q_all[i], full_k[i], full_v[i], q_pos, chunk)
        torch.testing.assert_close(out[row : row + new], expected, rtol=1e-5, atol=1e-5)
        row += new
