"""Lossless verification of draft tokens by coupled sampling.

Every position p of a sequence (prompt and output) draws its token from the target by inverse
transform sampling with one uniform U_p (sampling/draw.py). With speculation the noise U_p is
the same function of (seed, p) as without it, so verifying k drafts only decides how many
positions one step covers: position p's token is the one plain decoding would draw, and the
draft d_p is kept exactly when it equals it.
For a deterministic draft this is the classic rule with a one-hot q: accept with probability
min(1, p(d) / 1) = p(d), and on rejection the token is distributed as p with d removed,
norm(max(0, p - q)). Hence the output distribution is the target's (lossless) and a seeded
request gives the same tokens with and without speculation.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1


def position_seed(seed: int, position: int) -> int:
    """The noise seed of sequence position `position` of a request seeded with `seed` (so a
    fork continues as a new request with the fork's tokens as prompt would).

    splitmix64 of the pair, so nearby seeds (n > 1 samples use seed + i) and nearby positions
    give unrelated streams; the result fits torch.Generator.manual_seed.
    """
    z = (seed * 0x9E3779B97F4A7C15 + position * 0xBF58476D1CE4E5B9 + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def accepted_tokens(drawn: list[int], drafts: list[int]) -> list[int]:
    """The tokens one verification step emits.

    drawn[i] is the token the target draws at the i-th verified position (len(drafts) + 1 of
    them); the drafts are kept while they equal what was drawn, then the first differing draw
    (or, with every draft kept, the bonus token after them) ends the step.
    """
    assert len(drawn) == len(drafts) + 1
    out = []
    for token, draft in zip(drawn, [*drafts, None]):
        out.append(token)
        if token != draft:
            break
    return out
