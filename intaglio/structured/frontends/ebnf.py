"""Context-free grammars in text: GBNF / EBNF (`name ::= ...`) and a Lark subset (`name: ...`).

Both dialects: `"literal"` and `'literal'` (with escapes), alternation `|`, grouping `( )`,
repetition `* + ?` and `{m}`, `{m,}`, `{m,n}`, and rule references. GBNF adds `[a-z]`
character classes and `.`; Lark adds `/regex/`, `[optional]`, `"a".."z"` ranges, `?rule` and
`rule.N` (inlining and priority are ignored) and `%import common.NAME` for a few common
terminals. The start rule is `root` (GBNF), `start` (Lark), or else the first rule.
Implicit whitespace (`%ignore`) is not supported: write whitespace into the grammar.
"""

from __future__ import annotations

import re

from intaglio.structured.frontends.regex import regex_to_ir
from intaglio.structured.grammar.ir import (
    EMPTY,
    Grammar,
    GrammarError,
    Node,
    Ref,
    Repeat,
    alt,
    char_class,
    literal,
    opt,
    seq,
)

_COMMON = {
    "DIGIT": r"[0-9]",
    "HEXDIGIT": r"[a-fA-F0-9]",
    "INT": r"[0-9]+",
    "SIGNED_INT": r"[+-]?[0-9]+",
    "NUMBER": r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?",
    "SIGNED_NUMBER": r"[+-]?([0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?)",
    "LETTER": r"[a-zA-Z]",
    "WORD": r"[a-zA-Z]+",
    "CNAME": r"[a-zA-Z_][a-zA-Z0-9_]*",
    "WS": r"[ \t\f\r\n]+",
    "WS_INLINE": r"[ \t]+",
    "NEWLINE": r"(\r?\n)+",
    "ESCAPED_STRING": r'"([^"\\]|\\.)*"',
}
_NAME = re.compile(r"[?!]?([A-Za-z_][A-Za-z0-9_\-]*)(\.-?\d+)?")


