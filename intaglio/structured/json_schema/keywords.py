"""JSON Schema keyword tables and the static checks the compiler relies on (oneOf
disjointness, value types), kept apart from the grammar construction."""

from __future__ import annotations

import json
import re
from typing import Any

from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.grammar.ir import Alt, Bytes, Grammar, GrammarError, Node, Ref, Repeat, Seq

# Keywords that only annotate; they never change which instances validate.
ANNOTATIONS = {
    "$schema",
    "$id",
    "id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "example",
    "deprecated",
    "readOnly",
    "writeOnly",
    "definitions",
    "$defs",
    "contentMediaType",
    "contentEncoding",
    "discriminator",
    "xml",
    "externalDocs",
    "$anchor",
    "markdownDescription",
}
BY_TYPE = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "array": {
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "additionalItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
    },
    "object": {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
    },
}
BY_TYPE["integer"] = BY_TYPE["number"]
GENERIC = {
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "nullable",
    "not",
    "if",
    "then",
    "else",
}
ALL_TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")
# The JSON type of a Python value that is neither null, a boolean nor a number.
TYPE_NAMES: dict[type, str] = {str: "string", list: "array", dict: "object"}


def count(schema: dict[str, Any], key: str, default: int | None) -> Any:
    value = schema.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != int(value):
        raise GrammarError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    return TYPE_NAMES[type(value)]


def _types(schema: Any) -> set[str] | None:
    """The JSON types a schema can produce, None if unknown (any)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return {json_type(v) for v in values}
    t = schema.get("type")
    if t is None:
        return None
    out = {t} if isinstance(t, str) else set(t)
    if "number" in out:
        out.add("integer")
    if schema.get("nullable"):
        out.add("null")
    return out


def _constants(schema: Any) -> list[str] | None:
    if isinstance(schema, dict) and ("const" in schema or "enum" in schema):
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return [json.dumps(v, sort_keys=True) for v in values]
    return None


def disjoint(a: Any, b: Any) -> bool:
    ta, tb = _types(a), _types(b)
    if ta is not None and tb is not None and not ta & tb:
        return True
    ca, cb = _constants(a), _constants(b)
    if ca is not None and cb is not None and not set(ca) & set(cb):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        # A discriminator: a property both require, with disjoint constants.
        pa, pb = a.get("properties", {}), b.get("properties", {})
        for name in set(a.get("required", [])) & set(b.get("required", [])):
            if name in pa and name in pb and _disjoint_consts(pa[name], pb[name]):
                return True
        return _excludes(a, b) and _excludes(b, a)
    return False


def _objects_only(schema: dict[str, Any]) -> bool:
    if "type" in schema:
        return _types(schema) == {"object"}
    other = set().union(*(v for k, v in BY_TYPE.items() if k != "object"))
    return "properties" in schema and not schema.keys() & (other | {"const", "enum"})


def _excludes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """No object generated from a validates against b, judged by property names alone.

    We write only a's properties (extras only where a explicitly allows them), so an object
    from a lacks any property b requires beyond those, and b refuses a required property of
    a that b's closed property list does not name.
    """
    if not (_objects_only(a) and _objects_only(b)):
        return False
    written = set(a.get("properties", {})) | set(a.get("required", []))
    if a.get("additionalProperties") in (None, False) and set(b.get("required", [])) - written:
        return True
    closed = b.get("additionalProperties") is False and not b.get("patternProperties")
    return closed and bool(set(a.get("required", [])) - set(b.get("properties", {})))


def _disjoint_consts(a: Any, b: Any) -> bool:
    ca, cb = _constants(a), _constants(b)
    return ca is not None and cb is not None and not set(ca) & set(cb)


def name_matches(pattern: str, node: Node, name: str) -> bool:
    """Whether a property name surely satisfies a `pattern` (search semantics): Python's `re`
    (ASCII classes, no newline to trip `$`) and our own automaton for `node`, the pattern's
    IR, must both say yes, so a dialect difference can only refuse, never accept."""
    if "\n" in name:
        return False
    try:
        if re.search(pattern, name, flags=re.ASCII) is None:
            return False
    except re.error:
        return False
    a = Automaton(Grammar({"root": node}))
    d = a.start
    for b in name.encode():
        d = a.step(d, b)
        if not d:
            return False
    return bool(a.accepting[d])


def name_decided(pattern: str, node: Node, name: str) -> bool | None:
    """Whether a name satisfies a `pattern` (search semantics) when Python's `re` and our
    automaton agree; None when they differ or either cannot tell."""
    if name_matches(pattern, node, name):
        return True
    try:  # no match only if neither reading (ASCII classes, or Unicode as `jsonschema`) does
        python_says = any(re.search(pattern, name, flags=f) for f in (re.ASCII, 0))
    except re.error:
        return None
    a = Automaton(Grammar({"root": node}))
    d = a.start
    for b in name.encode():
        d = a.step(d, b)
        if not d:
            break
    ours = bool(d) and bool(a.accepting[d])
    return None if python_says or ours or "\n" in name else False


def surely_empty(node: Node, rules: dict[str, Node], building: set[str], depth: int = 0) -> bool:
    """Whether a node surely matches nothing, judged a few rules deep (deeper, or a rule still
    being built, whose placeholder is not final, counts as non-empty)."""
    if depth > 8:
        return False
    if isinstance(node, Bytes):
        return node.mask == 0
    if isinstance(node, Seq):
        return any(surely_empty(n, rules, building, depth + 1) for n in node.items)
    if isinstance(node, Alt):
        return all(surely_empty(n, rules, building, depth + 1) for n in node.items)
    if isinstance(node, Repeat):
        return node.min > 0 and surely_empty(node.item, rules, building, depth + 1)
    if isinstance(node, Ref):
        return node.name not in building and surely_empty(
            rules[node.name], rules, building, depth + 1
        )
    return False
