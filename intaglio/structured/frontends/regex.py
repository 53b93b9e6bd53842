"""Regular expressions -> grammar IR (a byte-level subset of Python `re` / ECMAScript syntax).

Supported: literals, escapes, `.`, classes `[...]` with ranges and negation, `\\d \\w \\s` and
their negations (ASCII meanings: a subset of what Python matches, so outputs still match),
groups `(...)`, `(?:...)`, `(?P<n>...)`, `(?<n>...)`, alternation, quantifiers `* + ? {m}
{m,} {m,n}` (lazy forms match the same language), and `^` / `$` at the ends. Backreferences,
lookaround, word boundaries and inline flags cannot be expressed by an automaton and raise.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from intaglio.structured.grammar.ir import (
    EMPTY,
    MAX_CODE_POINT,
    GrammarError,
    Node,
    Repeat,
    alt,
    char_class,
    negate_ranges,
    seq,
)

DIGIT = [(0x30, 0x39)]
WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}
_SIMPLE_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00, "a": 0x07}
MAX_REPEAT = 10_000
# Negated classes must exclude every character Python's Unicode \d, \w, \s would match, or
# a \S in the pattern could produce a character `re` reads as a space.
_UNICODE_PREDICATES = {
    "d": str.isdecimal,
    "w": lambda c: c.isalnum() or c == "_",
    "s": lambda c: c.isspace(),
}


@functools.cache
def _unicode_class(name: str) -> list[tuple[int, int]]:
    pred = _UNICODE_PREDICATES[name]
    ranges: list[tuple[int, int]] = []
    for cp in range(MAX_CODE_POINT + 1):
        if pred(chr(cp)):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return ranges


class _Parser:
    def __init__(self, pattern: str, exclude: list[tuple[int, int]]) -> None:
        self.p = pattern
        self.i = 0
        # Characters no class may produce (e.g. `"`, `\\` and controls inside a JSON string).
        self.exclude = exclude

    def error(self, msg: str) -> GrammarError:
        return GrammarError(f"regex {self.p!r} at position {self.i}: {msg}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def take(self) -> str:
        if self.i >= len(self.p):
            raise self.error("unexpected end of pattern")
        c = self.p[self.i]
        self.i += 1
        return c

    def chars(self, ranges: list[tuple[int, int]]) -> Node:
        if self.exclude:
            allowed = negate_ranges(self.exclude)
            ranges = [(max(lo, a), min(hi, b)) for lo, hi in ranges for a, b in allowed]
        return char_class(ranges)

    def parse(self) -> Node:
        if self.peek() == "^":
            self.i += 1
        node = self.alternation()
        if self.peek() == "$":
            self.i += 1
        if self.i != len(self.p):
            raise self.error(f"unexpected {self.p[self.i]!r}")
        return node

    def alternation(self) -> Node:
        options = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.concat())
        return alt(*options)

    def concat(self) -> Node:
        items: list[Node] = []
        while self.peek() not in (None, "|", ")"):
            if self.peek() == "$" and self.i == len(self.p) - 1:
                break
            items.append(self.quantified(self.atom()))
        return seq(*items) if items else EMPTY

    def quantified(self, node: Node) -> Node:
        while True:
            c = self.peek()
            if c == "*":
                lo, hi = 0, None
            elif c == "+":
                lo, hi = 1, None
            elif c == "?":
                lo, hi = 0, 1
            elif c == "{" and self._is_counted():
                self.i += 1
                lo, hi = self._counts()
                self.i -= 1
            else:
                return node
            self.i += 1
            if self.peek() == "?":  # lazy: same language
                self.i += 1
            elif self.peek() == "+":
                raise self.error("possessive quantifiers are not supported")
            if (hi or lo) > MAX_REPEAT:
                raise self.error(f"repetition count above {MAX_REPEAT}")
            node = Repeat(node, lo, hi)

    def _is_counted(self) -> bool:
        j = self.p.find("}", self.i)
        body = self.p[self.i + 1 : j] if j > 0 else ""
        parts = body.split(",")
        return (
            j > 0
            and len(parts) <= 2
            and parts[0].strip().isdigit()
            and (len(parts) == 1 or parts[1].strip() == "" or parts[1].strip().isdigit())
        )

    def _counts(self) -> tuple[int, int | None]:
        j = self.p.index("}", self.i)
        parts = self.p[self.i : j].split(",")
        self.i = j + 1
        lo = int(parts[0])
        hi: int | None = lo if len(parts) == 1 else (int(parts[1]) if parts[1].strip() else None)
        if hi is not None and hi < lo:
            raise self.error(f"bad repetition {{{lo},{hi}}}")
        return lo, hi

    def atom(self) -> Node:
        c = self.take()
        if c == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?P<", self.i) or (
                self.p.startswith("?<", self.i) and self.p[self.i + 2 : self.i + 3] not in "=!"
            ):
                self.i = self.p.index(">", self.i) + 1
            elif self.peek() == "?":
                raise self.error("lookaround and inline flags are not supported")
            node = self.alternation()
            if self.take() != ")":
                raise self.error("missing )")
            return node
        if c == "[":
            return self.chars(self.bracket())
        if c == ".":
            return self.chars([(0, 0x09), (0x0B, MAX_CODE_POINT)])
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?":
            raise self.error(f"nothing to repeat before {c!r}")
        if c in "^$":
            raise self.error(f"anchor {c!r} inside the pattern is not supported")
        return self.chars([(ord(c), ord(c))])

    def escape(self, in_class: bool) -> Node:
        ranges = self.escape_ranges(in_class)
        return self.chars(ranges)

    def escape_ranges(self, in_class: bool) -> list[tuple[int, int]]:
        c = self.take()
        if c.lower() in _CLASS_ESCAPES:
            ranges = _CLASS_ESCAPES[c.lower()]
            if c.isupper():
                return negate_ranges(ranges + _unicode_class(c.lower()))
            return list(ranges)
        if c in _SIMPLE_ESCAPES:
            return [(_SIMPLE_ESCAPES[c], _SIMPLE_ESCAPES[c])]
        if c == "b" and in_class:
            return [(0x08, 0x08)]
        if c in "xu":
            width = 2 if c == "x" else 4
            digits = self.p[self.i : self.i + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"bad \\{c} escape")
            self.i += width
            v = int(digits, 16)
            return [(v, v)]
        if c.isalnum():
            raise self.error(f"escape \\{c} is not supported (backreference or assertion)")
        return [(ord(c), ord(c))]

    def bracket(self) -> list[tuple[int, int]]:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.take()
            if c == "]" and not first:
                break
            first = False
            if c == "\\":
                got = self.escape_ranges(in_class=True)
                if len(got) != 1 or got[0][0] != got[0][1]:
                    ranges += got
                    continue
                lo = got[0][0]
            elif c == "[" and self.peek() == ":":
                raise self.error("POSIX classes [:name:] are not supported")
            else:
                lo = ord(c)
            hi = lo
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                d = self.take()
                if d == "\\":
                    got = self.escape_ranges(in_class=True)
                    if len(got) != 1 or got[0][0] != got[0][1]:
                        raise self.error("a class escape cannot end a range")
                    hi = got[0][0]
                else:
                    hi = ord(d)
                if hi < lo:
                    raise self.error(f"bad range {chr(lo)}-{chr(hi)}")
            ranges.append((lo, hi))
        return negate_ranges(ranges) if negate else ranges


def regex_to_ir(pattern: str, exclude: list[tuple[int, int]] | None = None) -> Node:
    """Compile `pattern` (matched whole, as re.fullmatch does) to a byte-level node.

    `exclude`: code point ranges removed from every class and literal (used for JSON strings,
    where `"`, `\\` and control characters must not appear unescaped).
    """
    return _Parser(pattern, exclude or []).parse()


def unwrap_group(pattern: str) -> str | None:
    """The inside of one group that wraps the whole pattern (`(?:...)` or `(...)`), else None
    (a group changes nothing about which strings match)."""
    if (pattern.startswith("(?:") or pattern.startswith("(") and not pattern.startswith("(?")) and (
        _group_end(pattern) == len(pattern) - 1
    ):
        return pattern[3:-1] if pattern.startswith("(?:") else pattern[1:-1]
    return None


def top_level_branches(pattern: str) -> list[str]:
    """The `|`-separated branches of pattern at nesting depth 0, looking through one group
    that wraps the whole pattern (`(?:a|b)` or `(a|b)`); [pattern] when there is no `|`."""
    body = unwrap_group(pattern) or pattern
    out, start = [], 0
    for i, c, depth in _structure(body):
        if c == "|" and depth == 0:
            out.append(body[start:i])
            start = i + 1
    return [*out, body[start:]] if out else [pattern]


def _group_end(pattern: str) -> int:
    """Index of the `)` closing the group opened at index 0 (-1 if unbalanced)."""
    for i, c, depth in _structure(pattern):
        if c == ")" and depth == 0:
            return i
    return -1


def _structure(pattern: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, group depth after it) of each char outside escapes and classes."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            depth += (c == "(") - (c == ")")
            yield i, c, depth
        i += 1
