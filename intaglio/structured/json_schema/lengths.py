"""minLength/maxLength folded into a pattern that repeats one character class.

`{"pattern": "^[a-z0-9_]+$", "maxLength": 30}` intersected as two automata has a product
state for every (pattern state, length) pair: all distinct, none on a cycle, so each first
visit costs a full vocabulary walk. When the pattern is one character class repeated
(`^C+$`, `^C*$`, `^C{m,n}$`), each of its characters is one JSON string character written
as itself, so the intersection is simply the class repeated within both bounds: a bounded
repeat, which the automaton builds as a chain of identical copies (runtime/chains.py) whose masks
one counting vocabulary walk answers.
"""

from __future__ import annotations

from intaglio.structured.grammar.ir import Alt, Bytes, Node, Repeat, Seq

_ASCII = (1 << 0x80) - 1
# Bytes a JSON string must escape: controls, the quote and the backslash.
_ESCAPED = ((1 << 0x20) - 1) | (1 << 0x22) | (1 << 0x5C)
_CONTINUATION = ((1 << 0xC0) - 1) ^ ((1 << 0x80) - 1)
# Lead bytes by encoded length.
_LEADS = {
    2: ((1 << 0xE0) - 1) ^ ((1 << 0xC0) - 1),
    3: ((1 << 0xF0) - 1) ^ ((1 << 0xE0) - 1),
    4: ((1 << 0xF8) - 1) ^ ((1 << 0xF0) - 1),
}


def _subset(mask: int, allowed: int) -> bool:
    return mask != 0 and mask & ~allowed == 0


def one_character(node: Node) -> bool:
    """Whether every string `node` matches is exactly one character that a JSON string
    writes unescaped. Multi-byte forms are trusted to be valid UTF-8: pattern classes are
    lowered by ir.char_class, which emits only valid encodings."""
    if isinstance(node, Bytes):
        return _subset(node.mask, _ASCII & ~_ESCAPED)
    if isinstance(node, Seq):
        items = [b for b in node.items if isinstance(b, Bytes)]
        lead = _LEADS.get(len(node.items))
        return (
            lead is not None
            and len(items) == len(node.items)
            and _subset(items[0].mask, lead)
            and all(_subset(b.mask, _CONTINUATION) for b in items[1:])
        )
    if isinstance(node, Alt):
        return bool(node.items) and all(one_character(item) for item in node.items)
    return False


def bounded_class_repeat(pattern: Node, min_len: int, max_len: int | None) -> Node | None:
    """`pattern` (the anchored string body) within the length bounds as one bounded repeat,
    or None when the pattern is not one character class repeated, or no length fits both."""
    if not isinstance(pattern, Repeat) or not one_character(pattern.item):
        return None
    lo = max(pattern.min, min_len)
    bounds = [b for b in (pattern.max, max_len) if b is not None]
    hi = min(bounds) if bounds else None
    if hi is not None and hi < lo:
        return None  # empty: left to the general path, which reports it
    return Repeat(pattern.item, lo, hi)
