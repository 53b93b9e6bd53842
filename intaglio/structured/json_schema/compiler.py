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

from intaglio.structured.frontends.regex import regex_to_ir, top_level_branches, unwrap_group
from intaglio.structured.frontends.regex_complement import complement
from intaglio.structured.grammar.ir import (
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
    surely_nullable,
)
from intaglio.structured.json_schema.combinators import Union, expand
from intaglio.structured.json_schema.formats import FORMATS, FREE_FORMATS
from intaglio.structured.json_schema.keywords import (
    ALL_TYPES,
    ANNOTATIONS,
    BY_TYPE,
    count,
    name_matches,
    surely_empty,
)
from intaglio.structured.json_schema.lengths import bounded_class_repeat
from intaglio.structured.json_schema.members import member_chain, unique_array
from intaglio.structured.json_schema.merge import (
    NOT_IN,
    NOT_PATTERN,
    PATTERNS,
    SchemaMerger,
    enum_values,
    never,
)
from intaglio.structured.json_schema.numbers import bounded_number, integer_bounds, integer_range
from intaglio.structured.json_schema.objects import fold_patterns
from intaglio.structured.json_schema.values import value_ok

# Characters a JSON string may hold unescaped: anything but `"`, `\` and controls.
_UNESCAPED = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x10FFFF)]
_STRING_EXCLUDE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
# Escapes, with \u limited to non-surrogates so each escape is one character after decoding.
_ESCAPE = r'\\(["\\/bfnrt]|u([0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))'

# Printable ASCII but `"` and `\`: characters every regex dialect reads alike.
_PLAIN_ASCII = sum(1 << b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))
# Patterns every string satisfies (search semantics).
_MATCH_ALL = ("", ".*", "^.*", ".*?", "(.*)", "^(.*)")
_MAX_BOUNDED_LENGTH = 2048  # longer maxLength bounds generate at most this many characters
_MAX_DERIVED_DEPTH = 100  # nesting of merged schemas (a merge that never repeats)


