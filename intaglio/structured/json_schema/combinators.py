"""Combinators rewritten as unions of plain schemas the compiler can enforce exactly.

Each function takes a schema holding one combinator and returns branches (schemas without it)
whose union generates only valid values:

- `not S`: a value fails S when it fails any one of S's keywords (each keyword is a conjunct),
  so each keyword we can negate gives a branch ("required a" -> "a absent", "minLength 3" ->
  "maxLength 2", ...). Keywords we cannot negate give no branch, which only generates less.
- `oneOf`: branch i joined with `not` of every branch that may overlap it.
- `if/then/else`: (if and then) or (not if and else).
- `dependencies` and friends: per dependency, (name absent) or (name present and its demand).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.json_schema.keywords import TYPE_NAMES, disjoint
from intaglio.structured.json_schema.merge import (
    AND,
    CONDITIONAL,
    NOT_IN,
    NOT_PATTERN,
    SchemaMerger,
    enum_values,
    never,
    same_value,
)

MAX_BRANCHES = 16  # a combinator expanding to more unions than this is refused
_MAX_NOT_BRANCHES = 6  # `not` keeps at most this many of the branches it can build
_MAX_NOT_DEPTH = 3  # nesting of negations into subschemas (recursive schemas stop here)
_TYPES = ("null", "boolean", "object", "array", "string", "number")
_UNESCAPED = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x10FFFF)]


class Union:
    """What a combinator becomes: `branches` must all compile; an `optional` branch (built by
    negation, so one of possibly several ways to fail a schema) may be dropped when it uses
    something we cannot enforce, which only generates less."""

    def __init__(self, keyword: str, branches: list[Any], optional: Sequence[Any] = ()) -> None:
        self.keyword = keyword
        self.branches = branches
        self.optional = list(optional)
        self.narrowed = False  # oneOf branches were cut down to exclude each other


def expand(schema: dict[str, Any], merger: SchemaMerger) -> Union | None:
    """The first combinator in the schema as a union of branches, or None if it has none."""
    if "if" in schema:
        return if_then_else(schema, merger)
    for key in ("dependencies", "dependentRequired", "dependentSchemas"):
        if schema.get(key):
            return Union(key, dependencies(schema, key, merger))
    if "not" in schema:
        if never(schema):
            return Union("not", [])
        base = {k: v for k, v in schema.items() if k != "not"}
        ways = negate(schema["not"], base, merger)
        if not ways:
            raise GrammarError(
                "JSON Schema keyword 'not' is not supported for this subschema "
                f"({_brief(schema['not'])}); supported: type, const/enum, required, "
                "properties, additionalProperties: false, pattern, length/size/number "
                "bounds, anyOf/oneOf/allOf of these"
            )
        return Union("not", [], [merger.merge([base, d]) for d in ways])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            base = {k: v for k, v in schema.items() if k != key}
            branches = [merger.merge([base, b]) for b in schema[key]]
            union = Union(key, branches)
            if key == "oneOf":
                union.branches, union.narrowed = exclusive(branches, schema[key], merger)
            return union
    if AND in schema:
        first, *rest = schema[AND]
        base = {k: v for k, v in schema.items() if k != AND}
        if rest:
            base[AND] = rest
        return Union("allOf", [merger.merge([base, first])])
    return None


def _brief(schema: Any) -> str:
    text = json.dumps(schema, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def if_then_else(schema: dict[str, Any], merger: SchemaMerger) -> Union:
    """Values where `if` holds must meet `then`; the others (as far as we can tell that `if`
    fails: the optional branches) must meet `else`."""
    base = {k: v for k, v in schema.items() if k not in CONDITIONAL}
    if "then" not in schema and "else" not in schema:
        return Union("if", [base])  # an `if` alone constrains nothing
    cond = schema["if"]
    yes = merger.merge([base, cond, schema.get("then", True)])
    no_base = merger.merge([base, schema.get("else", True)])
    no = [merger.merge([no_base, d]) for d in negate(cond, no_base, merger)]
    return Union("if", [yes], no)


def dependencies(schema: dict[str, Any], key: str, merger: SchemaMerger) -> list[Any]:
    base = {k: v for k, v in schema.items() if k != key}
    options = []
    for name, demand in schema[key].items():
        absent = {"properties": {name: False}}
        if isinstance(demand, list):  # dependentRequired form
            present: Any = {"required": [name, *demand]}
        else:
            present = merger.merge([{"required": [name]}, demand])
        options.append([absent, present])
    if 2 ** len(options) > MAX_BRANCHES:
        raise GrammarError(f"JSON Schema keyword {key!r} with more than 4 entries is not supported")
    return [merger.merge([base, *combo]) for combo in itertools.product(*options)]


def exclusive(branches: list[Any], raw: list[Any], merger: SchemaMerger) -> tuple[list[Any], bool]:
    """oneOf: keep each branch's values that fail every other branch it may share values with
    (the check is on the branches as written, which is what oneOf evaluates); and whether any
    branch was cut down so."""
    out = []
    narrowed = False
    for i, b in enumerate(branches):
        if never(b):
            continue
        nots = [
            raw[j]
            for j in range(len(branches))
            if j != i
            and not never(branches[j])
            and not disjoint(_deref(b, merger), _deref(branches[j], merger))
        ]
        if any(not merger.flatten(n) for n in nots):
            continue  # another branch accepts everything: no value matches only this one
        if any(not negate(n, b, merger) for n in nots):
            raise GrammarError(
                "'oneOf' whose branches may overlap and cannot be told apart is not "
                "supported (use anyOf if any match will do)"
            )
        out.append(merger.merge([b, *({"not": n} for n in nots)]) if nots else b)
        narrowed |= bool(nots)
    return out, narrowed


def _deref(schema: Any, merger: SchemaMerger) -> Any:
    for _ in range(32):
        if not (isinstance(schema, dict) and set(schema) == {"$ref"}):
            break
        schema = merger.resolve(schema["$ref"])
    return schema


def negate(schema: Any, base: dict[str, Any], merger: SchemaMerger, depth: int = 0) -> list[Any]:
    """Schemas whose values all fail `schema`; `base` (what the value must satisfy anyway)
    tells which property names we may write. Cheapest branches first, at most a few."""
    if depth > _MAX_NOT_DEPTH:
        return []
    parts = merger.flatten(schema)
    if not parts:
        return []  # not true / not {}: nothing
    if any(never(p) for p in parts):
        return [{}]
    ways = (d for part in parts for d in _negate_part(part, base, merger, depth))
    return list(itertools.islice((d for d in ways if not never(d)), _MAX_NOT_BRANCHES))


def _negate_part(
    s: dict[str, Any], base: dict[str, Any], merger: SchemaMerger, depth: int
) -> Iterator[Any]:
    out: list[Any] = []
    if "not" in s:
        out.append(s["not"])  # not not X == X
    types = s.get("type")
    if types is not None:
        allowed = {types} if isinstance(types, str) else set(types)
        if s.get("nullable"):
            allowed.add("null")
        if "integer" in allowed and "number" not in allowed:
            allowed.add("number")  # non-integral numbers are not expressible: leave them out
        rest = [t for t in _TYPES if t not in allowed]
        if rest:
            out.append({"type": rest})
    values = enum_values(s)
    if values is not None:
        out += _not_values(values, base, types)
    if s.get("required"):
        out += [{"type": "object", "properties": {r: False}} for r in s["required"]]
    out += _not_closed(s, base)
    out += _not_bounds(s)
    if isinstance(s.get("pattern"), str):
        out.append({"type": "string", NOT_PATTERN: [s["pattern"]]})
    yield from out
    depth += 1
    for key in ("anyOf", "oneOf"):  # (not A) and (not B) is enough to fail either
        if key in s:
            options = [negate(b, base, merger, depth) for b in s[key]]
            combos = itertools.islice(itertools.product(*options), MAX_BRANCHES)
            yield from (merger.merge(list(c)) for c in combos)
    if "if" in s:  # fails when (if and not then) or (not if and not else)
        cond = s["if"]
        yield from (
            merger.merge([cond, d]) for d in negate(s.get("then", True), base, merger, depth)
        )
        for d in negate(cond, base, merger, depth):
            yield from (merger.merge([d, e]) for e in negate(s.get("else", True), base, merger))
    for name, sub in s.get("properties", {}).items():
        for d in negate(sub, {}, merger, depth)[:2]:
            yield {"type": "object", "required": [name], "properties": {name: d}}


def _not_values(values: list[Any], base: dict[str, Any], types: Any) -> list[Any]:
    own = enum_values(base)
    if own is not None:  # the base lists its values: drop the excluded ones, exactly
        return [{"enum": [v for v in own if not any(same_value(v, w) for w in values)]}]
    by_type = {t: [v for v in values if _type_of(v) == t] for t in _TYPES}
    out: list[Any] = []
    if types is None:  # (with a type, the type branch covers the other types)
        free = [t for t in _TYPES if not by_type[t]]
        if free:
            out.append({"type": free})
    named = set(_TYPES) if types is None else {types} if isinstance(types, str) else set(types)
    for t, every in (("null", [None]), ("boolean", [True, False])):
        if by_type[t] and t in named:
            rest = [v for v in every if v not in by_type[t]]
            if rest:
                out.append({"enum": rest})
    strings = by_type["string"]
    if strings and "string" in named and all(_plain(v) for v in strings):
        out.append({"type": "string", NOT_IN: strings})
    return out


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return TYPE_NAMES[type(v)]


def _plain(text: str) -> bool:
    """Written without escapes inside a JSON string."""
    return all(any(lo <= ord(c) <= hi for lo, hi in _UNESCAPED) for c in text)


def _not_closed(s: dict[str, Any], base: dict[str, Any]) -> list[Any]:
    """A closed schema (additionalProperties false) fails on any name it does not list."""
    if s.get("additionalProperties") is not False or s.get("patternProperties"):
        return []
    listed = set(s.get("properties", {}))
    names = [*base.get("properties", {}), *base.get("required", [])]
    return [{"type": "object", "required": [n]} for n in dict.fromkeys(names) if n not in listed]


def _not_bounds(s: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, t, other in (
        ("minLength", "string", "maxLength"),
        ("minItems", "array", "maxItems"),
        ("minProperties", "object", "maxProperties"),
    ):
        if isinstance(s.get(key), int) and s[key] > 0:
            out.append({"type": t, other: s[key] - 1})
    for key, t, other in (
        ("maxLength", "string", "minLength"),
        ("maxItems", "array", "minItems"),
        ("maxProperties", "object", "minProperties"),
    ):
        if isinstance(s.get(key), int):
            out.append({"type": t, other: s[key] + 1})
    for key, other in (
        ("minimum", "exclusiveMaximum"),
        ("maximum", "exclusiveMinimum"),
        ("exclusiveMinimum", "maximum"),
        ("exclusiveMaximum", "minimum"),
    ):
        value = s.get(key)
        draft4_flag = isinstance(s.get("exclusiveMinimum"), bool) or isinstance(
            s.get("exclusiveMaximum"), bool
        )
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not draft4_flag:
            out.append({"type": "number", other: value})
    return out
