"""Drawing one token per row by inverse transform sampling.

Each row takes one uniform u in [0, 1) (from its own generator when the request is seeded, so
its tokens never depend on its neighbours) and draws the first token, in token-id order, at
which the cumulative probability exceeds u. One uniform per row instead of one random variate
per vocabulary entry: the draw costs a softmax and a sum, not a random number generator run
over the whole vocabulary. The order is by token id whether a row's candidates are the whole
vocabulary or its top-k tokens, so both give the same token for the same u.

The cumulative sum is taken in two levels, blocks of `_BLOCK` tokens and then within the one
block that holds u, so no pass over the vocabulary is sequential.
"""

from __future__ import annotations

import torch

_BLOCK = 128
# The largest float64 below 1: a row's scaled uniform stays strictly inside its block.
_BELOW_ONE = 1.0 - 2.0**-53


def uniforms(
    num_rows: int, generators: dict[int, torch.Generator], device: torch.device | str
) -> torch.Tensor:
    """[B] float64 in [0, 1): seeded rows from their own generator, the rest from the global
    one (a single call for the batch)."""
    if len(generators) < num_rows:
        u = torch.rand(num_rows, dtype=torch.float64, device=device)
    else:
        u = torch.empty(num_rows, dtype=torch.float64, device=device)
    for row, generator in generators.items():
        u[row] = torch.rand((), dtype=torch.float64, generator=generator, device=generator.device)
    return u


def _last_positive(weights: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's last positive entry (0 where none is)."""
    width = weights.shape[1]
    positions = torch.arange(width, device=weights.device)
    return torch.where(weights > 0, positions, 0).amax(dim=-1)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[B, C] nonnegative weights (each row with some positive), [B] uniforms -> [B] int64
    column of the first entry whose cumulative weight exceeds u times the row's total.

    A zero-weight entry is never chosen: the chosen one is where the cumulative sum rises.
    """
    rows, width = probs.shape
    block = min(_BLOCK, width)
    padded = -width % block
    if padded:  # a vocabulary that is not a multiple of the block: zero weights at the end
        probs = torch.nn.functional.pad(probs, (0, padded))
    blocks = probs.view(rows, -1, block)
    sums = blocks.sum(dim=-1).double()  # [B, nb]
    prefix = sums.cumsum(dim=-1)
    goal = u * prefix[:, -1]
    # The block holding the goal: the first whose prefix exceeds it, or the last with mass.
    j = torch.minimum((prefix <= goal[:, None]).sum(dim=-1), _last_positive(sums))
    before = torch.where(j > 0, prefix.gather(1, (j - 1).clamp_min(0)[:, None]).squeeze(1), 0.0)
    # Where the goal lies inside that block, as a fraction of its mass.
    fraction = ((goal - before) / sums.gather(1, j[:, None]).squeeze(1)).clamp(0.0, _BELOW_ONE)
    inside = blocks[torch.arange(rows, device=probs.device), j]  # [B, block]
    cumulative = inside.double().cumsum(dim=-1)
    k = (cumulative <= (fraction * cumulative[:, -1])[:, None]).sum(dim=-1)
    return j * block + torch.minimum(k, _last_positive(inside))
