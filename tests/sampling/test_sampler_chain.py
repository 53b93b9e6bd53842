"""The samplers added to the chain, through Sampler and SamplingMetadata: validation, masks,
named processors, logprobs_mode, Mirostat's state, seeded rows independent of the batch."""

from __future__ import annotations

import pytest
import torch

from intaglio.errors import RequestError
from intaglio.sampling.dry import DryBreakers
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.processors import register_logits_processor, unregister_logits_processor
from intaglio.sampling.sampler import Sampler, SamplingMetadata
from intaglio.sampling.state import SequenceSamplerState

V = 50


def build(params, outputs=None, generators=None, states=None, prompts=None) -> SamplingMetadata:
    n = len(params)
    return SamplingMetadata.build(
        params,
        prompts or [[1, 2, 3] for _ in range(n)],
        outputs or [[] for _ in range(n)],
        generators or {},
        [[] for _ in range(n)],
        V,
        "cpu",
        states,
    )


def logits_for(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize(
    "field,value",
    [
        ("top_n_sigma", -0.5),
        ("typical_p", 0.0),
        ("epsilon_cutoff", 1.0),
        ("eta_cutoff", -0.1),
        ("mirostat_tau", -1.0),
        ("mirostat_eta", 0.0),
        ("dry_multiplier", -1.0),
        ("dry_base", 0.5),
        ("dry_allowed_length", 0),
        ("dry_penalty_last_n", -2),
        ("dry_sequence_breakers", [""]),
        ("xtc_probability", 1.5),
        ("xtc_threshold", -0.1),
        ("bad_words", [" "]),
        ("allowed_token_ids", []),
        ("logits_processors", ["no-such-processor"]),
        ("logprobs_mode", "raw_logits"),
        ("extra_args", [1, 2]),
        ("dry_allowed_length", 1.5),
        ("typical_p", "high"),
    ],
)
def test_bad_values_name_their_field(field, value):
    with pytest.raises(RequestError) as e:
        SamplingParams(**{field: value})
    assert e.value.param == field


def test_allowed_token_ids_and_bad_words():
    params = [
        SamplingParams(temperature=0.0, allowed_token_ids=[3, 9]),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0),
    ]
    logits = logits_for(3)
    # Row 2 bans the two-token word (7, 11): 11 only right after 7; and the one-token word 4.
    words = SequenceSamplerState(bad_words=((7, 11), (4,)))
    logits[1:, 11] = logits[1:, 4] = 100.0
    meta = build(params, outputs=[[], [7], [7]], states=[None, None, words])
    target = Sampler.target_logits(logits, meta)
    assert torch.isfinite(target[0]).nonzero().flatten().tolist() == [3, 9]
    assert torch.isfinite(target[1]).all()
    assert target[2, 11] == float("-inf") and target[2, 4] == float("-inf")
    meta = build(params, outputs=[[], [7], [8]], states=[None, None, words])
    assert Sampler.target_logits(logits, meta)[2, 11] == 100.0  # the word is not being completed


def test_named_processors_get_their_rows_and_args_and_the_grammar_wins():
    seen = []

    def force(logits, rows):
        seen.append([r.extra_args["token"] for r in rows])
        out = logits.clone()
        for i, r in enumerate(rows):
            out[i, r.extra_args["token"]] += 1000.0
        return out

    register_logits_processor("force", force)
    try:
        params = [
            SamplingParams(temperature=0.0, logits_processors=["force"], extra_args={"token": 5}),
            SamplingParams(temperature=0.0),
            SamplingParams(temperature=0.7, logits_processors=["force"], extra_args={"token": 8}),
        ]
        meta = build(params)
        out = Sampler()(logits_for(3), meta)
        assert seen == [[5, 8]]  # one batched call for the rows that named it
        assert out.token_ids[0] == 5 and out.token_ids[2] == 8
        mask = torch.ones(3, V, dtype=torch.bool)
        mask[0, 5] = False  # a grammar forbidding the forced token has the last word
        meta = build(params)
        meta.allowed_token_mask = mask
        assert Sampler()(logits_for(3), meta).token_ids[0] != 5
    finally:
        unregister_logits_processor("force")


def test_processed_logprobs_come_from_the_target():
    params = [
        SamplingParams(temperature=0.5, top_k=3, logprobs=2),
        SamplingParams(temperature=0.5, top_k=3, logprobs=2, logprobs_mode="processed_logprobs"),
    ]
    logits = logits_for(2)
    logits[1] = logits[0]
    meta = build(params, generators={0: torch.Generator().manual_seed(1)})
    out = Sampler()(logits, meta)
    target = Sampler.target_logits(logits, meta)
    raw = logits.log_softmax(-1)
    processed = target.log_softmax(-1)
    assert out.logprobs is not None and out.top_logprobs is not None
    assert out.logprobs[0] == pytest.approx(float(raw[0, out.token_ids[0]]))
    assert out.logprobs[1] == pytest.approx(float(processed[1, out.token_ids[1]]))
    assert out.top_logprobs[1].tolist() == pytest.approx(processed[1].topk(2).values.tolist())