class JsonSchemaCompiler:
    def __init__(self, schema: Any, whitespace: str = r"[ ]?") -> None:
        self.root = schema
        self.ws = regex_to_ir(whitespace)
        self.rules: dict[str, Node] = {}
        self._ref_names: dict[str, str] = {}
        self._failed: dict[str, GrammarError] = {}
        self._derived: dict[str, str] = {}
        self._open: set[str] = set()  # rules being built (their placeholder is not final)
        self._depth = 0
        self._objects = 0
        self.merger = SchemaMerger(self.resolve)

    def compile(self) -> Grammar:
        try:
            self.rules["root"] = self.node(self.root)
        except (AttributeError, TypeError, KeyError, IndexError) as e:
            # A keyword holding the wrong kind of value (a list where an object belongs...);
            # the exception's own text describes our code, not the schema.
            raise GrammarError(
                "malformed JSON Schema: a keyword holds a value of the wrong type"
            ) from e
        return Grammar(self.rules, "root")

    # ------------------------------------------------------------ dispatch
    def node(self, schema: Any) -> Node:
        if schema is True or schema == {}:
            return self.any_value()
        if schema is False:
            return NOTHING
        if not isinstance(schema, dict):
            raise GrammarError(f"a schema must be an object or a boolean, got {schema!r}")
        if "$ref" in schema and set(schema) - ANNOTATIONS == {"$ref"}:
            return self.ref(schema["$ref"])
        if "$ref" in schema or "allOf" in schema:  # siblings of $ref (2019+) fold in as allOf
            return self.derived(self.merger.merge([schema]))
        for bad in ("$dynamicRef", "$recursiveRef"):
            if bad in schema:
                raise GrammarError(f"JSON Schema keyword {bad!r} is not supported")
        union = expand(schema, self.merger)
        if union is not None:
            return self.union(union)
        values = enum_values(schema)
        if values is not None:  # written literally: each must meet the rest of the schema
            rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
            values = [v for v in values if value_ok(rest, v, self)]
            return alt(*(self.json_literal(v) for v in values)) if values else NOTHING
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

    def derived(self, schema: Any) -> Node:
        """A schema built by merging: one rule per distinct schema, so recursion through
        merged `$ref` targets meets its own rule again instead of expanding forever."""
        key = json.dumps(schema, sort_keys=True, default=repr)
        name = self._derived.get(key)
        if name is None:
            if self._depth > _MAX_DERIVED_DEPTH:
                raise GrammarError("schema too deeply nested after combining allOf/anyOf/oneOf")
            name = self._derived[key] = f"merged{len(self._derived)}"
            self.rules[name] = NOTHING  # placeholder for recursive uses
            self._depth += 1
            self._open.add(name)
            try:
                self.rules[name] = self.node(schema)
            except GrammarError:
                # Met again, it is compiled again (and fails again); the placeholder stays
                # for rules that already name it.
                del self._derived[key]
                raise
            finally:
                self._depth -= 1
                self._open.discard(name)
        return Ref(name)

    def union(self, union: Union) -> Node:
        nodes = [self.derived(b) for b in union.branches]
        first_error: GrammarError | None = None
        for branch in union.optional:
            try:
                nodes.append(self.derived(branch))
            except GrammarError as e:  # one way fewer to fail a schema: generates less
                first_error = first_error or e
        if not nodes and first_error is not None:
            raise GrammarError(f"JSON Schema keyword {union.keyword!r}: {first_error}")
        if union.narrowed and all(surely_empty(n, self.rules, self._open) for n in nodes):
            raise GrammarError(
                "'oneOf' whose branches overlap in ways we cannot exclude is not supported "
                "(use anyOf if any match will do)"
            )
        return alt(*nodes) if nodes else NOTHING

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
            if schema.get(NOT_IN) or schema.get(NOT_PATTERN) or schema.get(PATTERNS):
                return self.string_combined(schema)
            return self.string(schema)
        if t == "array":
            return self.array(schema)
        return self.object(schema)

    # ------------------------------------------------------------ $ref
    def ref(self, ref: str) -> Node:
        if not ref.startswith("#"):
            raise GrammarError(f"$ref {ref!r}: only references inside the schema are supported")
        if ref in self._failed:
            raise self._failed[ref]
        name = self._ref_names.get(ref)
        if name is None:
            name = self._ref_names[ref] = f"ref{len(self._ref_names)}"
            self.rules[name] = NOTHING  # placeholder: recursive references find the name
            self._open.add(name)
            try:
                self.rules[name] = self.node(self.resolve(ref))
            except GrammarError as e:
                # The placeholder stays (other rules may name it); later uses raise again.
                self._failed[ref] = e
                raise
            finally:
                self._open.discard(name)
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
            if fmt not in FORMATS and (min_len or max_len is not None):
                folded = bounded_class_repeat(parts[0], min_len, max_len)
                if folded is not None:
                    return seq(literal('"'), folded, literal('"'))
            if fmt in FORMATS:
                parts.append(regex_to_ir(FORMATS[fmt], exclude=_STRING_EXCLUDE))
            if min_len or max_len is not None:
                parts.append(self.string_body(min_len, max_len))
            body = parts[0]
            for part in parts[1:]:
                body = Intersect(body, part)
            return seq(literal('"'), body, literal('"'))
        if fmt is not None and fmt not in FREE_FORMATS:
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
        inner = unwrap_group(pattern)
        if inner is not None and (inner.startswith("^") or inner.endswith("$")):
            return self.pattern(inner)  # `(^...$)`: the anchors hold inside the group too
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
        if not (anchored_start and anchored_end) and surely_nullable(node):
            # A search that may match the empty string (`^[a-z]*`) matches every string:
            # one loop rather than a product of loops that each first visit walks.
            return any_chars
        return seq(
            *([] if anchored_start else [any_chars]), node, *([] if anchored_end else [any_chars])
        )

    def string_combined(self, schema: dict[str, Any]) -> Node:
        """A string that also matches more patterns (allOf), differs from some values and
        matches none of some patterns (what `not` excluded): the string's own automaton
        intersected with one for each."""
        own = {k: v for k, v in schema.items() if k not in (NOT_IN, NOT_PATTERN, PATTERNS)}
        node = self.string(own)
        if isinstance(node, Ref):
            node = self.rules[node.name]
        for pattern in schema.get(PATTERNS, []):
            node = Intersect(node, seq(literal('"'), self.pattern(pattern), literal('"')))
        if schema.get(NOT_IN):
            others = self.key_not_in(list(schema[NOT_IN]))
            node = Intersect(node, seq(literal('"'), others, literal('"')))
        for pattern in schema.get(NOT_PATTERN, []):
            # Over printable ASCII, where Python, ECMAScript and our reading of classes agree.
            body = complement(self.pattern(pattern), _PLAIN_ASCII)
            if body is None:
                raise GrammarError(f"'not' of pattern {pattern!r}: its complement is too large")
            node = Intersect(node, seq(literal('"'), body, literal('"')))
        return node

    # ------------------------------------------------------------ containers
    def array(self, schema: dict[str, Any]) -> Node:
        for key in ("contains", "unevaluatedItems"):
            if key in schema and (key == "contains" or schema[key] is not True):
                raise GrammarError(f"JSON Schema keyword {key!r} is not supported")
        if schema.get("uniqueItems"):
            return unique_array(self, schema)
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
                return NOTHING  # fewer items allowed than minItems: no array validates
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
        names_schema = schema.get("propertyNames", {})
        schema, free_pattern = fold_patterns(schema, self)
        names_pattern = None
        if names_schema not in ({}, True):
            names_pattern = self.property_names_pattern(schema, names_schema)
        if schema.get("unevaluatedProperties", True) not in ({}, True):
            raise GrammarError("JSON Schema keyword 'unevaluatedProperties' is not supported")
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        extra = schema.get("additionalProperties")
        extra = False if never(extra) else extra
        listed = list(props)  # free keys must differ from every listed name, forbidden or not
        props = {
            **{name: sub for name, sub in props.items() if not never(sub)},
            **{name: True if extra is None else extra for name in sorted(required - set(props))},
        }
        if any(never(props.get(name, False)) for name in required):
            return NOTHING  # a required property no value can fill: no object validates
        ws = self.ws
        colon = seq(ws, literal(":"), ws)
        names = list(props)
        entries = [seq(self.json_literal(n), colon, self.node(props[n])) for n in names]
        key_names = list(dict.fromkeys(listed + names))
        extra_entry = None
        if free_pattern is not None:
            try:
                if free_pattern[0] in _MATCH_ALL:  # any key: no pattern automaton needed
                    keys = self.key_not_in(key_names) if key_names else self.string_body()
                else:
                    keys = self.pattern(free_pattern[0])
                    if key_names:  # a free key must not be a listed name
                        keys = Intersect(keys, self.key_not_in(key_names))
                value = self.node(free_pattern[1])
                extra_entry = seq(literal('"'), keys, literal('"'), colon, value)
            except GrammarError:
                pass  # no free keys then, which only generates less
        elif extra is not False and extra is not None:
            key = self.key_not_in(key_names)
            if names_pattern is not None:
                key = Intersect(self.pattern(names_pattern), key)
            extra_entry = seq(literal('"'), key, literal('"'), colon, self.node(extra))
        lo, hi = count(schema, "minProperties", 0), count(schema, "maxProperties", None)
        return self.chain(names, entries, required, extra_entry, lo, hi, "{}")

    def chain(
        self,
        names: list[str],
        entries: list[Node],
        required: set[str],
        extra: Node | None,
        lo: int,
        hi: int | None,
        brackets: str,
    ) -> Node:
        self._objects += 1
        return member_chain(
            self.rules,
            f"obj{self._objects}_",
            names,
            entries,
            required,
            extra,
            lo,
            hi,
            self.ws,
            brackets,
        )

    def property_names_pattern(self, schema: dict[str, Any], names_schema: Any) -> str:
        """`propertyNames: {pattern}`: every listed name must surely match it (checked here);
        free keys are written only from the pattern's own strings (the caller intersects)."""
        names_schema = self.merger.merge([names_schema])
        if (
            "pattern" not in names_schema
            or not set(names_schema) <= {"pattern", "type"}
            or names_schema.get("type", "string") != "string"
        ):
            raise GrammarError("JSON Schema keyword 'propertyNames' is supported only as a pattern")
        pattern = names_schema["pattern"]
        node = self.pattern(pattern)
        for name in [*schema.get("properties", {}), *schema.get("required", [])]:
            if not name_matches(pattern, node, name):
                raise GrammarError(
                    f"property {name!r} may not match propertyNames pattern {pattern!r}"
                )
        return pattern

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
