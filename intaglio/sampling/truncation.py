"""Truncation samplers beyond top-k/top-p/min-p: each drops tokens from [B, V] logits by
setting them to -inf, with per-row settings ([B] tensors) and no loop over the vocabulary.

Definitions: top-nσ (Tang et al. 2024, as in llama.cpp), typical, epsilon and eta (as HF
transformers' logits warpers), XTC (llama.cpp) and Mirostat v2 (llama.cpp). Each function
leaves a row untouched where its setting is disabled, and always keeps at least one token.
"""

from __future__ import annotations

import math

import torch

_NEG_INF = float("-inf")


def top_n_sigma_threshold(logits: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """[B, 1]: max - n * std over each row's finite logits; -inf where n < 0 (disabled).

    Scaling the logits scales max and std alike, so the kept set does not depend on temperature.
    """
    width = logits.shape[1]
    # One pass each for the sum and the sum of squares; var = E[x^2] - mean^2 in float64.
    mean = logits.sum(dim=-1).double() / width
    var = torch.linalg.vector_norm(logits, dim=-1).double() ** 2 / width - mean**2
    # Rows with -inf logits (bans, a grammar), and rows whose mean is so far from zero that the
    # difference above would lose digits, take the two-pass formula over the finite logits.
    exact = ~torch.isfinite(mean) | (mean**2 > 16.0 * var)
    if bool(exact.any()):
        rows = logits[exact].double()
        finite = torch.isfinite(rows)
        count = finite.sum(dim=-1).clamp_min(1)
        row_mean = torch.where(finite, rows, 0.0).sum(dim=-1) / count
        squares = torch.where(finite, (rows - row_mean[:, None]) ** 2, 0.0)
        var[exact] = squares.sum(dim=-1) / count
    std = var.clamp_min(0.0).sqrt().float()[:, None]
    threshold = logits.amax(dim=-1, keepdim=True) - n[:, None] * std
    return torch.where((n >= 0)[:, None], threshold, _NEG_INF)


def apply_top_n_sigma(logits: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Keep logits >= max - n * std (std over the finite logits); n < 0 disables a row."""
    return logits.masked_fill(logits < top_n_sigma_threshold(logits, n), _NEG_INF)


def apply_typical_p(logits: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to
    `mass` probability; ties with the last kept token are kept. mass 1 disables a row."""
    logp = logits.log_softmax(dim=-1)
    probs = logp.exp()
    entropy = torch.special.entr(probs).sum(dim=-1, keepdim=True)
    distance = (-logp - entropy).abs()  # +inf for masked tokens: sorted last
    sorted_distance, order = distance.sort(dim=-1)
    cumulative = probs.gather(1, order).cumsum(dim=-1)
    last = (cumulative < mass[:, None]).sum(dim=-1, keepdim=True).clamp_max(logits.shape[1] - 1)
    drop_sorted = sorted_distance > sorted_distance.gather(1, last)
    drop_sorted[:, 0] = False
    drop = torch.empty_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop & (mass < 1.0)[:, None], _NEG_INF)


def _drop_below(logits: torch.Tensor, probs: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """Drop tokens with prob < cutoff [B, 1], never the most likely one."""
    drop = (probs < cutoff) & (logits < logits.amax(dim=-1, keepdim=True))
    return logits.masked_fill(drop, _NEG_INF)


def apply_epsilon_cutoff(logits: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Drop tokens with probability < epsilon; 0 disables a row."""
    return _drop_below(logits, logits.softmax(dim=-1), epsilon[:, None])


def apply_eta_cutoff(logits: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """Drop tokens with probability < min(eta, sqrt(eta) * exp(-entropy)); 0 disables a row."""
    probs = logits.softmax(dim=-1)
    entropy = torch.special.entr(probs).sum(dim=-1, keepdim=True)
    cutoff = torch.minimum(eta[:, None], eta.sqrt()[:, None] * (-entropy).exp())
    return _drop_below(logits, probs, cutoff)


def apply_xtc(logits: torch.Tensor, threshold: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Exclude Top Choices: in `active` rows with at least two tokens of probability >=
    threshold, drop all of those but the least likely (ties with it are all kept)."""
    probs = logits.softmax(dim=-1)
    above = probs >= threshold[:, None]
    least = torch.where(above, probs, math.inf).amin(dim=-1, keepdim=True)
    enough = (above.sum(dim=-1) >= 2) & active
    return logits.masked_fill(above & (probs > least) & enough[:, None], _NEG_INF)


def apply_mirostat(logits: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mirostat v2: keep tokens whose surprise -log2 p is at most mu (at least the most likely
    token). mu = +inf disables a row."""
    surprise = -logits.log_softmax(dim=-1) / math.log(2.0)
    keep = (surprise <= mu[:, None]) | (logits == logits.amax(dim=-1, keepdim=True))
    return logits.masked_fill(~keep, _NEG_INF)


def mirostat_next_mu(
    token_logprob: torch.Tensor, mu: torch.Tensor, tau: torch.Tensor, eta: torch.Tensor
) -> torch.Tensor:
    """mu after drawing a token of log-probability token_logprob [B]: mu - eta * (observed
    surprise - tau), the surprise measured on the distribution the token was drawn from (as
    llama.cpp)."""
    return mu - eta * (-token_logprob / math.log(2.0) - tau)
