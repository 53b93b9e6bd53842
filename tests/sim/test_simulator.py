"""The simulator drives the engine's own core (scheduler, block manager, forks, aborts, grammars)
end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from intaglio.config import EngineConfig
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.report import summarize, timeline
from intaglio.sim.runner import simulate
from intaglio.sim.workload import SimRequest, sample_lengths, synthetic_workload, trace_workload
from intaglio.toolkit.hardware import load_hardware
from intaglio.toolkit.presets import load_model_config
from intaglio.toolkit.step_model import StepCostModel


@pytest.fixture(scope="module")
def step_model():
    return StepCostModel(load_model_config("llama-3.2-1b"), load_hardware("h100-sxm"))


def _run(step_model, workload, blocks=4096, **settings):
    ex = SimulatedExecutor(step_model, blocks, 16)
    return simulate(workload, ex, EngineConfig(**{"max_num_seqs": 256, **settings})), ex


def test_every_request_finishes_with_its_tokens(step_model):
    wl = synthetic_workload(300, "uniform:20:400", "uniform:1:200", rate=50.0, seed=3)
    result, ex = _run(step_model, wl, max_num_seqs=64, max_num_batched_tokens=512)
    assert all(t.num_output_tokens == t.request.output_len for t in result.timings)
    assert sum(s.num_sampled for s in ex.steps) == sum(r.output_len for r in wl)
    # Every prompt token is computed at least once (more after a preemption's recompute).
    assert sum(s.num_prefill_tokens for s in ex.steps) >= sum(r.prompt_len - 1 for r in wl)
    assert all(s.num_tokens <= 512 and s.num_seqs <= 64 for s in ex.steps)
    # Virtual time: steps are back to back while busy, and nothing starts before it arrives.
    starts = np.array([s.start_s for s in ex.steps])
    assert np.all(np.diff(starts) > 0)
    for t in result.timings:
        assert t.request.arrival_s < t.first_token_s <= t.finish_s
    s = summarize(result)
    assert s["num_requests"] == 300 and s["ttft_s"]["p50"] > 0
    assert 0 < s["mfu"] < 1 and 0 < s["mbu"] < 1
    tl = timeline(result)
    assert np.all((tl["mfu"] > 0) & (tl["mfu"] < 1)) and len(tl["mbu"]) == len(ex.steps)
    assert s["output_throughput"] == pytest.approx(sum(r.output_len for r in wl) / s["makespan_s"])


def test_a_small_kv_cache_preempts_and_still_conserves(step_model):
    wl = synthetic_workload(60, "fixed:200", "fixed:100", rate=None, seed=1)
    result, ex = _run(step_model, wl, blocks=40, max_num_seqs=32, max_num_batched_tokens=1024)
    assert result.num_preemptions > 0
    assert all(t.num_output_tokens == 100 for t in result.timings)
    kv = timeline(result)["kv_usage"]
    assert kv.max() <= 1.0 and kv.max() > 0.9


def test_more_bandwidth_means_lower_decode_latency():
    cfg = load_model_config("llama-3.2-1b")
    wl = synthetic_workload(50, "fixed:128", "fixed:64", rate=None, seed=0)
    tpot = []
    for bw in (1000, 3350, 8000):
        hw = load_hardware("h100-sxm").with_overrides({"memory.1.bandwidth_gbs": bw})
        result, _ = _run(StepCostModel(cfg, hw), wl)
        tpot.append(summarize(result)["tpot_s"]["p50"])
    assert tpot[0] > tpot[1] > tpot[2]


def test_same_seed_same_result(step_model):
    def run():
        wl = synthetic_workload(40, "lognormal:100:0.5", "normal:50:10", rate=20.0, seed=7)
        return summarize(_run(step_model, wl)[0])

    assert run() == run()


def test_an_impossible_request_is_refused(step_model):
    wl = synthetic_workload(2, "fixed:5000", "fixed:10", seed=0)
    with pytest.raises(ValueError, match="the KV cache holds 1600"):
        _run(step_model, wl, blocks=100)


def test_workload_specs_and_traces(tmp_path):
    rng = np.random.default_rng(0)
    x = sample_lengths("uniform:5:9", 1000, rng)
    assert x.min() == 5 and x.max() == 9
    with pytest.raises(ValueError, match="use fixed:N"):
        sample_lengths("zipf:2", 3, rng)
    wl = synthetic_workload(20, "fixed:10", "fixed:5", num_prefixes=2, prefix_len=8, seed=0)
    heads = {r.prompt_token_ids[:8] for r in wl}
    assert len(heads) == 2 and all(r.prompt_len == 18 for r in wl)
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,input_len,output_len,priority\n0.5,10,3,1\n0.1,20,4,0\n")
    reqs = trace_workload(trace)
    assert [(r.arrival_s, r.prompt_len, r.output_len, r.priority) for r in reqs] == [
        (0.1, 20, 4, 0),
        (0.5, 10, 3, 1),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arrival_s": 0, "input_len": 3}\n')
    with pytest.raises(ValueError, match="row 1"):
        trace_workload(bad)


def test_thousands_of_requests_on_405b_in_seconds():
    import time

    from intaglio.toolkit.fusion import fuse_all
    from intaglio.toolkit.memory import plan_memory
    from intaglio.toolkit.parallel import tensor_parallel

    cfg = load_model_config("llama-3-405b")
    hw = load_hardware("h200")
    plan = plan_memory(cfg, hw, tp=8)
    model = StepCostModel(cfg, hw, [tensor_parallel(8), fuse_all], plan.weight_bytes)
    wl = synthetic_workload(2000, "uniform:100:1000", "uniform:50:300", rate=8.0, seed=0)
    t0 = time.perf_counter()
    ex = SimulatedExecutor(model, plan.num_kv_blocks, 16)
    result = simulate(wl, ex, EngineConfig(max_num_seqs=256, max_num_batched_tokens=4096))
    assert time.perf_counter() - t0 < 60
    assert len(result.timings) == 2000


def test_shared_prefixes_hit_the_engines_prefix_cache(step_model):
    wl = synthetic_workload(
        80, "fixed:64", "fixed:16", rate=40.0, num_prefixes=2, prefix_len=512, seed=4
    )
    on, ex_on = _run(step_model, wl)
    off, ex_off = _run(step_model, wl, prefix_caching=False)
    assert on.prefix_hit_rate > 0.5 and off.prefix_hit_rate == 0.0
    computed_on = sum(s.num_tokens for s in ex_on.steps)
    computed_off = sum(s.num_tokens for s in ex_off.steps)
    assert computed_on < computed_off / 2  # most prompt tokens came from the cache
    assert summarize(on)["ttft_s"]["mean"] < summarize(off)["ttft_s"]["mean"]


def test_priority_policy_serves_urgent_requests_first(step_model):
    wl = synthetic_workload(200, "fixed:512", "fixed:64", rate=None, priorities=2, seed=5)

    def ttft_by_priority(policy):
        result, _ = _run(step_model, wl, max_num_seqs=16, scheduling_policy=policy)
        by = {0: [], 1: []}
        for t in result.timings:
            by[t.request.priority].append(t.first_token_s - t.request.arrival_s)
        return {p: float(np.mean(v)) for p, v in by.items()}

    fcfs, prio = ttft_by_priority("fcfs"), ttft_by_priority("priority")
    assert prio[0] < fcfs[0] and prio[0] < prio[1]


def test_llama4_chunked_layers_get_their_own_kv_pool():
    """The memory plan and the simulated engine keep only a chunk of KV on chunked layers, as
    the real engine does, so a Llama 4 budget holds far more context tokens."""
    import dataclasses

    from intaglio.toolkit.memory import plan_memory

    cfg = load_model_config("llama-4-scout")
    hw = load_hardware("h200")
    plan = plan_memory(cfg, hw, tp=2, max_num_seqs=4, max_num_batched_tokens=2048)
    whole = plan_memory(
        dataclasses.replace(cfg, attention_chunk_size=None),
        hw,
        tp=2,
        max_num_seqs=4,
        max_num_batched_tokens=2048,
    )
    assert plan.num_local_kv_blocks > 0 and whole.num_local_kv_blocks == 0
    assert plan.kv_capacity_tokens > 2 * whole.kv_capacity_tokens
    model = StepCostModel(cfg, hw, [], plan.weight_bytes)
    ex = SimulatedExecutor(
        model, plan.num_kv_blocks, 16, num_local_kv_blocks=plan.num_local_kv_blocks
    )
    wl = synthetic_workload(12, "uniform:9000:20000", "fixed:32", rate=4.0, seed=1)
    result = simulate(wl, ex, EngineConfig(max_num_seqs=4, max_num_batched_tokens=2048))
    assert all(t.num_output_tokens == 32 for t in result.timings)


def test_n_samples_fork_from_the_first_and_share_its_prompt(step_model):
    wl = [
        dataclasses.replace(r, n=4)
        for r in synthetic_workload(10, "fixed:300", "fixed:20", rate=10.0, seed=2)
    ]
    result, ex = _run(step_model, wl, prefix_caching=False)
    assert all(t.num_output_tokens == 4 * 20 for t in result.timings)
    # The prompt is computed once (its last token samples, so it is not counted as prefill);
    # each sibling recomputes only that last token, to sample from its own logits.
    assert sum(s.num_prefill_tokens for s in ex.steps) == 10 * 299
    assert sum(s.num_tokens for s in ex.steps) == 10 * (300 + 3 + 4 * 19)


def test_aborted_requests_end_at_their_abort_time_and_free_their_kv(step_model):
    wl = synthetic_workload(20, "fixed:100", "fixed:400", rate=None, seed=3)
    wl = [dataclasses.replace(r, abort_s=0.05) if i % 2 else r for i, r in enumerate(wl)]
    result, ex = _run(step_model, wl, prefix_caching=False)
    for i, t in enumerate(result.timings):
        if i % 2:
            assert t.finish_reasons == ["abort"] and 0 < t.num_output_tokens < 400
            assert t.finish_s >= 0.05
        else:
            assert t.finish_reasons == ["length"] and t.num_output_tokens == 400
    assert result.kv[-1].usage == 0.0 and result.kv[-1].num_running == 0


def test_an_urgent_arrival_preempts_running_low_priority_work(step_model):
    background = synthetic_workload(8, "fixed:400", "fixed:200", rate=None, priorities=1, seed=4)
    background = [dataclasses.replace(r, priority=5) for r in background]
    urgent = SimRequest("urgent", 0.05, tuple(range(10, 410)), 50, priority=0)
    result, _ = _run(step_model, [*background, urgent], blocks=200, scheduling_policy="priority")
    assert result.num_preemptions > 0
    t = result.timings[-1]
    others = [x.first_token_s for x in result.timings[:-1]]
    assert t.num_output_tokens == 50 and t.finish_s < max(x.finish_s for x in result.timings[:-1])
    assert t.first_token_s - 0.05 < max(others)


def test_a_grammar_constrained_request_runs_through_the_simulated_executor():
    from transformers import AutoTokenizer

    from intaglio.model.checkpoint import EMBEDDED_MODEL

    cfg = load_model_config(str(EMBEDDED_MODEL))
    model = StepCostModel(cfg, load_hardware("h100-sxm"))
    tokenizer = AutoTokenizer.from_pretrained(str(EMBEDDED_MODEL))
    free = synthetic_workload(3, "fixed:20", "fixed:30", rate=None, vocab_size=cfg.vocab_size)
    digits = SimRequest("digits", 0.0, tuple(range(5, 25)), 30, structured={"regex": "[0-9]{3}"})
    ex = SimulatedExecutor(model, 256, 16)
    result = simulate([*free, digits], ex, EngineConfig(), grammar_tokenizer=tokenizer)
    t = result.timings[-1]
    assert t.finish_reasons == ["stop"] and 1 <= t.num_output_tokens <= 3
    assert all(x.num_output_tokens == 30 for x in result.timings[:-1])


def test_speculation_with_a_measured_acceptance_profile(step_model):
    """One request at a time: drafts accepted at the profile's rates cut the decode steps and
    the latency; many at once: the adaptive length backs off, so throughput holds."""
    profile = (0.8, 0.7, 0.6, 0.5)

    def run(workload, **settings):
        ex = SimulatedExecutor(step_model, 4096, 16, acceptance=profile, seed=1)
        config = EngineConfig(**{"max_num_seqs": 256, **settings})
        return simulate(workload, ex, config), ex

    lone = synthetic_workload(4, "fixed:256", "fixed:200", rate=None, seed=2)
    plain, plain_ex = run(lone, max_num_seqs=1)
    spec, spec_ex = run(lone, max_num_seqs=1, speculative_method="ngram")
    assert all(t.num_output_tokens == 200 for t in spec.timings)
    # Expected tokens per step with 4 drafts at this profile: 1 + .8 + .56 + .336 + .168 = 2.86
    assert len(plain_ex.steps) / len(spec_ex.steps) > 2.0
    assert spec.makespan_s < 0.6 * plain.makespan_s
    crowd = synthetic_workload(256, "fixed:256", "fixed:64", rate=None, seed=2)
    plain, _ = run(crowd)
    spec, _ = run(crowd, speculative_method="ngram")
    assert spec.makespan_s <= 1.02 * plain.makespan_s


def test_beam_search_runs_in_the_simulator(step_model):
    """The simulator runs the engine's own beam search: beams fork and prune over the real
    block manager, and a wider beam costs more virtual time for the same length."""
    from intaglio.engine.core import EngineCore
    from intaglio.sampling.params import SamplingParams

    times = []
    for width in (1, 8):
        ex = SimulatedExecutor(step_model, 4096, 16, synthetic_token=5, seed=width)
        core = EngineCore(EngineConfig(max_num_seqs=64), ex, eos_token_ids=(2,))
        params = SamplingParams(
            n=min(width, 3), best_of=width, use_beam_search=True, max_tokens=40, ignore_eos=True
        )
        core.add("beam", list(range(10, 300)), params)
        outputs = []
        while core.has_unfinished():
            outputs += core.step()
        samples = outputs[-1].samples
        assert outputs[-1].finished and len(samples) == min(width, 3)
        assert all(len(s.output_token_ids) == 40 for s in samples)
        assert [s.cumulative_logprob for s in samples] == sorted(
            (s.cumulative_logprob for s in samples), reverse=True
        )
        assert core.block_manager.num_free_blocks == 4096
        assert max(s.num_seqs for s in ex.steps) == width
        times.append(ex.clock_s)
    assert times[1] > times[0]
