"""BlockManager: hands out fixed-size KV cache blocks to requests and takes them back."""

from __future__ import annotations

from collections import deque

from intaglio.engine.request import Request


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block; raise the KV memory budget")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free_block_ids: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, request: Request, num_new_tokens: int) -> bool:
        """Grow the request's block table to hold num_new_tokens more; False if out of blocks."""
        needed = self.blocks_needed(request.num_computed_tokens + num_new_tokens)
        extra = needed - len(request.block_ids)
        if extra > len(self.free_block_ids):
            return False
        for _ in range(max(extra, 0)):
            request.block_ids.append(self.free_block_ids.popleft())
        return True

    def free(self, request: Request) -> None:
        self.free_block_ids.extend(request.block_ids)
        request.block_ids = []
