"""Grammar IR: every front end (regex, EBNF, JSON Schema, choice) lowers to these nodes.

Terminals are sets of bytes, so the whole engine works on UTF-8 bytes; Unicode character
classes are lowered to alternatives of byte-range sequences here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class GrammarError(ValueError):
    """The grammar, regex or schema is malformed or uses something we cannot enforce."""


@dataclass(frozen=True)
class Bytes:
    mask: int  # bit b set: byte b matches (a 256-bit set)


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    min: int
    max: int | None  # None: unbounded


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Intersect:
    """Strings both sides match (both must be regular: no rule references inside)."""

    left: Node
    right: Node


Node = Bytes | Seq | Alt | Repeat | Ref | Intersect

EMPTY = Seq(())
NOTHING = Alt(())


@dataclass
class Grammar:
    rules: dict[str, Node] = field(default_factory=dict)
    start: str = "root"

    def check(self) -> None:
        if self.start not in self.rules:
            raise GrammarError(f"start rule {self.start!r} is not defined")
        for name, node in self.rules.items():
            for ref in refs_in(node):
                if ref not in self.rules:
                    raise GrammarError(f"rule {name!r} refers to undefined rule {ref!r}")


def refs_in(node: Node) -> set[str]:
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Ref):
            out.add(n.name)
        elif isinstance(n, (Seq, Alt)):
            stack.extend(n.items)
        elif isinstance(n, Repeat):
            stack.append(n.item)
        elif isinstance(n, Intersect):
            stack.extend((n.left, n.right))
    return out


def surely_nullable(node: Node) -> bool:
    """Whether node surely matches the empty string (a rule reference counts as not)."""
    if isinstance(node, Seq):
        return all(surely_nullable(item) for item in node.items)
    if isinstance(node, Alt):
        return any(surely_nullable(item) for item in node.items)
    if isinstance(node, Repeat):
        return node.min == 0 or surely_nullable(node.item)
    if isinstance(node, Intersect):
        return surely_nullable(node.left) and surely_nullable(node.right)
    return False


def seq(*items: Node) -> Node:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Seq) else (item,))
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*items: Node) -> Node:
    return items[0] if len(items) == 1 else Alt(tuple(items))


def literal(text: str | bytes) -> Node:
    data = text.encode() if isinstance(text, str) else text
    return seq(*(Bytes(1 << b) for b in data)) if data else EMPTY


def opt(node: Node) -> Node:
    return Repeat(node, 0, 1)


# ---------------------------------------------------------------- Unicode character classes
MAX_CODE_POINT = 0x10FFFF
_SURROGATES = (0xD800, 0xDFFF)


def normalize_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def negate_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in normalize_ranges(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return out


def _utf8_split(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split [lo, hi] so each piece is aligned: its UTF-8 forms differ as byte ranges only."""
    for limit in (0x7F, 0x7FF, 0xFFFF):
        if lo <= limit < hi:
            return _utf8_split(lo, limit) + _utf8_split(limit + 1, hi)
    for i in range(1, 4):
        m = (1 << (6 * i)) - 1
        if lo & ~m != hi & ~m:
            if lo & m:
                return _utf8_split(lo, lo | m) + _utf8_split((lo | m) + 1, hi)
            if hi & m != m:
                return _utf8_split(lo, (hi & ~m) - 1) + _utf8_split(hi & ~m, hi)
    return [(lo, hi)]


def _byte_range(lo: int, hi: int) -> Bytes:
    return Bytes(((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1))


def char_class(ranges: list[tuple[int, int]]) -> Node:
    """Code point ranges -> a byte-level node matching exactly their UTF-8 encodings."""
    pieces: list[tuple[int, int]] = []
    for lo, hi in normalize_ranges(ranges):
        # Surrogates have no UTF-8 encoding.
        if lo <= _SURROGATES[1] and hi >= _SURROGATES[0]:
            if lo < _SURROGATES[0]:
                pieces += _utf8_split(lo, _SURROGATES[0] - 1)
            if hi > _SURROGATES[1]:
                pieces += _utf8_split(_SURROGATES[1] + 1, hi)
        else:
            pieces += _utf8_split(lo, hi)
    ascii_mask = 0
    options: list[Node] = []
    for lo, hi in pieces:
        a, b = chr(lo).encode(), chr(hi).encode()
        if len(a) == 1:
            ascii_mask |= _byte_range(a[0], b[0]).mask
        else:
            options.append(seq(*(_byte_range(x, y) for x, y in zip(a, b, strict=True))))
    if ascii_mask:
        options.insert(0, Bytes(ascii_mask))
    return alt(*options) if options else NOTHING
