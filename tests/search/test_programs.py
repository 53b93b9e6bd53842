"""Search programs on the engine: KV sharing, pruning, budgets, and each method on a toy."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intaglio import LLM, SamplingParams
from intaglio.search import (
    Budget,
    best_of_n,
    mcts,
    mean_logprob,
    rebase,
    run_programs,
    self_consistency,
    step_beam_search,
    verifier,
)
from intaglio.search.self_consistency import is_decided, leader, tally
from intaglio.search.step_search import allocate

BLOCK = 4
PROMPT = list(range(5, 75))  # 70 tokens: 17 full blocks and a partial one


@pytest.fixture(scope="module")
def llm(checkpoint):
    return LLM(str(checkpoint("llama")), dtype="float32", block_size=BLOCK, num_kv_blocks=600)


def _free_all(llm) -> bool:
    return llm.engine.core.block_manager.num_free_blocks == llm.engine.executor.num_kv_blocks


def test_forks_hold_the_prompt_once_exactly(llm):
    """N samples of one prompt: the prompt's full blocks once, then each sample's own blocks."""
    engine, n, steps = llm.engine, 6, 5
    params = SamplingParams(n=n, temperature=1.0, seed=0, max_tokens=20, ignore_eos=True)
    engine.add_request("shared", PROMPT, params)
    while not all(len(r.output_token_ids) >= steps for r in engine.core._groups["shared"].children):
        engine.step()
    computed = len(PROMPT) + steps - 1  # the newest token's K/V is written next step
    full = len(PROMPT) // BLOCK
    own = -(-(computed - full * BLOCK) // BLOCK)
    assert len(engine.core.kv_blocks("shared")) == full + n * own
    independent = n * -(-computed // BLOCK)
    assert len(engine.core.kv_blocks("shared")) <= independent / 3
    engine.abort("shared")
    assert _free_all(llm)  # pruning returns every block at once, before any further step
    while engine.has_unfinished():
        engine.step()


def test_program_peak_blocks_a_third_of_independent_requests(llm):
    n = 8
    sampling = dict(temperature=1.0, seed=3, max_tokens=6, ignore_eos=True)

    async def forked(s):
        return await s.gen_all(s.fork(s.root(PROMPT), n), **sampling)

    async def independent(s):
        return await s.gen_all([s.root(PROMPT)] * n, **sampling)

    shared = run_programs(llm.engine, [forked])[0]
    # Without the prefix cache the independent requests share nothing.
    alone = LLM(
        llm.model_path, dtype="float32", block_size=BLOCK, num_kv_blocks=600, prefix_caching=False
    )
    separate = run_programs(alone.engine, [independent])[0]
    assert shared.stats.generated_tokens == separate.stats.generated_tokens == n * 6
    assert shared.stats.peak_kv_blocks <= separate.stats.peak_kv_blocks / 3
    # Each fork finds all but the last prompt token computed; the first sample finds what
    # earlier tests left in the prefix cache.
    forks = (n - 1) * (len(PROMPT) - 1)
    assert forks <= shared.stats.cached_tokens <= forks + len(PROMPT) // BLOCK * BLOCK
    assert _free_all(llm) and _free_all(alone)


def test_prune_frees_blocks_at_once_and_the_program_continues(llm):
    freed = []

    async def program(s):
        pendings = s.launch(
            s.fork(s.root(PROMPT), 4), temperature=1.0, seed=1, max_tokens=40, ignore_eos=True
        )
        await s.first(s.launch([s.root([7, 8, 9])], max_tokens=3))  # let the forks run a while
        before = llm.engine.core.block_manager.num_free_blocks
        s.prune(pendings[0])
        freed.append(llm.engine.core.block_manager.num_free_blocks - before)
        await s.wait(pendings)
        return pendings[0].results()

    result = run_programs(llm.engine, [program])[0]
    assert result.error is None
    assert freed[0] > 0
    assert all(b.finish_reason == "abort" and 0 < b.num_generated < 40 for b in result.value)
    assert _free_all(llm)


@pytest.mark.parametrize("limit", [1, 7, 30, 200])
def test_token_budget_is_never_exceeded(llm, limit):
    async def program(s):
        return await best_of_n(
            s,
            s.root(PROMPT),
            8,
            mean_logprob,
            temperature=1.0,
            seed=2,
            max_tokens=20,
            ignore_eos=True,
        )

    result = run_programs(llm.engine, [program, program], Budget(max_tokens=limit))
    for r in result:
        assert r.error is None
        assert r.stats.generated_tokens <= limit
        assert r.stats.budget_exhausted == (limit < 8 * 20)
        assert r.value is not None  # the best answer so far comes back
    assert _free_all(llm)


def test_time_budget_returns_the_best_so_far(llm):
    async def program(s):
        return await self_consistency(
            s,
            s.root(PROMPT),
            4,
            lambda t: t[:1] or None,
            temperature=1.0,
            seed=4,
            max_tokens=400,
            ignore_eos=True,
        )

    result = run_programs(llm.engine, [program], Budget(max_seconds=0.02))[0]
    assert result.stats.budget_exhausted
    assert result.stats.generated_tokens < 4 * 400
    assert result.value.num_finished == 4  # every sample ended, cut short
    assert _free_all(llm)


def _samples(llm, n, **sampling):
    """What the same seeded samples are, generated as one plain request."""
    out = llm.generate([PROMPT], SamplingParams(n=n, **sampling))[0]
    return [o.text for o in out.outputs]


def test_best_of_n_picks_what_the_verifier_knows(llm):
    sampling = dict(temperature=1.0, seed=11, max_tokens=8, ignore_eos=True)
    texts = _samples(llm, 8, **sampling)
    target = texts[5][:2]  # an answer only some samples give
    check = verifier(lambda text: text.startswith(target))

    async def program(s):
        return await best_of_n(s, s.root(PROMPT), 8, check, **sampling)

    best = run_programs(llm.engine, [program])[0].value
    assert best.text == next(t for t in texts if t.startswith(target))


def test_self_consistency_vote_and_early_stop(llm):
    sampling = dict(temperature=1.0, seed=5, max_tokens=6, ignore_eos=True)
    texts = _samples(llm, 9, **sampling)

    def extract(text: str) -> str | None:
        return text[:1] or None

    async def full(s):
        return await self_consistency(s, s.root(PROMPT), 9, extract, early_stop=False, **sampling)

    async def constant(s):  # every sample votes the same: decided after the fifth
        # Samples end at their first token from a large set, so they end at different steps.
        ragged = dict(temperature=1.0, seed=5, max_tokens=60, stop_token_ids=list(range(3, 60)))
        return await self_consistency(s, s.root(PROMPT), 9, lambda t: "x", **ragged)

    vote, decided = (r.value for r in run_programs(llm.engine, [full, constant]))
    assert vote.weights == tally([extract(t) for t in texts], [1.0] * 9)
    assert vote.answer == leader(vote.weights)
    assert decided.answer == "x" and decided.num_finished < 9
    assert _free_all(llm)


def test_vote_rules_on_hand_written_cases():
    assert tally(["4", None, "4", "5"], [1, 1, 1, 1]) == {"4": 2.0, "5": 1.0}
    assert leader({"a": 2.0, "b": 2.0}) == "a"  # the first to reach it
    assert leader({}) is None
    assert is_decided({"a": 3.0, "b": 1.0}, 1)
    assert not is_decided({"a": 3.0, "b": 1.0}, 2)
    assert is_decided({"a": 0.5}, 0) and not is_decided({}, 1)


def test_rebase_allocation_follows_softmax():
    assert allocate([0.0, 0.0], 4, 1.0) == [2, 2]
    assert sum(allocate([0.1, 0.5, 0.9], 7, 0.2)) == 7
    counts = allocate([0.1, 0.5, 0.9], 7, 0.2)
    assert counts[2] > counts[1] > counts[0]
    assert allocate([1.0, -50.0], 3, 0.1) == [3, 0]


@pytest.mark.parametrize("method", ["step_beam", "rebase", "mcts"])
def test_tree_search_returns_the_best_value_it_saw(llm, method):
    """A value function that knows what it wants: the method returns a complete branch of the
    highest value among every complete branch it scored."""
    seen = []

    async def value(s, branch):
        v = float(branch.text.count("a")) - 0.01 * branch.num_generated
        seen.append((v, branch))
        return v

    sampling = dict(temperature=1.0, seed=9, max_tokens=6)
    delimiters = (" ",)

    async def program(s):
        root = s.root(PROMPT)
        if method == "step_beam":
            return await step_beam_search(
                s, root, value, width=2, expand=3, max_steps=3, delimiters=delimiters, **sampling
            )
        if method == "rebase":
            return await rebase(
                s, root, value, budget=6, max_steps=3, delimiters=delimiters, **sampling
            )
        return await mcts(s, root, value, iterations=5, expand=2, delimiters=delimiters, **sampling)

    result = run_programs(llm.engine, [program])[0]
    assert result.error is None and result.value is not None
    complete = [(v, b) for v, b in seen if b.stop_reason not in delimiters]
    pool = complete or seen
    assert max(v for v, _ in pool) == next(v for v, b in seen if b is result.value)
    assert _free_all(llm)


def test_a_failing_program_fails_alone(llm):
    async def bad(s):
        await s.gen(s.root(PROMPT), max_tokens=0)

    async def good(s):
        return (await s.gen(s.root(PROMPT), max_tokens=3, ignore_eos=True)).num_generated

    bad_result, good_result = run_programs(llm.engine, [bad, good])
    assert "max_tokens" in bad_result.error
    assert good_result.value == 3


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["gen", "fork", "prune", "beam"]), st.integers(1, 4)),
        min_size=1,
        max_size=5,
    ),
    limit=st.one_of(st.none(), st.integers(1, 40)),
)
def test_no_block_leaks_after_any_program(llm, ops, limit):
    async def program(s):
        branch = s.root(PROMPT[: 20 + len(ops)])
        for op, k in ops:
            if op == "gen":
                branch = await s.gen(branch, temperature=1.0, seed=k, max_tokens=k + 2)
            elif op == "fork":
                branch = (
                    await s.gen_all(s.fork(branch, k), temperature=1.0, seed=k, max_tokens=3)
                )[-1]
            elif op == "prune":
                pendings = s.launch(s.fork(branch, k), temperature=1.0, max_tokens=30)
                await s.first(pendings)
                for p in pendings:
                    s.prune(p)
            else:
                branch = (await s.gen_all([branch], use_beam_search=True, n=k, max_tokens=4))[0]
        return branch

    results = run_programs(llm.engine, [program, program], Budget(max_tokens=limit))
    assert all(r.error is None for r in results)
    if limit is not None:
        assert all(r.stats.generated_tokens <= limit for r in results)
    assert _free_all(llm)
    assert not llm.engine.has_unfinished()


def test_select_and_score_read_the_models_logprobs(llm):
    """select appends the option of highest mean log-probability; score sums them: both
    equal the prompt logprobs of the context followed by the option."""
    options = ["abc", "hello world", "xyz!"]
    tok = llm.tokenizer

    def reference(option: str) -> list[float]:
        ids = tok.encode(option, add_special_tokens=False)
        out = llm.generate([PROMPT + ids], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
        return [next(iter(e.values())) for e in out.prompt_logprobs[-len(ids) :]]

    async def program(s):
        root = s.root(PROMPT)
        chosen, index = await s.select(root, options)
        return chosen, index, await s.score(root, options[1])

    chosen, index, score = run_programs(llm.engine, [program])[0].value
    means = [sum(r) / len(r) for r in map(reference, options)]
    assert index == max(range(len(options)), key=lambda i: means[i])
    assert chosen.text == options[index]
    assert score == pytest.approx(sum(reference(options[1])), abs=1e-4)


def test_runs_after_a_pruning_run_do_not_collide(llm):
    """A run whose programs pruned requests flushes them before returning, and request ids
    stay unique across runners on one engine (a second run used to reuse a pruned id)."""
    ragged = dict(temperature=1.0, seed=5, max_tokens=60, stop_token_ids=list(range(3, 60)))

    async def decided_early(s):
        return await self_consistency(s, s.root(PROMPT), 9, lambda t: "x", **ragged)

    for _ in range(3):
        results = run_programs(llm.engine, [decided_early, decided_early])
        assert all(r.error is None and r.value.num_finished < 9 for r in results)
        assert not llm.engine.has_unfinished()
    assert _free_all(llm)
