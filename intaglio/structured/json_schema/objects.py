"""patternProperties folded into an object schema's listed properties.

A listed (or required) name that a pattern matches must also satisfy that pattern's schema, so
the schemas are merged into its entry; whether a name matches is decided by both Python's `re`
and our automaton, and a name they disagree on is refused. Free keys are written only for a
single pattern (keys that match it and differ from the listed names); keys that only
`additionalProperties` would allow are not written, which only generates less.
"""

from __future__ import annotations

from typing import Any, Protocol

from intaglio.structured.grammar.ir import GrammarError, Node
from intaglio.structured.json_schema.keywords import name_decided
from intaglio.structured.json_schema.merge import SchemaMerger


class Context(Protocol):
    merger: SchemaMerger

    def pattern(self, pattern: str) -> Node: ...


def fold_patterns(
    schema: dict[str, Any], ctx: Context
) -> tuple[dict[str, Any], tuple[str, Any] | None]:
    """(schema without patternProperties, (pattern, value schema) for free keys or None)."""
    patterns = schema.get("patternProperties") or {}
    if not patterns:
        return schema, None
    props = dict(schema.get("properties", {}))
    extra = schema.get("additionalProperties")
    for name in dict.fromkeys([*props, *schema.get("required", [])]):
        matched = []
        for pattern, sub in patterns.items():
            hit = name_decided(pattern, ctx.pattern(pattern), name)
            if hit is None:
                raise GrammarError(
                    f"patternProperties: cannot tell whether property {name!r} matches "
                    f"pattern {pattern!r}"
                )
            if hit:
                matched.append(sub)
        if matched:  # additionalProperties does not apply to a name a pattern matches
            own = props.get(name, True)
            real = [s for s in [own, *matched] if s is not True and s != {}]
            props[name] = real[0] if len(real) == 1 else ctx.merger.merge(real) if real else True
        elif name not in props:
            props[name] = True if extra is None else extra
    out = {k: v for k, v in schema.items() if k != "patternProperties"}
    out["properties"] = props
    out["additionalProperties"] = False
    free = None
    if len(patterns) == 1 and "propertyNames" not in schema:
        free = next(iter(patterns.items()))
    return out, free
