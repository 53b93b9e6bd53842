"""Which `enum` / `const` values the rest of their schema admits, decided in Python.

An enum value is written literally, so every other keyword beside the enum must be checked on
it here. The check says yes only when sure: a keyword it does not know (or a pattern Python
and our automaton might read differently) drops the value, which only generates less.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

from intaglio.structured.grammar.ir import GrammarError, Node
from intaglio.structured.json_schema.formats import FORMATS, FREE_FORMATS
from intaglio.structured.json_schema.keywords import (
    ANNOTATIONS,
    BY_TYPE,
    GENERIC,
    json_type,
    name_decided,
    name_matches,
)
from intaglio.structured.json_schema.merge import (
    AND,
    NOT_IN,
    NOT_PATTERN,
    PATTERNS,
    enum_values,
    same_value,
)


class Context(Protocol):
    def resolve(self, ref: str) -> Any: ...

    def pattern(self, pattern: str) -> Node: ...


_FINITE_TYPES: dict[str, list[Any]] = {"boolean": [True, False], "null": [None]}
_TYPE_FREE = {"type", "nullable", "enum", "const", "$ref", "definitions", "$defs"}


def value_ok(schema: Any, value: Any, ctx: Context, depth: int = 0) -> bool:
    if schema is True or schema == {}:
        return True
    if schema is False or not isinstance(schema, dict) or depth > 32:
        return False
    if "$ref" in schema and not value_ok(ctx.resolve(schema["$ref"]), value, ctx, depth + 1):
        return False
    t = json_type(value)
    types = schema.get("type")
    if types is not None:
        allowed = {types} if isinstance(types, str) else set(types)
        if schema.get("nullable"):
            allowed.add("null")
        if not (t in allowed or (t == "integer" and "number" in allowed)):
            return False
    for key in ("enum", "const"):
        if key in schema:
            options = schema["enum"] if key == "enum" else [schema["const"]]
            if not any(same_value(value, o) for o in options):
                return False
    checks = {"string": _string_ok, "integer": _number_ok, "number": _number_ok}
    checks.update({"array": _array_ok, "object": _object_ok})
    for key in (schema.keys() - ANNOTATIONS - _TYPE_FREE) & _KNOWN:
        if not checks.get(t, _other_ok)(key, schema, value, ctx, depth):
            return False  # fails, or a keyword we cannot decide (None): drop the value
    return True


def finite_values(schema: Any, ctx: Context) -> list[Any] | None:
    """The distinct values a schema admits, if it lists them (enum, const, boolean, null)."""
    for _ in range(32):
        if not (isinstance(schema, dict) and set(schema) - ANNOTATIONS == {"$ref"}):
            break
        schema = ctx.resolve(schema["$ref"])
    if not isinstance(schema, dict):
        return None
    values = enum_values(schema)
    if values is None and isinstance(schema.get("type"), str):
        values = _FINITE_TYPES.get(schema["type"])
    if values is None:
        return None
    rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
    out: list[Any] = []
    for v in values:
        if value_ok(rest, v, ctx) and not any(same_value(v, w) for w in out):
            out.append(v)
    return out


def _other_ok(key: str, schema: dict, value: Any, ctx: Context, depth: int) -> bool | None:
    return True if key in _IGNORED_BY["null"] else None


def _string_ok(key: str, schema: dict, value: str, ctx: Context, depth: int) -> bool | None:
    if key == "minLength":
        return len(value) >= schema[key]
    if key == "maxLength":
        return len(value) <= schema[key]
    if key == "pattern":
        try:
            node = ctx.pattern(schema[key])
        except GrammarError:
            return None
        return name_matches(schema[key], node, value)
    if key == NOT_IN:
        return value not in schema[key]
    if key == PATTERNS:
        try:
            return all(name_matches(p, ctx.pattern(p), value) for p in schema[key])
        except GrammarError:
            return None
    if key == NOT_PATTERN:
        try:
            return all(name_decided(p, ctx.pattern(p), value) is False for p in schema[key])
        except GrammarError:
            return None
    if key == "format":
        if schema[key] in FREE_FORMATS:
            return True
        fmt = FORMATS.get(schema[key])
        return None if fmt is None else re.fullmatch(fmt, value) is not None
    return True if key in _IGNORED_BY["string"] else None


def _number_ok(key: str, schema: dict, value: Any, ctx: Context, depth: int) -> bool | None:
    bound = schema[key]
    if isinstance(bound, bool):  # draft 4 exclusive flags: read with minimum / maximum
        return True if key.startswith("exclusive") else None
    if key == "minimum":
        return value > bound if schema.get("exclusiveMinimum") is True else value >= bound
    if key == "maximum":
        return value < bound if schema.get("exclusiveMaximum") is True else value <= bound
    if key == "exclusiveMinimum":
        return value > bound
    if key == "exclusiveMaximum":
        return value < bound
    if key == "multipleOf":
        q = value / bound
        return math.isfinite(q) and q == int(q)
    return True if key in _IGNORED_BY["number"] else None


def _array_ok(key: str, schema: dict, value: list, ctx: Context, depth: int) -> bool | None:
    if key == "minItems":
        return len(value) >= schema[key]
    if key == "maxItems":
        return len(value) <= schema[key]
    if key in ("items", "prefixItems", "additionalItems"):
        items = schema.get("items", True)
        prefix = schema.get("prefixItems", [])
        if isinstance(items, list):
            prefix, items = items, schema.get("additionalItems", True)
        return all(
            value_ok(prefix[i] if i < len(prefix) else items, v, ctx, depth + 1)
            for i, v in enumerate(value)
        )
    if key == "uniqueItems":
        return not schema[key] or all(
            not same_value(a, b) for i, a in enumerate(value) for b in value[i + 1 :]
        )
    return True if key in _IGNORED_BY["array"] else None


def _object_ok(key: str, schema: dict, value: dict, ctx: Context, depth: int) -> bool | None:
    if key == "required":
        return all(name in value for name in schema[key])
    if key in ("properties", "additionalProperties"):
        if schema.get("patternProperties"):
            return None
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        return all(value_ok(props.get(n, extra), v, ctx, depth + 1) for n, v in value.items())
    if key == "patternProperties":
        return True if not schema[key] else None
    if key == "minProperties":
        return len(value) >= schema[key]
    if key == "maxProperties":
        return len(value) <= schema[key]
    return True if key in _IGNORED_BY["object"] else None


# Keywords of other types: they do not apply to a value of this type.
_BY_TYPE = {
    t: keywords | ({NOT_IN, NOT_PATTERN, PATTERNS} if t == "string" else set())
    for t, keywords in BY_TYPE.items()
    if t != "integer"
}
_ALL_TYPED = set().union(*_BY_TYPE.values())
_IGNORED_BY = {
    t: _ALL_TYPED - _BY_TYPE.get(t, set()) for t in ("string", "number", "array", "object", "null")
}
# Keywords that are neither of these nor GENERIC are annotations.
_KNOWN = GENERIC | _ALL_TYPED | {AND}  # AND: conjuncts not merged yet, so undecided
