"""The KV block accounting every test of the block manager and scheduler checks."""

from __future__ import annotations

from collections import Counter

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.chunked_kv import NULL_BLOCK
from intaglio.engine.prefix_cache import Node
from intaglio.engine.request import Request


def _tree_nodes(bm: BlockManager) -> list[Node]:
    cache = bm.pool.cache
    if cache is None:
        return []
    nodes, stack = [], list(cache._roots.values())
    while stack:
        node = stack.pop()
        for key, child in node.children.items():
            assert child.key == key and child.parent is node and child.in_tree
            assert len(key) == bm.block_size
            nodes.append(child)
            stack.append(child)
    return nodes


def assert_kv_consistent(bm: BlockManager, requests: list[Request]) -> None:
    """Reference counts equal holders; no block is both free and held or cached; none leaks."""
    pool = bm.pool
    holders = Counter(b for r in requests for b in r.block_ids)
    for r in requests:
        assert len(set(r.block_ids)) == len(r.block_ids), "a request holds a block twice"
        assert [n.block_id for n in r.cache_path] == r.block_ids[: len(r.cache_path)]
        # A cached block holds the request's own tokens (never draft tokens it rejected).
        tokens = [*r.prompt_token_ids, *r.output_token_ids]
        for i, node in enumerate(r.cache_path):
            assert node.key == tuple(tokens[i * bm.block_size : (i + 1) * bm.block_size])
    for block in range(pool.num_blocks):
        assert pool.ref_counts[block] == holders[block], f"block {block}: wrong ref count"
    free = list(pool.free)
    assert len(free) == len(set(free)), "a block is free twice"
    assert not set(free) & set(holders), "a block is both free and held"
    cached = {n.block_id for n in _tree_nodes(bm)}
    assert len(cached) == len(_tree_nodes(bm)), "two tree nodes name one block"
    assert not set(free) & cached, "a block is both free and cached"
    idle_cached = {b for b in cached if pool.ref_counts[b] == 0}
    if pool.cache is not None:
        assert pool.cache.num_evictable == len(idle_cached)
        assert len(pool.cache) == len(cached)
    assert len(free) + len(set(holders) | cached) == pool.num_blocks, "a block leaked"
    assert bm.num_free_blocks == len(free) + len(idle_cached)
    if bm.chunked is not None:
        _assert_chunked_consistent(bm, requests)


def _assert_chunked_consistent(bm: BlockManager, requests: list[Request]) -> None:
    """The chunked-attention pool: exact counts, the null block never free, nothing leaked."""
    chunked = bm.chunked
    assert chunked is not None
    local = chunked.pool
    holders = Counter(b for r in requests for b in r.local_block_ids if b != NULL_BLOCK)
    assert local.ref_counts[NULL_BLOCK] == 1 and NULL_BLOCK not in local.free
    for block in range(1, local.num_blocks):
        assert local.ref_counts[block] == holders[block], f"local block {block}: wrong count"
    assert len(local.free) + len(holders) == local.num_blocks - 1, "a local block leaked"
