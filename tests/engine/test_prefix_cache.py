"""Prefix caching and copy-on-write in the block manager: exact block ids and reference counts."""

from __future__ import annotations

import tracemalloc

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.request import Request
from intaglio.sampling.params import SamplingParams
from kv_invariants import assert_kv_consistent

BS = 4


def _request(tokens: list[int], salt: str | None = None, rid: str = "r") -> Request:
    params = SamplingParams(temperature=0.0, max_tokens=8)
    return Request(rid, tokens, params, (), 8, cache_salt=salt)


def _run_prompt(bm: BlockManager, request: Request) -> int:
    """Admit a request and mark its whole prompt computed; return the cached tokens it got."""
    num_new = bm.admit(request, token_budget=1000)
    assert num_new is not None
    cached = request.num_computed_tokens
    request.num_computed_tokens += num_new
    return cached


def test_shared_prefix_reuses_exact_blocks_and_counts_refs():
    bm = BlockManager(num_blocks=16, block_size=BS)
    a = _request(list(range(10)), rid="a")  # blocks: [0-3] [4-7] [8,9]
    assert _run_prompt(bm, a) == 0
    b = _request(list(range(8)) + [50, 51, 52], rid="b")
    assert _run_prompt(bm, b) == 8  # both full blocks of a
    assert b.block_ids[:2] == a.block_ids[:2] and b.block_ids[2] != a.block_ids[2]
    assert [bm.pool.ref_counts[x] for x in a.block_ids] == [2, 2, 1]
    assert (bm.num_queried_tokens, bm.num_hit_tokens) == (21, 8)
    assert_kv_consistent(bm, [a, b])


def test_last_token_is_always_computed():
    bm = BlockManager(num_blocks=16, block_size=BS)
    a = _request(list(range(8)), rid="a")
    _run_prompt(bm, a)
    b = _request(list(range(8)), rid="b")  # the same 8 tokens: only the first block is a hit
    assert _run_prompt(bm, b) == 4
    assert_kv_consistent(bm, [a, b])


def test_cache_salt_keeps_tenants_apart():
    bm = BlockManager(num_blocks=16, block_size=BS)
    _run_prompt(bm, _request(list(range(9)), salt="tenant-a", rid="a"))
    assert _run_prompt(bm, _request(list(range(9)), salt="tenant-b", rid="b")) == 0
    assert _run_prompt(bm, _request(list(range(9)), salt=None, rid="c")) == 0
    assert _run_prompt(bm, _request(list(range(9)), salt="tenant-a", rid="d")) == 8


def test_freed_blocks_stay_cached_until_evicted_lru_leaf_first():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a = _request(list(range(9)), rid="a")  # 3 blocks, 2 of them full and cached
    _run_prompt(bm, a)
    b = _request(list(range(100, 109)), rid="b")
    _run_prompt(bm, b)
    a_blocks, b_blocks = list(a.block_ids), list(b.block_ids)
    bm.free(a)  # a first: its cached blocks are the least recently used
    bm.free(b)
    assert bm.num_free_blocks == 6 and len(bm.pool.free) == 2  # the two partial blocks
    assert_kv_consistent(bm, [])
    # A new 12-token request needs 3 blocks: the 2 free ones, then a's leaf (block 2 of a).
    c = _request(list(range(200, 212)), rid="c")
    _run_prompt(bm, c)
    assert a_blocks[1] in c.block_ids and a_blocks[0] not in c.block_ids
    # a's first block survives (a parent outlives its leaf); b's blocks are untouched.
    cache = bm.pool.cache
    assert [n.block_id for n in cache.match(list(range(8)), 2, None)] == a_blocks[:1]
    assert [n.block_id for n in cache.match(list(range(100, 108)), 2, None)] == b_blocks[:2]
    assert_kv_consistent(bm, [c])


def test_admit_changes_nothing_when_blocks_run_short():
    bm = BlockManager(num_blocks=3, block_size=BS)
    a = _request(list(range(9)), rid="a")
    _run_prompt(bm, a)
    b = _request(list(range(8)) + list(range(60, 70)), rid="b")  # needs 3 more blocks
    assert bm.admit(b, token_budget=1000) is None
    assert b.block_ids == [] and b.num_computed_tokens == 0
    assert_kv_consistent(bm, [a])


def test_fork_shares_blocks_and_copies_on_first_write():
    bm = BlockManager(num_blocks=16, block_size=BS)
    parent = _request(list(range(6)), rid="p")  # blocks [0-3] [4,5]
    _run_prompt(bm, parent)
    child = _request(list(range(6)), rid="c")
    child.num_computed_tokens = 5  # recompute the last prompt token, as n > 1 siblings do
    bm.fork(parent, child)
    assert child.block_ids == parent.block_ids
    assert [bm.pool.ref_counts[b] for b in parent.block_ids] == [2, 2]
    assert bm.allocate(child, 1)  # writes position 5, in the shared partial block
    assert child.block_ids[0] == parent.block_ids[0]
    assert child.block_ids[1] != parent.block_ids[1]
    assert bm.take_copies() == ([(parent.block_ids[1], child.block_ids[1])], [])
    assert [bm.pool.ref_counts[b] for b in parent.block_ids] == [2, 1]
    child.num_computed_tokens = 6
    parent.output_token_ids.append(7)
    assert bm.allocate(parent, 1)  # the parent's block is its own again: no copy
    assert bm.take_copies() == ([], [])
    assert_kv_consistent(bm, [parent, child])
    bm.free(parent)
    bm.free(child)
    assert bm.num_free_blocks == 16
    assert_kv_consistent(bm, [])


def test_memory_stays_flat_under_a_stream_of_unique_salts():
    """Every request with a new salt (as a per-user salt makes them) caches blocks and leaves;
    roots go with their last block, so neither roots nor memory grow with the salts seen."""
    bm = BlockManager(num_blocks=8, block_size=BS)
    cache = bm.pool.cache
    assert cache is not None

    def serve(i: int) -> None:
        salt = f"user-{i}-" + "x" * 100_000  # long salts: a root must not keep one alive
        request = _request(list(range(9)), salt=salt, rid=f"r{i}")
        assert _run_prompt(bm, request) == 0  # another tenant's blocks are never a hit
        bm.allocate(request, 0)
        bm.free(request)

    for i in range(100):
        serve(i)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(100, 1100):
        serve(i)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert cache.num_roots <= bm.num_blocks + 1  # one unsalted root, the rest hold a block
    assert grown < 200_000, grown  # 1000 salts of 100 kB each: 100 MB if any were kept
    assert_kv_consistent(bm, [])
