"""BlockPool: every KV block's reference count, the free list, and the prefix cache's spares.

A block is in exactly one of three states: referenced by one or more requests (ref count > 0),
cached but unreferenced (kept in the RadixCache, evictable), or free. Taking a block uses the
free list first and evicts the least recently used cached block only when the list is empty.
"""

from __future__ import annotations

from collections import deque

from intaglio.engine.prefix_cache import RadixCache


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block; raise the KV memory budget")
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self.free: deque[int] = deque(range(num_blocks))
        self.cache = RadixCache(block_size, self.ref_counts) if enable_caching else None

    @property
    def num_available(self) -> int:
        """Blocks a request could get now: free ones plus evictable cached ones."""
        return len(self.free) + (self.cache.num_evictable if self.cache else 0)

    def take(self) -> int:
        """One block with a reference count of 1."""
        if self.free:
            block = self.free.popleft()
        elif self.cache is not None and self.cache.num_evictable:
            block = self.cache.evict()
        else:
            raise RuntimeError("out of KV blocks")  # callers check num_available first
        self.ref_counts[block] = 1
        return block

    def incref(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            assert self.cache is not None  # only a cached block is referenced from zero
            self.cache.on_referenced(block)
        self.ref_counts[block] += 1

    def decref(self, block: int) -> None:
        self.ref_counts[block] -= 1
        if self.ref_counts[block] > 0:
            return
        if self.cache is not None and self.cache.is_cached(block):
            self.cache.on_unreferenced(block)
        else:
            self.free.append(block)
