"""BlockManager: each request's KV blocks: prefix-cache hits, growth, copy-on-write, forks.

Blocks are shared in two ways. Prefix caching: a new request whose tokens start with full blocks
already in the RadixCache takes references to them and starts with num_computed_tokens past
them. Forks: a child request takes references to its parent's blocks. A shared block is never
written: the first time a request would write into one, it gets a private copy
(`pending_copies`, which the executor performs before the step's forward pass).
"""

from __future__ import annotations

import math

from intaglio.engine.block_pool import BlockPool
from intaglio.engine.chunked_kv import ChunkedKV
from intaglio.engine.prefix_cache import Node
from intaglio.engine.request import Request
from intaglio.step import token_slice


class BlockManager:
    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        num_local_blocks: int = 0,
        attention_chunk_size: int | None = None,
    ):
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, block_size, enable_prefix_caching)
        # Models with chunked local attention keep those layers' KV apart (chunked_kv.py).
        self.chunked = (
            ChunkedKV(num_local_blocks, block_size, attention_chunk_size)
            if attention_chunk_size is not None
            else None
        )
        # A prefix hit must end on a chunk boundary there: the chunked layers keep no KV of
        # earlier chunks, and a hit starts a new chunk with nothing to recompute.
        self._hit_granularity = (  # in blocks
            1
            if attention_chunk_size is None
            else math.lcm(attention_chunk_size, block_size) // block_size
        )
        self.pending_copies: list[tuple[int, int]] = []  # (source block, private copy)
        # Prompt tokens looked up in the prefix cache, and those found, at admission.
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0
        self.num_copied_blocks = 0  # copy-on-write copies made so far

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        """Blocks available to requests: free ones plus cached ones nobody references."""
        return self.pool.num_available

    @property
    def usage(self) -> float:
        usage = 1.0 - self.num_free_blocks / self.num_blocks
        if self.chunked is not None:
            local = self.chunked.pool
            usage = max(usage, 1.0 - len(local.free) / (local.num_blocks - 1))
        return usage

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def cached_prefix(self, request: Request) -> list[Node]:
        """Cache nodes of the request's longest cached prefix (its last token is never a hit)."""
        cache = self.pool.cache
        if cache is None or request.reads_every_position:
            return []
        max_blocks = (request.num_tokens - 1) // self.block_size
        tokens = token_slice(request, 0, max_blocks * self.block_size)
        path = cache.match(tokens, max_blocks, request.cache_salt)
        return path[: len(path) - len(path) % self._hit_granularity]

    def _first_chunk(self, request: Request, token_budget: int) -> tuple[list[Node], int, int]:
        """(cached prefix nodes, tokens of the first chunk, new blocks they need together)."""
        path = self.cached_prefix(request)
        num_cached = len(path) * self.block_size
        num_new = min(request.num_tokens - num_cached, token_budget)
        return path, num_new, self.blocks_needed(num_cached + num_new) - len(path)

    def blocks_to_admit(self, request: Request, token_budget: int) -> int:
        """New blocks a request without KV needs for its cached prefix plus its first chunk."""
        return self._first_chunk(request, token_budget)[2]

    def admit(self, request: Request, token_budget: int) -> int | None:
        """Give a request without KV its cached prefix and blocks for its first chunk.

        Returns the chunk's token count, or None (and changes nothing) when blocks run short.
        """
        assert not request.block_ids and request.num_computed_tokens == 0
        path, num_new, needed = self._first_chunk(request, token_budget)
        num_cached = len(path) * self.block_size
        # Cached blocks nobody references count as available until this request takes them.
        reclaimed = sum(1 for node in path if self.pool.ref_counts[node.block_id] == 0)
        if needed > self.pool.num_available - reclaimed:
            return None
        if self.chunked and not self.chunked.fits(request, num_cached, num_cached + num_new):
            return None
        if self.pool.cache is not None:
            self.pool.cache.touch(path)
        for node in path:
            self.pool.incref(node.block_id)
        request.block_ids = [node.block_id for node in path]
        request.cache_path = path
        request.num_computed_tokens = num_cached
        self.num_queried_tokens += request.num_tokens
        self.num_hit_tokens += num_cached
        assert self.allocate(request, num_new)
        return num_new

    def allocate(self, request: Request, num_new_tokens: int) -> bool:
        """Make the request's blocks ready for num_new_tokens more; False if out of blocks."""
        start = request.num_computed_tokens
        end = start + num_new_tokens
        ids = request.block_ids
        needed = self.blocks_needed(end)
        shared = [
            i
            for i in range(start // self.block_size, min(len(ids), needed))
            if self.pool.ref_counts[ids[i]] > 1
        ]
        extra = max(needed - len(ids), 0)
        if extra + len(shared) > self.pool.num_available:
            return False
        if self.chunked is not None:
            if not self.chunked.fits(request, start, end):
                return False
            self.chunked.allocate(request, end)
        for i in shared:  # copy on write: another request still reads this block
            copy = self.pool.take()
            self.pending_copies.append((ids[i], copy))
            self.num_copied_blocks += 1
            self.pool.decref(ids[i])
            ids[i] = copy
        for _ in range(extra):
            ids.append(self.pool.take())
        # Draft tokens (speculative decoding) may be rejected: only known tokens are cached.
        self._cache_full_blocks(request, min(end, request.num_tokens))
        return True

    def trim(self, request: Request) -> None:
        """Return blocks wholly past the request's tokens (held for drafts it rejected)."""
        keep = self.blocks_needed(request.num_tokens)
        while len(request.block_ids) > keep:
            self.pool.decref(request.block_ids.pop())

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        """Put the request's blocks that num_tokens fills into the prefix cache.

        They enter the cache when scheduled: a request admitted later in the same step may
        already reuse them, because each layer writes the step's K/V before any attention reads.
        """
        cache = self.pool.cache
        bs = self.block_size
        first, full = len(request.cache_path), num_tokens // bs
        if cache is None or first >= full:
            return
        parent = request.cache_path[-1] if request.cache_path else cache.root(request.cache_salt)
        tokens = token_slice(request, first * bs, full * bs)
        for i in range(first, full):
            key = tuple(tokens[(i - first) * bs : (i - first + 1) * bs])
            node = cache.insert(parent, key, request.block_ids[i])
            if node is None:
                # Another request cached these tokens first; this copy stays private, and so
                # do the blocks after it (the cache path must hold only this request's blocks).
                return
            request.cache_path.append(node)
            parent = node

    def fork(self, parent: Request, child: Request) -> None:
        """Share the parent's blocks with a child up to child.num_computed_tokens."""
        assert not child.block_ids and child.num_computed_tokens <= parent.num_computed_tokens
        shared = parent.block_ids[: self.blocks_needed(child.num_computed_tokens)]
        for block in shared:
            self.pool.incref(block)
        child.block_ids = list(shared)
        child.cache_path = parent.cache_path[: child.num_computed_tokens // self.block_size]
        if self.chunked is not None:
            self.chunked.fork(parent, child, len(shared))

    def free(self, request: Request) -> None:
        for block in reversed(request.block_ids):  # leaves first, so they are evicted first
            self.pool.decref(block)
        request.block_ids = []
        request.cache_path = []
        if self.chunked is not None:
            self.chunked.free(request)

    def take_copies(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Copy-on-write copies to make before the step: (full layers', chunked layers')."""
        copies, self.pending_copies = self.pending_copies, []
        if self.chunked is None:
            return copies, []
        local, self.chunked.pending_copies = self.chunked.pending_copies, []
        return copies, local
