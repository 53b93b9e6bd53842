"""Decimal integer ranges as automata: the classic digit-by-digit split of [lo, hi]."""

from __future__ import annotations

import math

from intaglio.structured.grammar.ir import EMPTY, NOTHING, Bytes, Node, Repeat, alt, literal, seq

DIGITS = Bytes(sum(1 << b for b in range(0x30, 0x3A)))
NONZERO = Bytes(sum(1 << b for b in range(0x31, 0x3A)))


def _digit_range(lo: int, hi: int) -> Node:
    return Bytes(sum(1 << (0x30 + d) for d in range(lo, hi + 1)))


def _fixed_width(lo: str, hi: str) -> Node:
    """Digit strings of equal width between lo and hi inclusive (leading zeros allowed)."""
    if not lo:
        return EMPTY
    a, b = int(lo[0]), int(hi[0])
    rest = len(lo) - 1
    if a == b:
        return seq(_digit_range(a, a), _fixed_width(lo[1:], hi[1:]))
    options = [seq(_digit_range(a, a), _fixed_width(lo[1:], "9" * rest))]
    if b - a > 1:
        options.append(seq(_digit_range(a + 1, b - 1), Repeat(DIGITS, rest, rest)))
    options.append(seq(_digit_range(b, b), _fixed_width("0" * rest, hi[1:])))
    return alt(*options)


def _nonneg(lo: int, hi: int | None) -> Node:
    """Canonical decimals (no leading zeros) of the integers in [lo, hi], 0 <= lo."""
    if hi is not None and hi < lo:
        return NOTHING
    options: list[Node] = []
    width = len(str(lo))
    while hi is None or width <= len(str(hi)):
        first = max(lo, 10 ** (width - 1) if width > 1 else 0)
        last = 10**width - 1 if hi is None else min(hi, 10**width - 1)
        if first <= last:
            options.append(_fixed_width(str(first), str(last)))
        if hi is None and width >= len(str(lo)):
            # Every longer number is in range.
            options.append(seq(NONZERO, Repeat(DIGITS, width, None)))
            break
        width += 1
    return alt(*options) if options else NOTHING


def integer_range(lo: int | None, hi: int | None) -> Node:
    """JSON integers n with lo <= n <= hi (None: unbounded on that side)."""
    options: list[Node] = []
    if hi is None or hi >= 0:
        options.append(_nonneg(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        # Negative n = -m with m in [max(1, -hi), -lo].
        m_lo = max(1, -hi) if hi is not None else 1
        m_hi = -lo if lo is not None else None
        if m_hi is None or m_lo <= m_hi:
            options.append(seq(literal("-"), _nonneg(m_lo, m_hi)))
    return alt(*options) if options else NOTHING


def integer_bounds(
    minimum: float | None, maximum: float | None, exclusive_min: bool, exclusive_max: bool
) -> tuple[int | None, int | None]:
    lo = None if minimum is None else math.ceil(minimum)
    if lo is not None and exclusive_min and lo == minimum:
        lo += 1
    hi = None if maximum is None else math.floor(maximum)
    if hi is not None and exclusive_max and hi == maximum:
        hi -= 1
    return lo, hi


def bounded_number(
    minimum: float | None, maximum: float | None, exclusive_min: bool, exclusive_max: bool
) -> Node:
    """JSON numbers within bounds, written without exponent (a sound subset).

    Integers in range, plus m.fff for whole parts m where every fraction stays in range:
    for m >= 0 the value lies in [m, m + 1); for -m it lies in (-(m + 1), -m].
    """
    lo, hi = integer_bounds(minimum, maximum, exclusive_min, exclusive_max)
    frac = seq(literal("."), Repeat(DIGITS, 1, None))
    options = [integer_range(lo, hi)]
    # Non-negative whole part m: need m >= minimum (> if exclusive) and m + 1 <= maximum.
    p_lo = (
        0
        if minimum is None
        else max(
            0, math.floor(minimum) + (1 if minimum != math.floor(minimum) or exclusive_min else 0)
        )
    )
    p_hi = None if maximum is None else math.floor(maximum) - 1
    if p_hi is None or p_lo <= p_hi:
        options.append(seq(_nonneg(p_lo, p_hi), frac))
    # Negative: -m.fff in (-(m+1), -m]; need -(m+1) >= minimum and -m <= maximum (< if excl.).
    n_hi = None if minimum is None else math.floor(-minimum) - 1
    if maximum is None:
        n_lo = 0
    else:
        n_lo = max(
            0, math.ceil(-maximum) + (1 if exclusive_max and -maximum == math.ceil(-maximum) else 0)
        )
    if n_hi is None or n_lo <= n_hi:
        options.append(seq(literal("-"), _nonneg(n_lo, n_hi), frac))
    return alt(*options)
