"""Intersection of JSON Schemas (allOf, `$ref` siblings, a combinator's base and branch).

The merge is exact or it raises: properties combine name by name, each name under every part's
rule for it (its `properties` entry, else that part's `additionalProperties`); items combine
position by position the same way. Combinators that occur in several parts cannot share one
key, so the later ones wait in AND (a list of conjuncts) until the compiler expands the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.json_schema.keywords import ANNOTATIONS, BY_TYPE, GENERIC, json_type

NEVER: dict[str, Any] = {"not": {}}  # the schema no value satisfies
AND = "x-intaglio-and"  # conjuncts not merged yet (a combinator already present in the merge)
NOT_IN = "x-intaglio-not-in"  # strings the value must differ from (written unescaped)
NOT_PATTERN = "x-intaglio-not-pattern"  # patterns the value must not match
PATTERNS = "x-intaglio-patterns"  # more patterns the value must match (allOf of patterns)
COMBINATORS = ("anyOf", "oneOf", "dependencies", "dependentRequired", "dependentSchemas")
CONDITIONAL = ("if", "then", "else")
_OBJECT_GROUP = ("properties", "additionalProperties", "patternProperties")
_ARRAY_GROUP = ("prefixItems", "items", "additionalItems")
_MAX_REF_DEPTH = 64


def never(schema: Any) -> bool:
    return schema is False or (isinstance(schema, dict) and schema.get("not", 0) in ({}, True))


def same_value(a: Any, b: Any) -> bool:
    """JSON equality (1 == 1.0, but true != 1)."""
    ta, tb = json_type(a), json_type(b)
    if {ta, tb} <= {"integer", "number"}:
        return a == b
    if ta != tb:
        return False
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def enum_values(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not schema["enum"]:
            raise GrammarError("'enum' must be a non-empty list")
        return schema["enum"]
    return None


class SchemaMerger:
    def __init__(self, resolve: Callable[[str], Any]) -> None:
        self.resolve = resolve

    def flatten(self, schema: Any, depth: int = 0) -> list[dict[str, Any]]:
        """The conjuncts of a schema: `$ref` targets and allOf members pulled up."""
        if depth > _MAX_REF_DEPTH:
            raise GrammarError("$ref / allOf nesting too deep to combine (a reference cycle?)")
        if schema is True:
            return []
        if schema is False:
            return [dict(NEVER)]
        if not isinstance(schema, dict):
            raise GrammarError(f"a schema must be an object or a boolean, got {schema!r}")
        rest = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        out = [rest] if rest else []
        if "$ref" in schema:
            out += self.flatten(self.resolve(schema["$ref"]), depth + 1)
        for sub in schema.get("allOf", []):
            out += self.flatten(sub, depth + 1)
        return out

    def merge(self, parts: list[Any]) -> dict[str, Any]:
        flat: list[dict[str, Any]] = []
        for p in (p for part in parts for p in self.flatten(part)):
            if not any(p is q or p == q for q in flat):  # a schema met twice adds nothing
                flat.append(p)
        if any(never(p) for p in flat):
            return dict(NEVER)
        out: dict[str, Any] = {}
        later: list[Any] = []
        for part in flat:
            if "if" in part:
                cond = {k: part[k] for k in CONDITIONAL if k in part}
                if "if" in out:
                    later.append(cond)
                else:
                    out.update(cond)
            for key, value in part.items():
                if key in _OBJECT_GROUP or key in _ARRAY_GROUP or key in CONDITIONAL:
                    continue
                if key in ANNOTATIONS:
                    continue  # dropped: a merged schema is compiled, never resolved into
                if key == AND:
                    later += value
                elif key in COMBINATORS and key in out:
                    later.append({key: value})
                elif key not in out:
                    out[key] = value
                elif key == "pattern" and value != out[key]:
                    out[PATTERNS] = [*out.get(PATTERNS, []), value]
                else:
                    out[key] = self._combine(key, out[key], value)
        values = [v for p in flat if (v := enum_values(p)) is not None]
        if values:
            out.pop("const", None)
            out["enum"] = [v for v in values[0] if all(_has(vs, v) for vs in values[1:])]
            if not out["enum"]:
                return dict(NEVER)
        out.update(self._objects(flat))
        out.update(self._arrays(flat))
        if later:
            out[AND] = later
        return out

    def _combine(self, key: str, old: Any, new: Any) -> Any:
        if key == "required":
            return list(dict.fromkeys([*old, *new]))
        if key == "type":
            a = {old} if isinstance(old, str) else set(old)
            b = {new} if isinstance(new, str) else set(new)
            for s in (a, b):
                if "number" in s:
                    s.add("integer")
            common = [
                t
                for t in ("null", "boolean", "object", "array", "string", "number", "integer")
                if t in a & b
            ]
            return [t for t in common if t != "integer" or "number" not in common]
        if key == "not":
            if old in ({}, True) or new in ({}, True):
                return {}
            return {"anyOf": [old, new]}
        if key in (NOT_IN, NOT_PATTERN, PATTERNS):
            return [*old, *new]
        if key == "uniqueItems":
            return bool(old) or bool(new)
        if key in ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum"):
            return max(old, new)
        if key in ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum"):
            return min(old, new)
        if key not in GENERIC and not any(key in ks for ks in BY_TYPE.values()):
            return old  # an unknown keyword is an annotation: keep the first
        if key in ("enum", "const") or old == new:
            return old  # enums are intersected after the loop
        raise GrammarError(f"allOf/anyOf: cannot combine two different {key!r}")

    def _objects(self, flat: list[dict[str, Any]]) -> dict[str, Any]:
        """A property's value must satisfy each part's rule for its name; names no part lists
        fall under every part's additionalProperties."""
        owners = [p for p in flat if p.keys() & set(_OBJECT_GROUP)]
        if len(owners) <= 1:
            return {k: owners[0][k] for k in _OBJECT_GROUP if k in owners[0]} if owners else {}
        patterned = [o for o in owners if o.get("patternProperties")]
        if patterned:
            return self._objects_with_patterns(patterned[0], owners)
        names = list(dict.fromkeys(n for o in owners for n in o.get("properties", {})))
        props = {}
        for name in names:
            rules = [
                o["properties"][name]
                if name in o.get("properties", {})
                else o.get("additionalProperties", True)
                for o in owners
            ]
            props[name] = self._meet(rules)
        out: dict[str, Any] = {"properties": props} if props else {}
        extras = [o["additionalProperties"] for o in owners if "additionalProperties" in o]
        if extras:
            extra = self._meet(extras)
            out["additionalProperties"] = False if never(extra) else extra
        return out

    def _objects_with_patterns(
        self, owner: dict[str, Any], owners: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """One part with patternProperties, the others only listing properties: the patterns
        stay and apply to every listed name later (patternProperties and properties both
        apply to a name), so the merge is exact when that part's additionalProperties (if
        any) sees no name the others add."""
        others = [o for o in owners if o is not owner]
        own = owner.get("properties", {})
        added = {n for o in others for n in o.get("properties", {})} - set(own)
        if any(o.get("patternProperties") or "additionalProperties" in o for o in others) or (
            "additionalProperties" in owner and added
        ):
            raise GrammarError(
                "combining 'patternProperties' with the properties of another schema "
                "(allOf, $ref siblings) is not supported"
            )
        names = list(dict.fromkeys(n for o in owners for n in o.get("properties", {})))
        props = {
            n: self._meet([o.get("properties", {}).get(n, True) for o in owners]) for n in names
        }
        out = {k: owner[k] for k in _OBJECT_GROUP if k in owner}
        out["properties"] = props
        return out

    def _arrays(self, flat: list[dict[str, Any]]) -> dict[str, Any]:
        owners = [p for p in flat if p.keys() & set(_ARRAY_GROUP)]
        if len(owners) <= 1:
            return {k: owners[0][k] for k in _ARRAY_GROUP if k in owners[0]} if owners else {}
        shapes = []  # (prefix schemas, schema of the items after them)
        for o in owners:
            if isinstance(o.get("items"), list):  # draft 4-7 tuple form
                shapes.append((o["items"], o.get("additionalItems", True)))
            else:
                shapes.append((o.get("prefixItems", []), o.get("items", True)))
        width = max(len(p) for p, _ in shapes)
        prefix = [
            self._meet([p[i] if i < len(p) else rest for p, rest in shapes]) for i in range(width)
        ]
        rest = self._meet([r for _, r in shapes])
        return {"prefixItems": prefix, "items": False if never(rest) else rest}

    def _meet(self, schemas: list[Any]) -> Any:
        real = [s for s in schemas if s is not True and s != {}]
        if not real:
            return True
        if len(real) == 1:
            return real[0]  # kept as written, so a `$ref` stays a shared rule
        return self.merge(real)


def _has(values: list[Any], v: Any) -> bool:
    return any(same_value(v, w) for w in values)
