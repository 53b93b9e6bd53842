"""Members of a JSON object (or the items of a uniqueItems array from a finite list) as a
chain of rules: listed entries in order, each optional one maybe, then free entries, with a
count of entries written so far for minProperties / maxProperties (minItems / maxItems)."""

from __future__ import annotations

from typing import Any, Protocol

from intaglio.structured.grammar.ir import (
    NOTHING,
    GrammarError,
    Node,
    Ref,
    Repeat,
    alt,
    literal,
    opt,
    seq,
)
from intaglio.structured.json_schema.keywords import count
from intaglio.structured.json_schema.values import finite_values

MAX_COUNTED = 64  # min/maxProperties beyond what required implies: one state per count


def member_chain(
    rules: dict[str, Node],
    base: str,
    names: list[str],
    entries: list[Node],
    required: set[str],
    extra: Node | None,
    lo: int,
    hi: int | None,
    ws: Node,
    brackets: str,
) -> Node:
    """Rule f"{base}{i}_{c}": entries i.. with c written so far (saturating at `top`, which is
    enough to tell lo, hi and whether the next entry needs a comma)."""
    if lo <= len(required) and (hi is None or hi >= len(names) and extra is None):
        lo, hi = 0, None  # implied by what is required and what can be written
    top = max(1, lo, 0 if hi is None else hi if extra else min(hi, len(names)))
    if top > MAX_COUNTED:
        raise GrammarError(f"minProperties/maxProperties above {MAX_COUNTED} are not supported")
    comma = seq(ws, literal(","), ws)
    for i in range(len(names), -1, -1):
        for c in range(top + 1):
            if i == len(names):
                node = free_members(extra, comma, c, lo, hi)
            else:
                # Entry i and what follows it, as one rule: reached with or without a comma,
                # it is built once (nested objects would otherwise double per level).
                node = NOTHING
                if hi is None or c < hi:
                    after = min(c + 1, top)
                    entry = f"{base}e{i}_{after}"
                    if entry not in rules:
                        rules[entry] = seq(entries[i], Ref(f"{base}{i + 1}_{after}"))
                    node = seq(comma if c else seq(), Ref(entry))
                if names[i] not in required:
                    node = alt(node, Ref(f"{base}{i + 1}_{c}"))
            rules[f"{base}{i}_{c}"] = node
    return seq(literal(brackets[0]), ws, Ref(f"{base}0_0"), ws, literal(brackets[1]))


def free_members(extra: Node | None, comma: Node, c: int, lo: int, hi: int | None) -> Node:
    """Free entries after the listed ones, c entries written already."""
    need = max(0, lo - c)
    room = None if hi is None else hi - c
    if extra is None or room == 0:
        return seq() if need == 0 else NOTHING
    if c:
        return Repeat(seq(comma, extra), need, room)
    rest = Repeat(seq(comma, extra), max(need - 1, 0), None if room is None else room - 1)
    return seq(extra, rest) if need else opt(seq(extra, rest))


MAX_UNIQUE_VALUES = 64  # a longer list of unique item values: one item (a chain per value)


class Compiler(Protocol):
    def resolve(self, ref: str) -> Any: ...

    def pattern(self, pattern: str) -> Node: ...

    def array(self, schema: dict[str, Any]) -> Node: ...

    def json_literal(self, value: Any) -> Node: ...

    def chain(
        self,
        names: list[str],
        entries: list[Node],
        required: set[str],
        extra: Node | None,
        lo: int,
        hi: int | None,
        brackets: str,
    ) -> Node: ...


def unique_array(compiler: Compiler, schema: dict[str, Any]) -> Node:
    """uniqueItems. Items from a finite list of values: each value at most once, in the list's
    order (every set of them, in one order). Other items: at most one item, which only
    generates less."""
    items = schema.get("items", True)
    if isinstance(items, list) or schema.get("prefixItems"):
        raise GrammarError("JSON Schema keyword 'uniqueItems' with tuple items is not supported")
    lo, hi = count(schema, "minItems", 0), count(schema, "maxItems", None)
    values = finite_values(items, compiler)
    if values is None or len(values) > MAX_UNIQUE_VALUES:
        if lo > 1:
            raise GrammarError(
                "JSON Schema keyword 'uniqueItems' with minItems above 1 is supported only for "
                f"items from a list of at most {MAX_UNIQUE_VALUES} values (enum, const, boolean)"
            )
        at_most_one = 1 if hi is None else min(hi, 1)
        return compiler.array({**schema, "uniqueItems": False, "maxItems": at_most_one})
    entries = [compiler.json_literal(v) for v in values]
    names = [str(i) for i in range(len(values))]
    return compiler.chain(names, entries, set(), None, lo, hi, "[]")