def test_mirostat_state_moves_after_each_draw():
    p = SamplingParams(temperature=1.0, mirostat_tau=3.0, mirostat_eta=0.5)
    state = SequenceSamplerState.for_request(p, tokenizer=None)
    assert state is not None and state.mirostat_mu == 6.0
    logits = logits_for(1)
    meta = build([p], states=[state], generators={0: torch.Generator().manual_seed(0)})
    target = Sampler.target_logits(logits, meta)
    token = int(Sampler()(logits, meta).token_ids[0])
    surprise = -float(target.log_softmax(-1)[0, token]) / torch.log(torch.tensor(2.0)).item()
    assert state.mirostat_mu == pytest.approx(6.0 - 0.5 * (surprise - 3.0), rel=1e-5)


def test_greedy_rows_skip_truncation_and_large_temperatures_stay_finite():
    full = dict(
        top_n_sigma=1.0,
        typical_p=0.5,
        epsilon_cutoff=0.01,
        eta_cutoff=0.01,
        xtc_probability=1.0,
        xtc_threshold=0.05,
    )
    logits = logits_for(2)
    meta = build([SamplingParams(temperature=0.0, **full), SamplingParams(temperature=1e4, **full)])
    out = Sampler()(logits, meta)
    assert out.token_ids[0] == logits[0].argmax()
    target = Sampler.target_logits(logits, meta)
    assert not target.isnan().any() and torch.isfinite(target[1]).any()


ALL_SAMPLERS = [
    dict(top_n_sigma=1.5),
    dict(typical_p=0.6),
    dict(epsilon_cutoff=0.01, eta_cutoff=0.005),
    dict(xtc_probability=0.5, xtc_threshold=0.05),
    dict(mirostat_tau=4.0),
    dict(dry_multiplier=0.8, min_p=0.02, top_k=20),
]


def _seeded_run(rows: list[int], steps: int = 12) -> dict[int, list[int]]:
    """Run rows `rows` of ALL_SAMPLERS (each seeded by its index) together for `steps` steps."""
    params = [SamplingParams(temperature=0.9, seed=i, **ALL_SAMPLERS[i]) for i in rows]
    states = []
    for p in params:
        state = SequenceSamplerState.for_request(p, tokenizer=None) if not p.uses_dry else None
        states.append(state or SequenceSamplerState(dry_breakers=DryBreakers((0,), ())))
    gens = {k: torch.Generator().manual_seed(i) for k, i in enumerate(rows)}
    outputs: list[list[int]] = [[] for _ in rows]
    for _ in range(steps):
        meta = build(params, outputs=outputs, generators=gens, states=states)
        # Each row's logits depend only on its own history, as a model's would.
        logits = torch.stack(
            [logits_for(1, seed=hash((i, *outputs[k])) % 2**31)[0] for k, i in enumerate(rows)]
        )
        for k, t in enumerate(Sampler()(logits, meta).token_ids.tolist()):
            outputs[k].append(t)
    return {i: outputs[k] for k, i in enumerate(rows)}


def test_seeded_rows_do_not_depend_on_the_batch():
    together = _seeded_run(list(range(len(ALL_SAMPLERS))))
    for i in range(len(ALL_SAMPLERS)):
        assert _seeded_run([i]) == {i: together[i]}
    assert _seeded_run([5, 1, 3]) == {i: together[i] for i in (5, 1, 3)}


def test_truncating_on_the_top_k_candidates_equals_the_whole_vocabulary(monkeypatch):
    import intaglio.sampling.sampler as sampler_module

    rest = dict(min_p=0.02, top_p=0.9, typical_p=0.8, epsilon_cutoff=1e-3, eta_cutoff=1e-3)
    params = [
        SamplingParams(temperature=0.7, top_k=5, **rest),
        SamplingParams(temperature=0.0, top_k=3),  # greedy: its k does not matter
        SamplingParams(temperature=1.3, top_k=30, top_n_sigma=2.0, xtc_probability=1.0, **rest),
        SamplingParams(temperature=1.0, top_k=12, mirostat_tau=2.0),
    ]
    states = [None, None, None, SequenceSamplerState(mirostat_mu=4.0)]
    logits = logits_for(4, seed=5)
    compact = Sampler.target_logits(logits, build(params, states=states))
    assert sampler_module._top_k_candidates(logits, build(params, states=states)) is not None
    monkeypatch.setattr(sampler_module, "_COMPACT_MAX_K", 0)  # force the whole-vocabulary path
    full = Sampler.target_logits(logits, build(params, states=states))
    assert torch.equal(compact, full)
    assert (torch.isfinite(full).sum(-1) <= torch.tensor([5, V, 30, 12])).all()
    monkeypatch.undo()
    # A tie with the k-th value: the candidates hold every tied token, as the whole vocabulary
    # keeps them.
    tied = logits.clone()
    tied[0, :8] = 3.0
    meta = build(params, states=states)
    candidates = sampler_module._top_k_candidates(tied, meta)
    assert candidates is not None
    assert int(torch.isfinite(candidates[0][0]).sum()) == 12  # 4 above 3.0, 8 tied at the 5th
    compact = Sampler.target_logits(tied, build(params, states=states))
    monkeypatch.setattr(sampler_module, "_COMPACT_MAX_K", 0)
    assert torch.equal(compact, Sampler.target_logits(tied, build(params, states=states)))
    monkeypatch.undo()
    # Fewer finite logits than k (here after top-nσ): the candidates hold them all.
    sparse = torch.full((4, V), float("-inf"))
    sparse[:, :2] = torch.tensor([1.0, 0.5])
    assert sampler_module._top_k_candidates(sparse, meta) is not None
