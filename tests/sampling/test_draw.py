"""The draw (inverse transform sampling) follows the processed distribution, never picks a
masked token, and gives a seeded row the same tokens over its top-k candidates as over the
whole vocabulary; the block search of the top-k equals torch.topk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import intaglio.sampling.sampler as sampler_module
from intaglio.sampling.draw import inverse_cdf, uniforms
from intaglio.sampling.params import SamplingParams
from intaglio.sampling.sampler import Sampler, SamplingMetadata


def chi_square_critical(dof: int, z: float = 3.09) -> float:
    """Wilson-Hilferty: the chi-square quantile at the normal quantile z (3.09: 0.999)."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * math.sqrt(a)) ** 3


def chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic over the categories with an expected count of at least 5 (the rest
    pooled), and its degrees of freedom."""
    expected = probs * counts.sum()
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    keep = wanted > 0
    stat = float(((observed[keep] - wanted[keep]) ** 2 / wanted[keep]).sum())
    return stat, int(keep.sum()) - 1


def _probs(vocab: int, seed: int) -> torch.Tensor:
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 2
    logits[::7] = float("-inf")  # masked tokens, scattered over several blocks
    return logits.softmax(-1)


@pytest.mark.parametrize("vocab", [50, 1000, 1003])  # one block; many; a padded last block
def test_inverse_cdf_follows_the_distribution(vocab: int) -> None:
    probs = _probs(vocab, seed=vocab)
    n = 200_000
    torch.manual_seed(0)
    columns = inverse_cdf(probs.expand(n, -1), uniforms(n, {}, "cpu"))
    counts = np.bincount(columns.numpy(), minlength=vocab).astype(np.float64)
    assert counts[probs.numpy() == 0].sum() == 0  # masked tokens never come out
    stat, dof = chi_square(counts, probs.double().numpy())
    assert stat < chi_square_critical(dof), (stat, dof)
    # The test can fail: the same counts against a slightly different distribution.
    tilted = probs.double().numpy() * np.linspace(0.9, 1.1, vocab)
    stat, dof = chi_square(counts, tilted / tilted.sum())
    assert stat > chi_square_critical(dof), (stat, dof)


def test_inverse_cdf_at_the_ends_of_the_unit_interval() -> None:
    probs = torch.zeros(3, 700)
    probs[:, [3, 300, 650]] = torch.tensor([0.25, 0.5, 0.25])
    u = torch.tensor([0.0, 0.5, 1.0 - 2.0**-53], dtype=torch.float64)
    assert inverse_cdf(probs, u).tolist() == [3, 300, 650]


def _build(params: list[SamplingParams], vocab: int, seed: int) -> SamplingMetadata:
    n = len(params)
    generators = {0: torch.Generator().manual_seed(seed)}
    return SamplingMetadata.build(params, [[]] * n, [[]] * n, generators, [[]] * n, vocab, "cpu")


def test_a_seeded_row_draws_the_same_over_its_candidates_and_the_vocabulary() -> None:
    vocab = 4096
    row = torch.randn(1, vocab, generator=torch.Generator().manual_seed(3)) * 3
    mine = SamplingParams(temperature=1.0, top_k=40, top_p=0.95, seed=1)
    wide = SamplingParams(temperature=1.0)  # no top_k: the batch takes the whole vocabulary
    logits = torch.cat([row, torch.randn(1, vocab)])
    for seed in range(60):
        compact = Sampler.target(row, _build([mine], vocab, seed))
        assert compact.index is not None
        whole = Sampler.target(logits, _build([mine, wide], vocab, seed))
        assert whole.index is None
        alone = Sampler()(row, _build([mine], vocab, seed)).token_ids[0]
        assert alone == Sampler()(logits, _build([mine, wide], vocab, seed)).token_ids[0]


def test_compact_draws_follow_the_target() -> None:
    vocab, n = 3000, 60_000
    row = torch.randn(1, vocab, generator=torch.Generator().manual_seed(4)) * 2
    params = [SamplingParams(temperature=0.7, top_k=30, min_p=0.01)] * n
    meta = SamplingMetadata.build(params, [[]] * n, [[]] * n, {}, [[]] * n, vocab, "cpu")
    torch.manual_seed(1)
    tokens = Sampler()(row.expand(n, -1), meta).token_ids.numpy()
    target = Sampler.target_logits(row, _build(params[:1], vocab, 0)).softmax(-1)[0]
    counts = np.bincount(tokens, minlength=vocab).astype(np.float64)
    assert counts[target.numpy() == 0].sum() == 0
    stat, dof = chi_square(counts, target.double().numpy())
    assert stat < chi_square_critical(dof), (stat, dof)


@pytest.mark.parametrize("k", [1, 5, 33])
def test_the_block_search_equals_topk(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(6, 128 * 200, generator=g)
    logits[1, 5000:5100] = 9.0  # ties at the top, within and across blocks
    logits[2, ::2] = float("-inf")
    logits[3] = float("-inf")  # nothing finite
    logits[3, 77] = 1.0
    logits[4] = torch.randn(128 * 200, generator=g).round()  # many ties everywhere
    values, index = sampler_module._top(logits, k)
    want = logits.topk(k, dim=-1)
    assert torch.equal(values, want.values)
    assert torch.equal(logits.gather(1, index), values)  # the ids hold those values
    assert (index.sort(-1).values.diff(dim=-1) > 0).all()  # each token once


def test_many_ties_at_the_kth_widen_the_candidates(monkeypatch) -> None:
    vocab = 128 * 64
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(6))
    logits[0, 1000:1040] = 5.0  # 40 tokens tied at row 0's 3rd value, beyond the margin
    logits[0, 7] = 6.0
    logits[0, 9] = 5.5
    logits = logits.bfloat16().float()  # and the ties of bfloat16 logits in the other rows
    params = [SamplingParams(temperature=0.8, top_k=k, top_p=0.99) for k in (3, 20, 50)]
    meta = SamplingMetadata.build(params, [[]] * 3, [[]] * 3, {}, [[]] * 3, vocab, "cpu")
    compact = Sampler.target(logits, meta)
    assert compact.index is not None
    assert int(torch.isfinite(compact.full()[0]).sum()) == 42
    monkeypatch.setattr(sampler_module, "_COMPACT_MAX_K", 0)  # the whole-vocabulary path
    assert torch.equal(compact.full(), Sampler.target_logits(logits, meta))
