"""Speculative decoding in the simulator: the engine's own speculator and controller decide the
drafts, the executor verifies them against an acceptance profile and costs the draft network."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from intaglio.config import EngineConfig
from intaglio.sim.executor import SimulatedExecutor
from intaglio.sim.report import summarize
from intaglio.sim.runner import simulate
from intaglio.sim.speculation import expected_tokens, load_profile, profile_tokens
from intaglio.sim.study import (
    Study,
    draft_network,
    serve,
    study_engine_config,
    without_speculation,
)
from intaglio.sim.workload import synthetic_workload
from intaglio.spec import SpecStats
from intaglio.toolkit.step_model import StepCostModel


def _study(method: str | None, adaptive: bool = False, k: int = 4, **fields) -> Study:
    engine = study_engine_config(
        speculative_method=method, speculative_adaptive=adaptive, num_speculative_tokens=k
    )
    return Study("llama-3.2-1b", "h100-sxm", engine=engine, **fields)


def _lone(num: int, output_len: int) -> dict:
    """`num` requests of one output length, all at time 0."""
    return dict(num_requests=num, input_len="fixed:128", output_len=f"fixed:{output_len}")


def test_spec_stats_count_the_drafts_each_verification_reached():
    stats = SpecStats()
    stats.record([7, 7, 7, 7], 2)  # drafts 0 and 1 kept, 2 rejected, 3 never tried
    stats.record([7, 7], 2)  # both kept
    stats.record([7, 7, 7], 0)
    assert stats.accepted_per_position == [2, 2, 0, 0]
    assert stats.tried_per_position == [3, 2, 1]
    total = SpecStats()
    total.add(stats)
    total.add(stats)
    assert total.tried_per_position == [6, 4, 2] and total.num_drafts == 6


def test_alpha_zero_is_never_faster_than_plain_decoding():
    """No draft is ever kept: every verification still emits one token, so a fixed draft
    length takes as many steps as plain decoding, each costlier (k + 1 rows, and the draft
    network's own steps); the adaptive length backs off to about plain decoding."""
    work = _lone(8, 200)
    plain = summarize(serve(_study(None, **work))[0])
    for method in ("ngram", "eagle"):
        fixed, _ = serve(_study(method, spec_alpha=0.0, **work))
        s = summarize(fixed)
        assert s["speculation"]["acceptance_rate"] == 0.0
        assert s["num_steps"] == plain["num_steps"]
        assert s["output_throughput"] < 0.97 * plain["output_throughput"]
        adaptive = summarize(serve(_study(method, adaptive=True, spec_alpha=0.0, **work))[0])
        ratio = adaptive["output_throughput"] / plain["output_throughput"]
        # Lookups back off to plain decoding; the head still fills its KV every step.
        assert 0.99 <= ratio <= 1.001 if method == "ngram" else 0.85 <= ratio < 0.97
    # The head's steps cost on top of the same verifications.
    ngram = summarize(serve(_study("ngram", spec_alpha=0.0, **work))[0])
    eagle = summarize(serve(_study("eagle", spec_alpha=0.0, **work))[0])
    assert eagle["speculation"]["draft_time_share"] > 0.05
    assert ngram["speculation"]["draft_time_share"] == 0.0
    assert eagle["output_throughput"] < ngram["output_throughput"]


def test_alpha_one_emits_k_plus_one_tokens_per_verification():
    # One token from the prefill, then 40 verifications of 4 drafts, all kept: 201 tokens.
    result, _ = serve(_study("eagle", spec_alpha=1.0, **_lone(3, 201)))
    spec = result.spec
    assert spec.num_drafts == 3 * 40 and spec.num_draft_tokens == 3 * 40 * 4
    assert spec.num_accepted_tokens == spec.num_draft_tokens
    assert spec.mean_acceptance_length == 5.0
    decode_steps = [s for s in result.executor.steps if s.num_prefill_tokens == 0]
    assert len(decode_steps) == 40 and all(s.num_sampled == 3 * 5 for s in decode_steps)


def test_mean_accepted_length_matches_the_closed_form():
    """At constant alpha, a verification of k drafts yields (1 - alpha^(k+1)) / (1 - alpha)
    tokens; 16 requests of 3000 tokens give ~20000 verifications, a standard error of ~0.01."""
    alpha, k = 0.6, 4
    result, _ = serve(_study("eagle", spec_alpha=alpha, k=k, **_lone(16, 3000)))
    spec = result.spec
    assert spec.num_drafts > 15000
    expected = expected_tokens(alpha, k)
    assert expected == pytest.approx(2.3056)
    assert spec.mean_acceptance_length == pytest.approx(expected, abs=0.04)
    rates = np.array(spec.accepted_per_position) / np.array(spec.tried_per_position)
    assert rates == pytest.approx([alpha] * k, abs=0.03)


def _row(method, workload, accepted, tried, decode_steps):
    """A row as `intaglio bench spec --json-out` writes it (one request), cut to what a profile
    reads: per-position counts, and the decode steps in which the proposer found no draft."""
    return {
        "method": method,
        "workload": workload,
        "batch": 1,
        "output_tokens": 1 + decode_steps + sum(accepted),  # the prefill's token, then steps
        "num_drafts": tried[0],
        "num_accepted_tokens": sum(accepted),
        "accepted_per_position": accepted,
        "tried_per_position": tried,
    }


def _bench_json(tmp_path):
    rows = [
        # eagle, two workloads: pooled they give 0.9, 0.5, 0 (never kept past two drafts),
        # drafts in 100 of 150 decode steps.
        _row("eagle", "chat", [40, 20, 0], [50, 40, 20], 100),
        _row("eagle", "code", [50, 25, 0], [50, 50, 25], 50),
        # ngram: a match in a quarter of the decode steps.
        _row("ngram", "chat", [1, 0], [100, 1], 400),
    ]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_a_measured_profile_is_loaded_and_used(tmp_path):
    path = _bench_json(tmp_path)
    profile, rate = load_profile(path, "eagle", None)
    assert profile == pytest.approx((0.9, 0.5, 0.0)) and rate == pytest.approx(100 / 150)
    assert load_profile(path, "eagle", "chat")[0] == pytest.approx((0.8, 0.5, 0.0))
    profile, rate = load_profile(path, "ngram", None)
    assert profile == pytest.approx((0.01, 0.0)) and rate == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no per-position counts for method 'suffix'"):
        load_profile(path, "suffix", None)
    result, _ = serve(_study("eagle", spec_profile=str(path), **_lone(8, 1000)))
    spec = result.spec
    assert spec.accepted_per_position[2:] == [0, 0]  # the profile's zero holds
    rates = np.array(spec.accepted_per_position[:2]) / np.array(spec.tried_per_position[:2])
    assert rates == pytest.approx([0.9, 0.5], abs=0.03)
    assert spec.mean_acceptance_length == pytest.approx(
        profile_tokens((0.9, 0.5, 0.0), 4), abs=0.04
    )
    simple = tmp_path / "profile.json"
    simple.write_text(json.dumps({"acceptance": [0.5, 1.5]}))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        load_profile(simple, "eagle", None)


def test_a_lookup_drafts_in_the_measured_share_of_steps(tmp_path):
    """The simulator's tokens repeat, so a real lookup would always match; the measured draft
    rate (a quarter here) decides which decode steps get drafts."""
    result, _ = serve(_study("ngram", spec_profile=str(_bench_json(tmp_path)), **_lone(4, 1000)))
    decode_steps = 4 * (1000 - 1) - result.spec.num_accepted_tokens
    assert result.spec.num_drafts / decode_steps == pytest.approx(0.25, abs=0.02)
    always, _ = serve(_study("ngram", spec_alpha=0.5, **_lone(4, 1000)))
    # Every decode step drafts but a request's last (no room left after its final token).
    steps = 4 * (1000 - 1) - always.spec.num_accepted_tokens
    assert steps - 4 <= always.spec.num_drafts <= steps


def test_the_draft_network_costs_its_fill_pass_and_one_decode_per_draft():
    """A step's time is the target's plus the head's, as executor/drafter.py runs it."""
    study = _study("eagle", spec_alpha=0.5)
    drafter = draft_network(study)
    assert drafter is not None and drafter.config().num_layers == 1
    target = StepCostModel(study.config(), study.hw())
    ex = SimulatedExecutor(target, 4096, 16, acceptance=(0.5,) * 4, seed=0, drafter=drafter)
    wl = synthetic_workload(4, "fixed:100", "fixed:50", rate=None, seed=0)
    config = EngineConfig(max_num_seqs=8, speculative_method="eagle", speculative_adaptive=False)
    simulate(wl, ex, config)
    first = ex.steps[0]  # the prefill of all four prompts: each then drafts 4 tokens
    q, c = np.full(4, 100), np.full(4, 100)
    fill = drafter.model.step_time(q, c, 4)  # with the first draft's logits
    decodes = sum(drafter.model.step_time(np.ones(4), np.full(4, 101 + j), 4) for j in range(3))
    assert first.draft_s == pytest.approx(fill + decodes)
    assert first.duration_s == pytest.approx(target.step_time(q, c, 4) + fill + decodes)


def test_a_draft_model_takes_its_weights_and_kv_from_the_cache():
    study = _study("draft_model", spec_alpha=0.7, draft_model="llama-3.2-1b", **_lone(2, 10))
    study = dataclasses.replace(study, model="llama-3-8b")
    plain, plan = serve(without_speculation(study))
    drafter = draft_network(study)
    assert drafter is not None
    blocks = serve(study)[0].executor.num_kv_blocks
    kv = plan.num_kv_blocks * 16 * plan.kv_bytes_per_token - drafter.weight_bytes
    assert blocks == int(kv // (16 * (plan.kv_bytes_per_token + drafter.kv_bytes_per_token)))
    # Llama 3.2 1B keeps 16 layers x 8 KV heads x 64: a quarter of Llama 3 8B's KV per token.
    assert drafter.kv_bytes_per_token == pytest.approx(plan.kv_bytes_per_token / 4)
    assert blocks < 0.8 * plain.executor.num_kv_blocks


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(spec_alpha=0.5, spec_acceptance=(0.5,)), "give one of"),
        ({}, "needs an acceptance profile"),
        (dict(spec_alpha=1.5), r"must lie in \[0, 1\]"),
    ],
)
def test_acceptance_settings_are_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        _study("ngram", **fields).acceptance()


def test_a_draft_model_needs_an_architecture_on_the_same_vocabulary():
    with pytest.raises(ValueError, match="needs draft_model"):
        draft_network(_study("draft_model", spec_alpha=0.5))
    with pytest.raises(ValueError, match="vocabulary"):
        draft_network(_study("draft_model", spec_alpha=0.5, draft_model="qwen3-0.6b"))
