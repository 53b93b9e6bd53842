"""ChunkedKV: the KV blocks of chunked local attention layers (Llama 4's RoPE layers).

A query at position p on such a layer sees only positions [p - p % C, p], C being the chunk
size, so these layers keep KV only from the chunk of the first token a step computes onward.
They get a pool and tensors of their own (the executor sizes them at about
max_num_seqs x (C + max_num_batched_tokens) tokens), and each request a second block table,
`local_block_ids`, indexed like `block_ids` by position // block_size. Entries before the
current chunk are released and point at block 0, a null block never handed out, so memory for
long contexts grows with the chunk on these layers, not with the context.
"""

from __future__ import annotations

from intaglio.engine.block_pool import BlockPool
from intaglio.engine.request import Request

NULL_BLOCK = 0


class ChunkedKV:
    def __init__(self, num_blocks: int, block_size: int, chunk_size: int) -> None:
        if num_blocks < 2:
            raise ValueError("the chunked-attention KV pool needs at least 2 blocks")
        self.block_size = block_size
        self.chunk_size = chunk_size
        self.pool = BlockPool(num_blocks, block_size, enable_caching=False)
        self.pool.free.remove(NULL_BLOCK)
        self.pool.ref_counts[NULL_BLOCK] = 1  # held for good: never free, never handed out
        self.pending_copies: list[tuple[int, int]] = []

    def _window(self, start: int, end: int) -> tuple[int, int]:
        """Logical blocks [first, last) a step computing positions [start, end) must hold."""
        return (start - start % self.chunk_size) // self.block_size, -(-end // self.block_size)

    def fits(self, request: Request, start: int, end: int) -> bool:
        """Whether the pool has the blocks a step computing [start, end) needs."""
        first, last = self._window(start, end)
        ids = request.local_block_ids
        missing = sum(1 for i in range(first, last) if i >= len(ids) or ids[i] == NULL_BLOCK)
        shared = sum(
            1
            for i in range(start // self.block_size, min(len(ids), last))
            if ids[i] != NULL_BLOCK and self.pool.ref_counts[ids[i]] > 1
        )
        return missing + shared <= len(self.pool.free)

    def allocate(self, request: Request, end: int) -> None:
        """Release blocks before the current chunk, then hold (and own) the window's blocks.

        The caller checked `fits` first."""
        first, last = self._window(request.num_computed_tokens, end)
        ids = request.local_block_ids
        for i in range(min(first, len(ids))):
            if ids[i] != NULL_BLOCK:
                self.pool.decref(ids[i])
                ids[i] = NULL_BLOCK
        ids.extend([NULL_BLOCK] * max(last - len(ids), 0))
        for i in range(first, last):
            if ids[i] == NULL_BLOCK:
                ids[i] = self.pool.take()
            elif i >= request.num_computed_tokens // self.block_size:
                if self.pool.ref_counts[ids[i]] > 1:  # copy on write, as for full layers
                    copy = self.pool.take()
                    self.pending_copies.append((ids[i], copy))
                    self.pool.decref(ids[i])
                    ids[i] = copy

    def fork(self, parent: Request, child: Request, num_blocks: int) -> None:
        child.local_block_ids = parent.local_block_ids[:num_blocks]
        for block in child.local_block_ids:
            if block != NULL_BLOCK:
                self.pool.incref(block)

    def free(self, request: Request) -> None:
        for block in request.local_block_ids:
            if block != NULL_BLOCK:
                self.pool.decref(block)
        request.local_block_ids = []
