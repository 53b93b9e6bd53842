"""Per-sequence sampler state end to end: Mirostat's mu and DRY's history survive preemption
(the tokens equal an uninterrupted run with the same seeds) and a fork continues from its
parent's state."""

from __future__ import annotations

import torch

from intaglio import LLM, SamplingParams
from intaglio.engine.outputs import RequestOutput

STATEFUL = dict(temperature=0.9, mirostat_tau=3.0, mirostat_eta=0.3, dry_multiplier=0.8)


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(11)
    return [torch.randint(3, 320, (n,), generator=g).tolist() for n in (9, 17, 5, 12, 23, 7)]


def _params(i: int) -> SamplingParams:
    # dry_allowed_length 1 and a short max_tokens keep the penalty active in a short run.
    return SamplingParams(
        **STATEFUL, seed=100 + i, max_tokens=24, ignore_eos=True, dry_allowed_length=1
    )


def _run(llm: LLM) -> list[list[int]]:
    engine = llm.engine
    for i, prompt in enumerate(_prompts()):
        engine.add_request(str(i), prompt, _params(i))
    outs: dict[str, RequestOutput] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                outs[out.request_id] = out
    return [outs[str(i)].outputs[0].token_ids for i in range(len(_prompts()))]


def test_preemption_keeps_mirostat_and_dry_state(checkpoint):
    path = str(checkpoint("llama"))
    roomy = LLM(path, dtype="float32", block_size=4)
    tight = LLM(path, dtype="float32", block_size=4, num_kv_blocks=14)
    expected = _run(roomy)
    assert _run(tight) == expected
    assert tight.engine.scheduler.num_preemptions > 0
    assert roomy.engine.scheduler.num_preemptions == 0


def test_a_fork_continues_from_its_parents_mirostat_state(checkpoint):
    llm = LLM(str(checkpoint("llama")), dtype="float32", block_size=4)
    engine = llm.engine
    engine.add_request("parent", _prompts()[1], _params(0))
    engine.step()
    parent = engine.scheduler.running[0]
    while len(parent.output_token_ids) < 5:
        engine.step()
    assert parent.sampler_state is not None
    mu = parent.sampler_state.mirostat_mu
    assert mu != 2 * STATEFUL["mirostat_tau"]  # it moved with each token
    engine.fork("parent", "child", _params(1))
    child = next(r for r in engine.scheduler.running if r.request_id.startswith("child"))
    assert child.sampler_state is not None and child.sampler_state is not parent.sampler_state
    assert child.sampler_state.mirostat_mu == mu
    assert child.sampler_state.dry_breakers == parent.sampler_state.dry_breakers