class _Parser:
    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.lark = False

    def error(self, msg: str) -> GrammarError:
        line = self.t.count("\n", 0, self.i) + 1
        return GrammarError(f"grammar line {line}: {msg}")

    def skip(self, newlines: bool = True) -> None:
        while self.i < len(self.t):
            c = self.t[self.i]
            if c == "#" or self.t.startswith("//", self.i):
                j = self.t.find("\n", self.i)
                self.i = len(self.t) if j < 0 else j
            elif c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            else:
                break

    def rule_head(self) -> tuple[str, str] | None:
        """At a rule definition `name ::=` / `name:` return (name, dialect), else None."""
        m = _NAME.match(self.t, self.i)
        if not m:
            return None
        j = m.end()
        while j < len(self.t) and self.t[j] in " \t":
            j += 1
        if self.t.startswith("::=", j):
            self.i = j + 3
            return m.group(1), "gbnf"
        if self.t.startswith(":", j) and not self.t.startswith("::", j):
            self.i = j + 1
            return m.group(1), "lark"
        return None

    def grammar(self) -> Grammar:
        rules: dict[str, Node] = {}
        order: list[str] = []
        self.skip()
        while self.i < len(self.t):
            if self.t.startswith("%", self.i):
                self.directive(rules)
                self.skip()
                continue
            head = self.rule_head()
            if head is None:
                raise self.error("expected a rule definition `name ::= ...` or `name: ...`")
            name, dialect = head
            self.lark = dialect == "lark"
            if name in rules:
                raise self.error(f"rule {name!r} is defined twice")
            rules[name] = self.alternation()
            order.append(name)
            self.skip()
        if not order:
            raise GrammarError("the grammar defines no rule")
        start = next((s for s in ("root", "start") if s in rules), order[0])
        grammar = Grammar(rules, start)
        grammar.check()
        return grammar

    def directive(self, rules: dict[str, Node]) -> None:
        end = self.t.find("\n", self.i)
        line = self.t[self.i : len(self.t) if end < 0 else end].strip()
        self.i = len(self.t) if end < 0 else end
        m = re.fullmatch(r"%import\s+common\.([A-Z_]+)(\s*->\s*(\w+))?", line)
        if m and m.group(1) in _COMMON:
            rules[m.group(3) or m.group(1)] = regex_to_ir(_COMMON[m.group(1)])
            return
        raise self.error(f"directive {line!r} is not supported")

    def at_rule_end(self) -> bool:
        """A newline ends a rule unless the next line continues it (`|` or indentation)."""
        save = self.i
        self.skip(newlines=False)
        if self.i >= len(self.t):
            return True
        if self.t[self.i] != "\n":
            return False
        self.skip()
        if self.i >= len(self.t) or self.t[self.i] == "%" or self.rule_head() is not None:
            self.i = save
            return True
        return False

    def alternation(self) -> Node:
        options = [self.sequence()]
        while True:
            self.skip()
            if self.i < len(self.t) and self.t[self.i] == "|":
                self.i += 1
                options.append(self.sequence())
            else:
                return alt(*options)

    def sequence(self) -> Node:
        items: list[Node] = []
        while True:
            if self.at_rule_end():
                break
            self.skip()
            c = self.t[self.i] if self.i < len(self.t) else ""
            if c in ("", "|", ")", "]"):
                break
            items.append(self.postfix(self.atom()))
        return seq(*items) if items else EMPTY

    def postfix(self, node: Node) -> Node:
        while self.i < len(self.t):
            c = self.t[self.i]
            if c in "*+?":
                self.i += 1
                node = Repeat(node, 1 if c == "+" else 0, 1 if c == "?" else None)
            elif c == "{":
                m = re.match(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}", self.t[self.i :])
                if not m:
                    raise self.error("bad repetition {m,n}")
                self.i += m.end()
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                node = Repeat(node, lo, hi)
            else:
                return node
        return node

    def string(self) -> str:
        quote = self.t[self.i]
        j = self.i + 1
        out = []
        while j < len(self.t) and self.t[j] != quote:
            if self.t[j] == "\\":
                j += 1
                esc = self.t[j : j + 1]
                simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
                if esc in simple:
                    out.append(simple[esc])
                elif esc in "xu":
                    width = 2 if esc == "x" else 4
                    out.append(chr(int(self.t[j + 1 : j + 1 + width], 16)))
                    j += width
                else:
                    out.append("\\" + esc)
            else:
                out.append(self.t[j])
            j += 1
        if j >= len(self.t):
            raise self.error("unterminated string")
        self.i = j + 1
        if self.lark and self.t.startswith("i", self.i):
            raise self.error("case-insensitive literals are not supported")
        return "".join(out)

    def atom(self) -> Node:
        c = self.t[self.i]
        if c in "\"'":
            text = self.string()
            if self.lark and self.t.startswith("..", self.i):
                self.i += 2
                hi = self.string()
                if len(text) != 1 or len(hi) != 1:
                    raise self.error("a range needs single characters")
                return char_class([(ord(text), ord(hi))])
            return literal(text)
        if c == "(":
            self.i += 1
            node = self.alternation()
            self.skip()
            if self.t[self.i : self.i + 1] != ")":
                raise self.error("missing )")
            self.i += 1
            return node
        if c == "[" and self.lark:
            self.i += 1
            node = self.alternation()
            self.skip()
            if self.t[self.i : self.i + 1] != "]":
                raise self.error("missing ]")
            self.i += 1
            return opt(node)
        if c == "[":
            j = self.i + 1
            while j < len(self.t) and self.t[j] != "]":
                j += 2 if self.t[j] == "\\" else 1
            if j >= len(self.t):
                raise self.error("unterminated character class")
            node = regex_to_ir(self.t[self.i : j + 1])
            self.i = j + 1
            return node
        if c == "/":
            m = re.match(r"/((?:[^/\\\n]|\\.)+)/([imsxlu]*)", self.t[self.i :])
            if not m:
                raise self.error("bad /regex/")
            if m.group(2):
                raise self.error(f"regex flags {m.group(2)!r} are not supported")
            self.i += m.end()
            return regex_to_ir(m.group(1))
        if c == ".":
            self.i += 1
            return regex_to_ir(".")
        m = _NAME.match(self.t, self.i)
        if m:
            self.i = m.end()
            return Ref(m.group(1))
        raise self.error(f"unexpected {c!r}")


def ebnf_to_grammar(text: str) -> Grammar:
    return _Parser(text).grammar()
