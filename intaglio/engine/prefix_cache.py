"""RadixCache: a tree of full KV blocks keyed by their tokens (SGLang's radix cache, per block).

A path from a root spells a token prefix, one node per block_size tokens, and each node names
the KV block that holds those tokens' keys and values. A request whose tokens walk an existing
path reuses the blocks instead of computing them. Each cache salt has its own root, so tenants
never share KV. Blocks that no request references stay in the tree until memory is needed; then
unreferenced leaves go, least recently used first (a match touches its whole path), so a shared
prefix outlives the suffixes that hang from it.

A salted root exists only while it holds a cached block: it goes with its last child, so there
are never more salted roots than cached blocks, and a root is keyed by the salt's digest, so it
costs the same whatever the salt's length. A stream of unique salts leaves memory flat.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class Node:
    key: tuple[int, ...]  # the block_size token ids this node's block holds
    block_id: int
    parent: Node | None
    depth: int
    children: dict[tuple[int, ...], Node] = field(default_factory=dict)
    last_access: int = 0
    in_tree: bool = True
    salt: bytes | None = None  # a salted root's key in RadixCache._roots


class RadixCache:
    def __init__(self, block_size: int, ref_counts: list[int]) -> None:
        self.block_size = block_size
        self._refs = ref_counts  # the block pool's, read to know what may be evicted
        self._roots: dict[bytes | None, Node] = {None: Node((), -1, None, 0)}
        self._node_of_block: dict[int, Node] = {}
        self._clock = itertools.count(1)
        # Candidate leaves (last_access, -depth, tiebreak, node); stale entries are skipped.
        self._heap: list[tuple[int, int, int, Node]] = []
        self._tiebreak = itertools.count()
        self.num_evictable = 0  # cached blocks no request references

    def __len__(self) -> int:
        return len(self._node_of_block)

    @property
    def num_roots(self) -> int:
        return len(self._roots)

    def root(self, salt: str | None) -> Node:
        """The salt's root, made if new; only insert calls this (it adds a child at once)."""
        key = _salt_key(salt)
        node = self._roots.get(key)
        if node is None:
            node = self._roots[key] = Node((), -1, None, 0, salt=key)
        return node

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._node_of_block

    def match(self, token_ids: Sequence[int], max_blocks: int, salt: str | None) -> list[Node]:
        """The nodes of the longest cached prefix of token_ids, at most max_blocks of them."""
        bs = self.block_size
        node = self._roots.get(_salt_key(salt))
        path: list[Node] = []
        if node is None:
            return path
        for i in range(max_blocks):
            child = node.children.get(tuple(token_ids[i * bs : (i + 1) * bs]))
            if child is None:
                break
            path.append(child)
            node = child
        return path

    def touch(self, path: list[Node]) -> None:
        stamp = next(self._clock)
        for node in path:
            node.last_access = stamp

    def insert(self, parent: Node, key: tuple[int, ...], block_id: int) -> Node | None:
        """Add block_id under parent; None when another block already holds these tokens."""
        if key in parent.children:
            return None
        node = Node(key, block_id, parent, parent.depth + 1, last_access=next(self._clock))
        parent.children[key] = node
        self._node_of_block[block_id] = node
        return node

    def on_unreferenced(self, block_id: int) -> None:
        """The last reference to a cached block went away: it may now be evicted."""
        self.num_evictable += 1
        node = self._node_of_block[block_id]
        if not node.children:
            self._push(node)

    def on_referenced(self, block_id: int) -> None:
        """A cached block with no references was matched again: it may not be evicted."""
        self.num_evictable -= 1

    def evict(self) -> int:
        """Remove the least recently used unreferenced leaf; return its block id."""
        while self._heap:
            stamp, _, _, node = heapq.heappop(self._heap)
            if (
                node.in_tree
                and not node.children
                and self._refs[node.block_id] == 0
                and stamp == node.last_access
            ):
                self._remove(node)
                return node.block_id
        raise RuntimeError("no cached block can be evicted")

    def _remove(self, node: Node) -> None:
        node.in_tree = False
        parent = node.parent
        assert parent is not None
        del parent.children[node.key]
        del self._node_of_block[node.block_id]
        self.num_evictable -= 1
        if parent.children:
            return
        if parent.parent is None:
            if parent.salt is not None:  # an empty salted root goes with its last block
                del self._roots[parent.salt]
        elif self._refs[parent.block_id] == 0:
            self._push(parent)

    def _push(self, node: Node) -> None:
        heapq.heappush(self._heap, (node.last_access, -node.depth, next(self._tiebreak), node))


def _salt_key(salt: str | None) -> bytes | None:
    # surrogatepass: a JSON string may hold lone surrogates, which strict UTF-8 refuses.
    return None if salt is None else hashlib.sha256(salt.encode("utf-8", "surrogatepass")).digest()
