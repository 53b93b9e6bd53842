"""JSON Schema -> grammar IR. Every output the grammar allows validates against the schema.

Objects are written with their properties in schema order (required ones always, optional ones
maybe); extra properties only where `additionalProperties` explicitly allows them. Whitespace
between tokens follows a small regex (default: at most one space). A keyword that changes
validity and that we cannot enforce raises GrammarError naming it; annotations are ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote

from intaglio.structured.ir import (
    NOTHING,
    Grammar,
    GrammarError,
    Intersect,
    Node,
    Ref,
    Repeat,
    alt,
    char_class,
    literal,
    opt,
    seq,
)
from intaglio.structured.json_schema_keywords import (
    ALL_TYPES,
    ANNOTATIONS,
    BY_TYPE,
    GENERIC,
    count,
    disjoint,
    json_type,
    name_matches,
    search,
)
from intaglio.structured.numbers import bounded_number, integer_bounds, integer_range
from intaglio.structured.regex import regex_to_ir, top_level_branches

# Characters a JSON string may hold unescaped: anything but `"`, `\` and controls.
_UNESCAPED = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x10FFFF)]
_STRING_EXCLUDE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
# Escapes, with \u limited to non-surrogates so each escape is one character after decoding.
_ESCAPE = r'\\(["\\/bfnrt]|u([0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))'

FORMATS = {
    "date": r"[1-9]\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)"
    r"|02-(0[1-9]|1\d|2[0-8]))",
    "time": r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
    "email": r"[a-zA-Z0-9]+([._+-][a-zA-Z0-9]+)*@[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*"
    r"(\.[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)*\.[a-zA-Z]{2,}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "uri": r"[a-z][a-z0-9+.-]*://[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*(/[a-zA-Z0-9._~-]*)*",
    "ipv4": r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}",
    "hostname": r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}"
    r"[a-zA-Z0-9])?)*",
}
FORMATS["date-time"] = FORMATS["date"] + "T" + FORMATS["time"]

_MAX_BOUNDED_LENGTH = 2048  # longer maxLength bounds generate at most this many characters


class JsonSchemaCompiler:
    def __init__(self, schema: Any, whitespace: str = r"[ ]?") -> None:
        self.root = schema
        self.ws = regex_to_ir(whitespace)
        self.rules: dict[str, Node] = {}
        self._ref_names: dict[str, str] = {}
        self._objects = 0

    def compile(self) -> Grammar:
        self.rules["root"] = self.node(self.root)
        return Grammar(self.rules, "root")

    # ------------------------------------------------------------ dispatch
    def node(self, schema: Any) -> Node:
        if schema is True or schema == {}:
            return self.any_value()
        if schema is False:
            return NOTHING
        if not isinstance(schema, dict):
            raise GrammarError(f"a schema must be an object or a boolean, got {schema!r}")
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "$ref"}
            if rest:  # siblings of $ref (2019+): fold them in with allOf
                return self.node({"allOf": [{"$ref": schema["$ref"]}, rest]})
            return self.ref(schema["$ref"])
        if "allOf" in schema:
            return self.node(self.merge_all_of(schema))
        for bad in ("not", "if", "then", "else", "$dynamicRef", "$recursiveRef"):
            if bad in schema:
                raise GrammarError(f"JSON Schema keyword {bad!r} is not supported")
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            if not isinstance(values, list) or not values:
                raise GrammarError("'enum' must be a non-empty list")
            if "type" in schema:  # a value must also have one of the allowed types
                types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
                values = [
                    v
                    for v in values
                    if json_type(v) in types or (json_type(v) == "integer" and "number" in types)
                ]
            return alt(*(self.json_literal(v) for v in values)) if values else NOTHING
        for key in ("anyOf", "oneOf"):
            if key in schema:
                base = {k: v for k, v in schema.items() if k != key}
                branches = [self.merge([base, branch]) for branch in schema[key]]
                if key == "oneOf":
                    self.check_disjoint(branches)
                return alt(*(self.node(b) for b in branches))
        types = schema.get("type")
        if types is None:
            if not schema.keys() & set().union(*BY_TYPE.values()):
                return self.any_value()
            types = [t for t in ALL_TYPES if t != "integer" and self._fits(schema, t)]
        elif isinstance(types, str):
            types = [types]
        if schema.get("nullable") and "null" not in types:
            types = [*types, "null"]
        if "integer" in types and "number" in types:
            types = [t for t in types if t != "integer"]
        unknown = [t for t in types if t not in ALL_TYPES]
        if unknown:
            raise GrammarError(f"unknown JSON Schema type {unknown[0]!r}")
        return alt(*(self.typed(schema, t) for t in types)) if types else NOTHING

    def _fits(self, schema: dict[str, Any], t: str) -> bool:
        """Without `type`, a type is possible; keep the ones the keywords talk about."""
        specific = schema.keys() & set().union(*BY_TYPE.values())
        return not specific or bool(specific & BY_TYPE.get(t, set()))

    def typed(self, schema: dict[str, Any], t: str) -> Node:
        # Keywords of other types do not apply here, and unknown keywords are annotations.
        if t == "null":
            return literal("null")
        if t == "boolean":
            return alt(literal("true"), literal("false"))
        if t in ("integer", "number"):
            return self.number(schema, t == "integer")
        if t == "string":
            return self.string(schema)
        if t == "array":
            return self.array(schema)
        return self.object(schema)

    # ------------------------------------------------------------ $ref and allOf
    def ref(self, ref: str) -> Node:
        if not ref.startswith("#"):
            raise GrammarError(f"$ref {ref!r}: only references inside the schema are supported")
        name = self._ref_names.get(ref)
        if name is None:
            name = self._ref_names[ref] = f"ref{len(self._ref_names)}"
            self.rules[name] = NOTHING  # placeholder: recursive references find the name
            self.rules[name] = self.node(self.resolve(ref))
        return Ref(name)

    def resolve(self, ref: str) -> Any:
        target = self.root
        for part in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            part = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and part.isdigit():
                target = target[int(part)]
            elif isinstance(target, dict) and part in target:
                target = target[part]
            else:
                raise GrammarError(f"$ref {ref!r} does not resolve inside the schema")
        return target

    def check_disjoint(self, branches: list[Any]) -> None:
        """oneOf needs exactly one branch to match; we accept it only where no value can match
        two branches: different types, different constants, or a discriminating property."""
        for i, a in enumerate(branches):
            for b in branches[i + 1 :]:
                if not disjoint(self._deref(a), self._deref(b)):
                    raise GrammarError(
                        "'oneOf' whose branches may overlap is not supported "
                        "(use anyOf if any match will do)"
                    )

    def _deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            schema, seen = self.resolve(schema["$ref"]), seen + 1
        return schema

    def merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        parts = [{k: v for k, v in schema.items() if k != "allOf"}]
        for sub in schema["allOf"]:
            while isinstance(sub, dict) and set(sub) - ANNOTATIONS == {"$ref"}:
                sub = self.resolve(sub["$ref"])
            if isinstance(sub, dict) and "$ref" in sub:
                raise GrammarError("allOf with a $ref that has sibling keywords is not supported")
            parts.append(sub)
        return self.merge(parts)

    def merge(self, parts: list[Any]) -> dict[str, Any]:
        """Intersection of schemas where it is plain; otherwise an error naming the keyword."""
        out: dict[str, Any] = {}
        # additionalProperties / items only see their own schema's properties / prefixItems,
        # so they cannot be merged with those of another schema.
        for group in (
            ("properties", "additionalProperties", "patternProperties"),
            ("prefixItems", "items", "additionalItems"),
        ):
            owners = [
                i for i, p in enumerate(parts) if isinstance(p, dict) and p.keys() & set(group)
            ]
            if len(owners) > 1 and any(
                isinstance(parts[i], dict) and parts[i].keys() & set(group[1:]) for i in owners
            ):
                raise GrammarError(
                    f"combining {group[1]!r} with {group[0]!r} of another schema "
                    "(allOf, $ref siblings) is not supported"
                )
        for part in parts:
            if part is True:
                continue
            if part is False:
                return {"enum": [None], "not": {}}
            if "allOf" in part:
                part = self.merge_all_of(part)
            for key, value in part.items():
                if key not in out or key in ANNOTATIONS:
                    out[key] = value
                elif key == "properties":
                    props = dict(out[key])
                    for name, sub in value.items():
                        props[name] = self.merge([props[name], sub]) if name in props else sub
                    out[key] = props
                elif key == "required":
                    out[key] = list(dict.fromkeys([*out[key], *value]))
                elif key == "type":
                    a = {out[key]} if isinstance(out[key], str) else set(out[key])
                    b = {value} if isinstance(value, str) else set(value)
                    if "number" in a:
                        a.add("integer")
                    if "number" in b:
                        b.add("integer")
                    common = [t for t in ALL_TYPES if t in a & b]
                    if "number" in common:
                        common.remove("integer")
                    out[key] = common
                elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum"):
                    out[key] = max(out[key], value)
                elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum"):
                    out[key] = min(out[key], value)
                elif key not in GENERIC and not any(key in ks for ks in BY_TYPE.values()):
                    continue  # an unknown keyword is an annotation: keep the first
                elif out[key] != value:
                    raise GrammarError(f"allOf/anyOf: cannot combine two different {key!r}")
        return out

    # ------------------------------------------------------------ scalars
    def json_literal(self, value: Any) -> Node:
        return literal(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def number(self, schema: dict[str, Any], integer: bool) -> Node:
        mult = schema.get("multipleOf")
        if mult is not None and mult != 1:
            raise GrammarError("JSON Schema keyword 'multipleOf' is not supported")
        integer = integer or mult == 1
        lo, hi = schema.get("minimum"), schema.get("maximum")
        excl_lo = excl_hi = False
        for key, is_lo in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            value = schema.get(key)
            if isinstance(value, bool):  # draft 4: a flag on minimum / maximum
                excl_lo, excl_hi = (value, excl_hi) if is_lo else (excl_lo, value)
            elif value is not None:
                if is_lo and (lo is None or value >= lo):
                    lo, excl_lo = value, True
                elif not is_lo and (hi is None or value <= hi):
                    hi, excl_hi = value, True
        for v in (lo, hi):
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise GrammarError(f"number bound {v!r} is not a finite number")
        if integer:
            a, b = integer_bounds(lo, hi, excl_lo, excl_hi)
            if a is not None and b is not None and a > b:
                raise GrammarError(f"no integer satisfies the bounds [{lo}, {hi}]")
            return integer_range(a, b)
        if lo is None and hi is None:
            frac = seq(literal("."), Repeat(char_class([(0x30, 0x39)]), 1, None))
            exp = seq(
                char_class([(0x45, 0x45), (0x65, 0x65)]),
                opt(char_class([(0x2B, 0x2B), (0x2D, 0x2D)])),
                Repeat(char_class([(0x30, 0x39)]), 1, None),
            )
            return seq(integer_range(None, None), opt(frac), opt(exp))
        a, b = integer_bounds(lo, hi, excl_lo, excl_hi)
        if a is not None and b is not None and a > b:
            raise GrammarError(f"number bounds [{lo}, {hi}] are too narrow to enforce")
        return bounded_number(lo, hi, excl_lo, excl_hi)

    def string_body(self, min_len: int = 0, max_len: int | None = None) -> Node:
        char = alt(char_class(_UNESCAPED), regex_to_ir(_ESCAPE))
        return Repeat(char, min_len, max_len)

    def string(self, schema: dict[str, Any]) -> Node:
        min_len, max_len = count(schema, "minLength", 0), count(schema, "maxLength", None)
        pattern, fmt = schema.get("pattern"), schema.get("format")
        if pattern is not None or (fmt is not None and fmt in FORMATS):
            # Each constraint is an automaton; together they are their intersection.
            parts = [] if pattern is None else [self.pattern(pattern)]
            if fmt in FORMATS:
                parts.append(regex_to_ir(FORMATS[fmt], exclude=_STRING_EXCLUDE))
            if min_len or max_len is not None:
                parts.append(self.string_body(min_len, max_len))
            body = parts[0]
            for part in parts[1:]:
                body = Intersect(body, part)
            return seq(literal('"'), body, literal('"'))
        if fmt is not None and fmt not in ("password", "binary", "text"):
            raise GrammarError(f"string format {fmt!r} is not supported")
        if max_len is not None and max_len < min_len:
            raise GrammarError(f"maxLength {max_len} is below minLength {min_len}")
        if max_len is not None and max_len > _MAX_BOUNDED_LENGTH >= min_len:
            # Every shorter string is valid too; a huge bound would only cost automaton size.
            max_len = _MAX_BOUNDED_LENGTH
        node = seq(literal('"'), self.string_body(min_len, max_len), literal('"'))
        if max_len is None or max_len <= 32:
            return node
        # Long bounded strings: one shared rule, so the automaton can call it instead of
        # copying max_len character states into every place it is used.
        name = f"string_{min_len}_{max_len}"
        self.rules[name] = node
        return Ref(name)

    def pattern(self, pattern: str) -> Node:
        """JSON Schema patterns search (unanchored) unless anchored with ^ and $."""
        branches = top_level_branches(pattern)
        if len(branches) > 1 and any(b.startswith("^") or b.endswith("$") for b in branches):
            # Anchors inside `a|^b$`: a search for the alternation finds a match exactly when
            # one of the branches, searched on its own, does.
            return alt(*(self.pattern(b) for b in branches))
        anchored_start = pattern.startswith("^")
        anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
        core = pattern[1 if anchored_start else 0 : len(pattern) - (1 if anchored_end else 0)]
        node = regex_to_ir(f"(?:{core})", exclude=_STRING_EXCLUDE)
        any_chars = Repeat(char_class(_UNESCAPED), 0, None)
        return seq(
            *([] if anchored_start else [any_chars]), node, *([] if anchored_end else [any_chars])
        )

    # ------------------------------------------------------------ containers
    def array(self, schema: dict[str, Any]) -> Node:
        for key in ("contains", "unevaluatedItems"):
            if key in schema and (key == "contains" or schema[key] is not True):
                raise GrammarError(f"JSON Schema keyword {key!r} is not supported")
        if schema.get("uniqueItems"):
            raise GrammarError("JSON Schema keyword 'uniqueItems' is not supported")
        items = schema.get("items", True)
        prefix = schema.get("prefixItems", [])
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        lo, hi = count(schema, "minItems", 0), count(schema, "maxItems", None)
        if hi is not None and hi < lo:
            raise GrammarError(f"maxItems {hi} is below minItems {lo}")
        ws = self.ws
        comma = seq(ws, literal(","), ws)
        elements: list[Node] = [self.node(p) for p in prefix][:hi]
        rest = self.node(items) if items is not False else None
        if rest is not None and isinstance(items, dict) and items.keys() & {"properties", "items"}:
            # The item automaton is needed twice (first item, later items); as a rule used
            # twice, a large one is called rather than copied at every nesting level.
            self._objects += 1
            self.rules[f"item{self._objects}"] = rest
            rest = Ref(f"item{self._objects}")
        n = len(elements)
        # cont(i): what may follow once i items are written; item i + 1 is optional if i >= lo.
        if rest is None or hi == n:
            if lo > n:
                raise GrammarError("minItems exceeds the items the schema allows")
            cont: Node = seq()
        else:
            more_hi = None if hi is None else hi - n
            if n:
                cont = Repeat(seq(comma, rest), max(lo - n, 0), more_hi)
            else:
                tail = Repeat(seq(comma, rest), max(lo - 1, 0), None if hi is None else hi - 1)
                cont = seq(rest, tail) if lo else opt(seq(rest, tail))
        for i in range(n - 1, -1, -1):
            step = seq(comma if i else seq(), elements[i], cont)
            cont = step if i < lo else opt(step)
        return seq(literal("["), ws, cont, ws, literal("]"))

    def object(self, schema: dict[str, Any]) -> Node:
        patterns = schema.get("patternProperties") or {}
        if patterns:
            # Sound to ignore only when no property we write can match one of the patterns.
            names_written = list(schema.get("properties", {})) + list(schema.get("required", []))
            extra_allowed = schema.get("additionalProperties") not in (None, False)
            if extra_allowed or any(search(p, n) for p in patterns for n in names_written):
                raise GrammarError("JSON Schema keyword 'patternProperties' is not supported")
        names_schema = schema.get("propertyNames", {})
        if names_schema not in ({}, True):
            self.check_property_names(schema, names_schema)
        for key in (
            "dependencies",
            "dependentRequired",
            "dependentSchemas",
            "unevaluatedProperties",
        ):
            if schema.get(key, {}) not in ({}, True):
                raise GrammarError(f"JSON Schema keyword {key!r} is not supported")
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        missing = sorted(required - set(props))
        extra = schema.get("additionalProperties")
        if missing and extra is False:
            raise GrammarError(
                f"required property {missing[0]!r} is forbidden by additionalProperties: false"
            )
        props = {**props, **{name: True if extra is None else extra for name in missing}}
        lo, hi = schema.get("minProperties", 0), schema.get("maxProperties")
        ws = self.ws
        colon, comma = seq(ws, literal(":"), ws), seq(ws, literal(","), ws)
        names = list(props)
        entries = [seq(self.json_literal(n), colon, self.node(props[n])) for n in names]
        extra_entry = None
        if extra is not False and extra is not None:
            key = seq(literal('"'), self.key_not_in(names), literal('"'))
            extra_entry = seq(key, colon, self.node(extra))
        if lo > len(required) or (hi is not None and (extra_entry or hi < len(names))):
            raise GrammarError(
                "JSON Schema keywords 'minProperties'/'maxProperties' are not "
                "supported beyond what 'required' implies"
            )
        # rest[i][c]: properties i.. where c says whether one was written already (needs a comma).
        self._objects += 1
        base = f"obj{self._objects}_"
        tail_any = Repeat(seq(comma, extra_entry), 0, None) if extra_entry else None
        for i in range(len(names), -1, -1):
            for wrote in (0, 1):
                if i == len(names):
                    if tail_any is None:
                        node = seq()
                    elif wrote:
                        node = tail_any
                    else:
                        node = opt(seq(extra_entry, tail_any))  # type: ignore[arg-type]
                else:
                    # Entry i and what follows it, as one rule: reached with or without a
                    # comma, it is built once (nested objects would otherwise double per level).
                    entry = f"{base}e{i}"
                    self.rules[entry] = seq(entries[i], Ref(f"{base}{i + 1}_1"))
                    node = seq(comma, Ref(entry)) if wrote else Ref(entry)
                    if names[i] not in required:
                        node = alt(node, Ref(f"{base}{i + 1}_{wrote}"))
                self.rules[f"{base}{i}_{wrote}"] = node
        return seq(literal("{"), ws, Ref(f"{base}0_0"), ws, literal("}"))

    def check_property_names(self, schema: dict[str, Any], names_schema: Any) -> None:
        """`propertyNames: {pattern}` holds by construction when no free key can be written
        (additionalProperties absent or false) and every name we may write matches."""
        if (
            not isinstance(names_schema, dict)
            or "pattern" not in names_schema
            or not set(names_schema) <= {"pattern", "type"}
            or names_schema.get("type", "string") != "string"
            or schema.get("additionalProperties") not in (None, False)
        ):
            raise GrammarError("JSON Schema keyword 'propertyNames' is not supported")
        pattern = names_schema["pattern"]
        node = self.pattern(pattern)
        for name in [*schema.get("properties", {}), *schema.get("required", [])]:
            if not name_matches(pattern, node, name):
                raise GrammarError(
                    f"property {name!r} may not match propertyNames pattern {pattern!r}"
                )

    def key_not_in(self, names: list[str]) -> Node:
        """String bodies other than the given keys: a trie that must leave every key's path."""
        trie: dict[str, Any] = {}
        for name in names:
            node = trie
            for ch in name:
                node = node.setdefault(ch, {})
            node[""] = {}
        free = self.string_body()

        def walk(node: dict[str, Any]) -> Node:
            kids = [c for c in node if c]
            # Escapes are only allowed after leaving the trie, so a key cannot be spelt
            # with \\u escapes to dodge the exclusion.
            others = [r for r in _UNESCAPED]
            for c in kids:
                cp = ord(c)
                others = [
                    p
                    for lo, hi in others
                    for p in ((lo, min(hi, cp - 1)), (max(lo, cp + 1), hi))
                    if p[0] <= p[1]
                ]
            options = [seq(char_class(others), free)]
            options += [seq(literal(c), walk(node[c])) for c in kids]
            if "" not in node:
                options.append(seq())
            return alt(*options)

        return walk(trie)

    def any_value(self) -> Node:
        if "any_value" not in self.rules:
            ws = self.ws
            colon, comma = seq(ws, literal(":"), ws), seq(ws, literal(","), ws)
            string = seq(literal('"'), self.string_body(), literal('"'))
            self.rules["any_value"] = NOTHING
            value = Ref("any_value")
            member = seq(string, colon, value)
            obj = seq(
                literal("{"),
                ws,
                opt(seq(member, Repeat(seq(comma, member), 0, None))),
                ws,
                literal("}"),
            )
            arr = seq(
                literal("["),
                ws,
                opt(seq(value, Repeat(seq(comma, value), 0, None))),
                ws,
                literal("]"),
            )
            self.rules["any_value"] = alt(
                obj,
                arr,
                string,
                self.number({}, False),
                literal("true"),
                literal("false"),
                literal("null"),
            )
        return Ref("any_value")


def json_schema_to_grammar(schema: Any, whitespace: str = r"[ ]?") -> Grammar:
    return JsonSchemaCompiler(schema, whitespace).compile()
