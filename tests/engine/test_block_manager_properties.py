"""Property tests of the block pool, radix cache and copy-on-write: random request lifecycles
(admit, grow, speculate, fork, preempt, finish) keep every reference count exact, never let a
block be both free and held, leak nothing, and evict only unreferenced leaves in LRU order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from intaglio.engine.block_manager import BlockManager
from intaglio.engine.prefix_cache import Node
from intaglio.engine.request import Request
from intaglio.sampling.params import SamplingParams
from kv_invariants import assert_kv_consistent

BS = 2
NUM_BLOCKS = 12
# A two-letter alphabet makes shared prefixes, and so cache hits, common.
tokens = st.lists(st.integers(0, 1), min_size=1, max_size=9)


def _request(prompt: list[int], salt: str | None, rid: int) -> Request:
    return Request(str(rid), prompt, SamplingParams(max_tokens=64), (), 64, cache_salt=salt)


class BlockManagerMachine(RuleBasedStateMachine):
    chunk_size: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(NUM_BLOCKS, BS, True, NUM_BLOCKS, self.chunk_size)
        self.running: list[Request] = []
        self.next_id = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    @rule(prompt=tokens, salt=st.sampled_from([None, "x"]), budget=st.integers(1, 12))
    def admit(self, prompt: list[int], salt: str | None, budget: int) -> None:
        request = _request(prompt, salt, self._new_id())
        num_new = self.bm.admit(request, budget)
        if num_new is None:
            assert request.block_ids == [] and request.num_computed_tokens == 0
            return
        assert request.num_computed_tokens % BS == 0
        assert request.num_computed_tokens + num_new <= request.num_tokens
        request.num_computed_tokens += num_new
        self.running.append(request)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), new_tokens=tokens)
    def grow(self, data: st.DataObject, new_tokens: list[int]) -> None:
        """A step: the request computes what it has, or samples new tokens and computes them."""
        request = data.draw(st.sampled_from(self.running))
        if request.num_computed_tokens == request.num_tokens:
            request.output_token_ids.extend(new_tokens)
        num_new = request.num_tokens - request.num_computed_tokens
        before = list(request.block_ids)
        if not self.bm.allocate(request, num_new):
            assert request.block_ids == before  # a failed allocation changes nothing
            return
        copies, _ = self.bm.take_copies()
        for src, dst in copies:  # every copy replaces a block that was shared
            assert src in before and dst in request.block_ids and self.bm.pool.ref_counts[src] >= 1
        request.num_computed_tokens += num_new

    @precondition(lambda self: self.running)
    @rule(data=st.data(), drafts=tokens, num_accepted=st.integers(0, 9))
    def speculate(self, data: st.DataObject, drafts: list[int], num_accepted: int) -> None:
        """A verification step: the last token and its drafts get KV, the rejected drafts roll
        back (spec decoding), and blocks held only for them return."""
        request = data.draw(st.sampled_from(self.running))
        if request.num_computed_tokens == request.num_tokens:
            request.output_token_ids.append(0)  # the token the last step drew
        if request.num_tokens - request.num_computed_tokens != 1:
            return  # mid-prefill: no drafts
        before = list(request.block_ids)
        if not self.bm.allocate(request, 1 + len(drafts)):
            assert request.block_ids == before
            return
        self.bm.take_copies()
        num_accepted = min(num_accepted, len(drafts))
        request.output_token_ids.extend([*drafts[:num_accepted], 1])
        request.num_computed_tokens += 1 + num_accepted
        self.bm.trim(request)
        held = len(request.block_ids)
        assert self.bm.blocks_needed(request.num_computed_tokens) <= held
        assert held <= self.bm.blocks_needed(request.num_tokens)

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.running))
        child = _request(parent.prompt_token_ids, parent.cache_salt, self._new_id())
        child.output_token_ids = list(parent.output_token_ids)
        child.num_computed_tokens = data.draw(st.integers(0, parent.num_computed_tokens))
        child.num_computed_tokens = min(child.num_computed_tokens, child.num_tokens - 1)
        self.bm.fork(parent, child)
        self.running.append(child)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), preempt=st.booleans())
    def release(self, data: st.DataObject, preempt: bool) -> None:
        """Finish or abort a request, or preempt it and admit it again later."""
        request = data.draw(st.sampled_from(self.running))
        self.running.remove(request)
        self.bm.free(request)
        if preempt:
            request.num_computed_tokens = 0
            num_new = self.bm.admit(request, 1000)
            if num_new is not None:
                request.num_computed_tokens += num_new
                self.running.append(request)

    @invariant()
    def consistent(self) -> None:
        assert_kv_consistent(self.bm, self.running)

    def teardown(self) -> None:
        for request in self.running:
            self.bm.free(request)
        assert_kv_consistent(self.bm, [])
        assert self.bm.num_free_blocks == NUM_BLOCKS
        if self.bm.chunked is not None:
            assert len(self.bm.chunked.pool.free) == NUM_BLOCKS - 1  # all but the null block


class ChunkedBlockManagerMachine(BlockManagerMachine):
    """The same lifecycles for a model with chunked local attention (chunks of 4 tokens)."""

    chunk_size = 4


_settings = settings(max_examples=150, stateful_step_count=40)
BlockManagerMachine.TestCase.settings = _settings
ChunkedBlockManagerMachine.TestCase.settings = _settings
TestBlockManager = BlockManagerMachine.TestCase
TestChunkedBlockManager = ChunkedBlockManagerMachine.TestCase


def _leaves(bm: BlockManager) -> list[Node]:
    cache = bm.pool.cache
    assert cache is not None
    out, stack = [], list(cache._roots.values())
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        if not node.children and node.parent is not None:
            out.append(node)
    return out


@settings(max_examples=100)
@given(prompts=st.lists(tokens, min_size=1, max_size=8), order=st.randoms())
def test_eviction_takes_the_least_recently_used_unreferenced_leaf(prompts, order):
    bm = BlockManager(NUM_BLOCKS * 4, BS)
    requests = []
    for i, prompt in enumerate(prompts):
        request = _request(prompt, None, i)
        num_new = bm.admit(request, 1000)
        assert num_new is not None
        request.num_computed_tokens += num_new
        requests.append(request)
    order.shuffle(requests)
    held = requests[: len(requests) // 2]  # these keep their blocks: never evicted
    for request in requests[len(requests) // 2 :]:
        bm.free(request)
    pool = bm.pool
    while pool.free:  # use up the free list so that every further take evicts
        pool.take()
    while pool.cache.num_evictable:
        candidates = [n for n in _leaves(bm) if pool.ref_counts[n.block_id] == 0]
        oldest = min(n.last_access for n in candidates)
        block = pool.take()
        victim = next(n for n in candidates if n.block_id == block)
        assert victim.last_access == oldest and not victim.in_tree
    for request in held:
        assert all(pool.ref_counts[b] >= 1 for b in request.block_ids)
