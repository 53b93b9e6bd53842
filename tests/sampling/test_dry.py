"""DRY against a direct transcription of llama.cpp's definition (per row, per position)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from intaglio.sampling.dry import DryBreakers, DryRows, apply_dry_

VOCAB = 12


def ref_dry(
    history: list[int], mult: float, base: float, allowed: int, breakers: DryBreakers
) -> np.ndarray:
    out = np.zeros(VOCAB)
    n = len(history)
    ends = [e for e in range(n) if history[e] in breakers.single]
    for seq in breakers.sequences:
        k = len(seq)
        ends += [e for e in range(k - 1, n) if tuple(history[e - k + 1 : e + 1]) == seq]
    rep_limit = n - 1 - max(ends) if ends else n
    if rep_limit < allowed:
        return out
    longest: dict[int, int] = {}
    for j in range(n - 1):
        length = 0
        while (
            length < rep_limit and j - length >= 0 and history[j - length] == history[-1 - length]
        ):
            length += 1
        if length >= allowed:
            token = history[j + 1]
            longest[token] = max(longest.get(token, 0), length)
    max_exp = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    for token, length in longest.items():
        if token in breakers.single:
            continue
        exponent = length - allowed
        if max_exp > 0 and exponent > max_exp:
            exponent = max_exp
        out[token] = mult * base**exponent
    return out


def _run(histories, mult, base, allowed, breakers) -> np.ndarray:
    rows = DryRows.build(
        list(range(len(histories))), histories, mult, base, allowed, breakers, "cpu"
    )
    logits = torch.zeros(len(histories), VOCAB)
    table = torch.zeros(len(histories), VOCAB + 1)
    apply_dry_(logits, rows, table)
    assert not table.any()  # the scratch is left zeroed for the next user
    return -logits.double().numpy()


NONE = DryBreakers((), ())
NEWLINE = DryBreakers((0,), ())  # token 0 plays "\n"
SPLIT = DryBreakers((0,), ((5, 6),))  # and a breaker the tokenizer splits into 5, 6


def test_the_textbook_example():
    # llama.cpp's comment: "a b c c b c y a b c" -> c extends "a b c" (3), b extends "c" (1),
    # y extends "b c" (2); with allowed_length 2: c gets base**1, y gets base**0.
    a, b, c, y = 1, 2, 3, 4
    out = _run([[a, b, c, c, b, c, y, a, b, c]], [1.0], [2.0], [2], [NONE])[0]
    assert out[c] == pytest.approx(2.0) and out[y] == pytest.approx(1.0)
    assert out[b] == 0.0 and out[a] == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_random_histories_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    histories, mult, base, allowed, breakers = [], [], [], [], []
    for _ in range(6):
        alphabet = int(rng.integers(2, VOCAB))
        length = int(rng.integers(0, 60))
        motif = list(rng.integers(1, alphabet, size=int(rng.integers(1, 6))))
        h = []
        while len(h) < length:  # repeated motifs with noise: long and short repeats
            h += motif if rng.random() < 0.6 else [int(rng.integers(0, alphabet))]
        histories.append([int(t) for t in h[:length]])
        mult.append(float(rng.uniform(0.1, 2.0)))
        base.append(float(rng.choice([1.0, 1.2, 1.75, 3.0])))
        allowed.append(int(rng.integers(1, 5)))
        breakers.append([NONE, NEWLINE, SPLIT][int(rng.integers(0, 3))])
    ours = _run(histories, mult, base, allowed, breakers)
    for i, h in enumerate(histories):
        ref = ref_dry(h, mult[i], base[i], allowed[i], breakers[i])
        np.testing.assert_allclose(ours[i], ref, rtol=1e-5, err_msg=f"row {i}: {h}")


def test_breakers_limit_the_repeat_and_are_never_penalized():
    h = [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]
    out = _run([h, h], [1.0, 1.0], [2.0, 2.0], [2, 2], [NONE, NEWLINE])
    # Without breakers, 0 extends "1 2 3 0 1 2 3" (length 7): 2 ** (7 - 2).
    assert out[0][0] == pytest.approx(2.0**5)
    # With 0 a breaker the repeat may not reach back past it, and 0 itself is free.
    assert not out[1].any()
    np.testing.assert_allclose(out[1], ref_dry(h, 1.0, 2.0, 2, NEWLINE))


def test_a_long_loop_saturates_instead_of_overflowing():
    h = [1, 2] * 400  # repeats far longer than the exponent clamp
    out = _run([h], [0.8], [1.75], [2], [NONE])[0]
    assert np.isfinite(out).all() and out.max() > 1e30
    np.testing.assert_allclose(out, ref_dry(h, 0.8, 1.75, 2, NONE), rtol=1e-5)
