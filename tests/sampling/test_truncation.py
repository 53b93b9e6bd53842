"""The truncation samplers against HF transformers' warpers (typical, epsilon, eta) and their
formulas (top-nσ, XTC, Mirostat v2) on synthetic logits, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from intaglio.sampling.truncation import (
    apply_epsilon_cutoff,
    apply_eta_cutoff,
    apply_mirostat,
    apply_top_n_sigma,
    apply_typical_p,
    apply_xtc,
    mirostat_next_mu,
)

warpers = pytest.importorskip("transformers.generation.logits_process")
NEG = float("-inf")


def _cases(vocab: int = 97) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(4, vocab, generator=g) * 3
    ties = torch.zeros(2, vocab)
    ties[:, :5] = 2.0  # five tied leaders
    masked = torch.randn(2, vocab, generator=g)
    masked[:, ::3] = NEG  # -inf logits (a grammar, bans)
    one = torch.full((1, vocab), NEG)
    one[0, 7] = 0.0  # all masked but one
    padded = torch.cat([torch.randn(2, vocab - 9, generator=g), torch.full((2, 9), NEG)], 1)
    return {"normal": normal, "ties": ties, "masked": masked, "one": one, "padded": padded}


CASES = _cases()


def _kept(logits: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(logits)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mass", [0.2, 0.5, 0.9, 0.99])
def test_typical_matches_hf(case, mass):
    logits = CASES[case]
    ours = apply_typical_p(logits, torch.full((logits.shape[0],), mass))
    hf = warpers.TypicalLogitsWarper(mass=mass)(None, logits.clone())
    assert torch.equal(_kept(ours), _kept(hf))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("epsilon", [1e-4, 3e-3, 0.02, 0.3])
def test_epsilon_matches_hf(case, epsilon):
    logits = CASES[case]
    ours = apply_epsilon_cutoff(logits, torch.full((logits.shape[0],), epsilon))
    hf = warpers.EpsilonLogitsWarper(epsilon=epsilon)(None, logits.clone())
    assert torch.equal(_kept(ours), _kept(hf))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("eta", [1e-4, 3e-3, 0.02, 0.3])
def test_eta_matches_hf(case, eta):
    logits = CASES[case]
    ours = apply_eta_cutoff(logits, torch.full((logits.shape[0],), eta))
    hf = warpers.EtaLogitsWarper(epsilon=eta, device="cpu")(None, logits.clone())
    assert torch.equal(_kept(ours), _kept(hf))


def test_disabled_rows_are_untouched_in_a_mixed_batch():
    logits = CASES["normal"]
    rows = logits.shape[0]
    on = torch.tensor([True, False, True, False])
    for fn, enabled, disabled in (
        (apply_typical_p, 0.5, 1.0),
        (apply_epsilon_cutoff, 0.02, 0.0),
        (apply_eta_cutoff, 0.02, 0.0),
        (apply_top_n_sigma, 0.5, -1.0),
    ):
        setting = torch.where(on, enabled, disabled).float()
        out = fn(logits, setting)
        assert torch.equal(out[~on], logits[~on]), fn.__name__
        alone = fn(logits[on], torch.full((int(on.sum()),), enabled))
        assert torch.equal(out[on], alone), fn.__name__
    assert rows == 4


def ref_top_n_sigma(row: np.ndarray, n: float) -> np.ndarray:
    finite = row[np.isfinite(row)].astype(np.float64)
    return row >= finite.max() - n * finite.std()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n", [0.0, 0.5, 1.0, 2.5])
def test_top_n_sigma_matches_formula_and_ignores_temperature(case, n):
    logits = CASES[case]
    ours = apply_top_n_sigma(logits, torch.full((logits.shape[0],), n))
    ref = np.stack([ref_top_n_sigma(r, n) for r in logits.double().numpy()])
    assert np.array_equal(_kept(ours).numpy(), ref)
    for temperature in (0.05, 0.7, 50.0):  # the kept set is the same at any temperature
        tempered = apply_top_n_sigma(logits / temperature, torch.full((logits.shape[0],), n))
        assert torch.equal(_kept(tempered), _kept(ours))


def test_top_n_sigma_far_from_zero_and_with_masked_logits():
    # A mean far from zero (the one-pass variance would lose its digits), and -inf logits.
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5000, generator=g) * 0.5 + torch.tensor([[1000.0], [-3000.0], [0.0]])
    logits[2, ::4] = NEG
    for n in (0.3, 1.0, 2.0):
        ours = apply_top_n_sigma(logits, torch.full((3,), n))
        ref = np.stack([ref_top_n_sigma(r, n) for r in logits.double().numpy()])
        assert np.array_equal(_kept(ours).numpy(), ref)
        assert 1 < int(_kept(ours).sum()) < 3 * 5000


def ref_xtc(row: np.ndarray, threshold: float) -> np.ndarray:
    """llama.cpp: sort by prob; if >= 2 tokens reach threshold, drop all of them but the last."""
    probs = np.exp(row - row[np.isfinite(row)].max())
    probs /= probs.sum()
    above = np.flatnonzero(probs >= threshold)
    keep = np.isfinite(row)
    if len(above) >= 2:
        least = probs[above].min()
        keep[above[probs[above] > least]] = False
    return keep


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.05, 0.1, 0.3])
def test_xtc_matches_llama_cpp(case, threshold):
    logits = CASES[case]
    active = torch.ones(logits.shape[0], dtype=torch.bool)
    ours = apply_xtc(logits, torch.full((logits.shape[0],), threshold), active)
    ref = np.stack([ref_xtc(r, threshold) for r in logits.double().numpy()])
    assert np.array_equal(_kept(ours).numpy(), ref)
    idle = apply_xtc(logits, torch.full((logits.shape[0],), threshold), ~active)
    assert torch.equal(idle, logits)


def test_xtc_keeps_the_least_likely_top_choice():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = apply_xtc(logits, torch.tensor([0.1]), torch.tensor([True]))
    assert _kept(out).tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mu", [0.0, 1.0, 3.0, 6.0, 20.0])
def test_mirostat_keeps_tokens_within_surprise_mu(case, mu):
    logits = CASES[case]
    out = apply_mirostat(logits, torch.full((logits.shape[0],), mu))
    for row, kept in zip(logits.double().numpy(), _kept(out).numpy()):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        with np.errstate(divide="ignore"):
            ref = -np.log2(probs) <= mu + 1e-9
        ref |= row == row.max()  # llama.cpp keeps at least the most likely token
        assert np.array_equal(kept, ref)


def test_mirostat_update_follows_llama_cpp():
    target = torch.log(torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.9, 0.1, 0.0, 0.0]]))
    mu = torch.tensor([6.0, 10.0])
    tau, eta = torch.tensor([5.0, 3.0]), torch.tensor([0.1, 0.2])
    logp = target.log_softmax(-1).gather(1, torch.tensor([[1], [0]])).squeeze(1)
    new = mirostat_next_mu(logp, mu, tau, eta)
    expect = [6.0 - 0.1 * (2.0 - 5.0), 10.0 - 0.2 * (-math.log2(0.9) - 3.0)]
    assert new.tolist() == pytest.approx(expect)
