"""Scheduler and block manager decisions, checked without a model."""

from __future__ import annotations

import pytest
import torch

from intaglio.config import EngineConfig
from intaglio.engine.block_manager import BlockManager
from intaglio.engine.core import EngineCore
from intaglio.engine.request import Request, RequestStatus
from intaglio.engine.scheduler import Scheduler
from intaglio.sampling.params import SamplingParams
from intaglio.step import ExecutorOutput, SchedulerOutput
from kv_invariants import assert_kv_consistent


def _request(
    rid: str, prompt_len: int, max_tokens: int = 100, prompt: list[int] | None = None
) -> Request:
    """A request whose prompt is unique to its id unless `prompt` is given."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    base = 1000 * (sum(map(ord, rid)) + 1)
    tokens = prompt if prompt is not None else [base + i for i in range(prompt_len)]
    return Request(rid, tokens, params, (), max_tokens)


def _step(sched: Scheduler) -> dict[str, int]:
    """Schedule once, pretend the model ran, sample token 7 where due; return tokens per id."""
    out = sched.schedule()
    sampled = {s.request.request_id: [7] for s in out.scheduled if s.samples}
    plan = {s.request.request_id: s.num_new_tokens for s in out.scheduled}
    sched.update(out, sampled)
    return plan


def test_long_prompt_prefills_in_chunks_beside_decodes():
    bm = BlockManager(num_blocks=64, block_size=4)
    sched = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=10)
    a = _request("a", 3)
    sched.add(a)
    assert _step(sched) == {"a": 3}  # a's prompt fits; it samples its first token
    b = _request("b", 25)
    sched.add(b)
    # a decodes one token per step; b gets the rest of the budget until its prompt is done.
    assert _step(sched) == {"a": 1, "b": 9}
    assert _step(sched) == {"a": 1, "b": 9}
    assert _step(sched) == {"a": 1, "b": 7}
    assert len(b.output_token_ids) == 1 and b.num_computed_tokens == 25
    assert _step(sched) == {"a": 1, "b": 1}
    assert_kv_consistent(bm, [a, b])


def test_max_num_seqs_bounds_running():
    bm = BlockManager(num_blocks=64, block_size=4)
    sched = Scheduler(bm, max_num_seqs=2, max_num_batched_tokens=100)
    for rid in "abc":
        sched.add(_request(rid, 4))
    assert set(_step(sched)) == {"a", "b"}
    assert [r.request_id for r in sched.waiting] == ["c"]


@pytest.mark.parametrize("caching", [False, True])
def test_preemption_frees_newest_and_resumes_it_first(caching: bool):
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=caching)  # 16 slots
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=100)
    a, b = _request("a", 7), _request("b", 7)
    sched.add(a)
    sched.add(b)
    _step(sched)  # a and b: 7 prompt tokens in 2 blocks each; the cache is full
    assert bm.num_free_blocks == 0
    assert _step(sched) == {"a": 1, "b": 1}  # the 8th tokens still fit
    plan = _step(sched)  # a's 9th token needs a third block: b, the newest, is preempted
    assert plan == {"a": 1}
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.block_ids == [] and list(sched.waiting) == [b]
    assert len(b.output_token_ids) == 2  # its sampled tokens are kept and will be recomputed
    assert_kv_consistent(bm, [a, b])
    sched.finish(a, "abort")
    # Prompt + the kept output tokens are recomputed at once; with prefix caching, b's first
    # block (cached, unreferenced, and not evicted since a took b's second one) is reused.
    assert _step(sched) == {"b": 5 if caching else 9}
    assert len(b.output_token_ids) == 3
    assert_kv_consistent(bm, [b])


class _TokenSevenExecutor:
    """The model seam without a model: every request due a token gets token 7."""

    device = torch.device("cpu")
    vocab_size = max_position_embeddings = 1 << 20
    num_local_kv_blocks, attention_chunk_size = 0, None

    def __init__(self, num_kv_blocks: int, block_size: int) -> None:
        self.num_kv_blocks, self.block_size = num_kv_blocks, block_size

    def execute(self, out: SchedulerOutput) -> ExecutorOutput:
        return ExecutorOutput(
            sampled={s.request.request_id: [7] for s in out.scheduled if s.samples}
        )


def test_finish_and_abort_return_every_block():
    """Through the engine core, whose stop check ends requests at max_tokens."""
    config = EngineConfig(max_num_seqs=4, max_num_batched_tokens=100)
    core = EngineCore(config, _TokenSevenExecutor(16, 4), eos_token_ids=())
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    for i in range(3):
        core.add(str(i), [1000 * (i + 1) + j for j in range(5 + i)], params)
    core.step()
    core.abort("0")
    ends, lengths = {}, {}
    while core.has_unfinished():
        for out in core.step():
            if out.finished:
                ends[out.request_id] = out.samples[0].finish_reason
                lengths[out.request_id] = len(out.samples[0].output_token_ids)
    assert ends == {"0": "abort", "1": "length", "2": "length"}
    assert lengths["1"] == lengths["2"] == 3
    assert core.block_manager.num_free_blocks == 16
