"""StructuredOutput: what a request's output must match (exactly one kind of constraint)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_KINDS = ("json_schema", "regex", "grammar", "choice", "json_object", "tagged_json")


@dataclass(frozen=True)
class TaggedJson:
    """Free text in which `begin` does not occur, then optionally blocks of `begin`, a JSON
    value following `schema`, and `end`, then the end of the output (frontends/tagged.py has
    the exact shape): how tool-calling models write Hermes `<tool_call>` blocks.
    `max_blocks`: at most this many blocks (None: any number)."""

    begin: str
    end: str
    schema: str | dict[str, Any]  # a dict is kept as JSON text (hashable)
    max_blocks: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.schema, str):
            object.__setattr__(self, "schema", json.dumps(self.schema, sort_keys=False))
        if not self.begin or not self.end:
            raise ValueError("invalid StructuredOutput: tagged_json needs a begin and an end")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError("invalid StructuredOutput: tagged_json max_blocks must be >= 1")


@dataclass(frozen=True)
class StructuredOutput:
    """One of: a JSON Schema (dict or JSON text), a regex, a CFG text, a choice list, any
    JSON object (`json_object=True`), or free text with tagged JSON blocks (`tagged_json`).
    `whitespace` is the regex allowed between JSON tokens.
    `backend` names the grammar engine: "intaglio" (ours) or "xgrammar" (when installed).
    """

    json_schema: str | dict[str, Any] | None = None  # a dict is kept as JSON text (hashable)
    regex: str | None = None
    grammar: str | None = None
    choice: tuple[str, ...] | None = None
    json_object: bool = False
    tagged_json: TaggedJson | None = None
    whitespace: str = r"[ ]?"
    backend: str = "intaglio"

    def __post_init__(self) -> None:
        schema = self.json_schema
        if schema is not None and not isinstance(schema, str):
            object.__setattr__(self, "json_schema", json.dumps(schema, sort_keys=False))
        elif isinstance(schema, str):
            try:
                json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"invalid StructuredOutput: json_schema is not JSON: {e}") from e
        if isinstance(self.tagged_json, dict):
            object.__setattr__(self, "tagged_json", TaggedJson(**self.tagged_json))
        if self.choice is not None:
            choice = (self.choice,) if isinstance(self.choice, str) else tuple(self.choice)
            if not choice or not all(isinstance(c, str) and c for c in choice):
                raise ValueError("invalid StructuredOutput: choice must be non-empty strings")
            object.__setattr__(self, "choice", choice)
        given = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError(
                f"invalid StructuredOutput: give exactly one of {list(_KINDS)}, got {given}"
            )
        if self.backend not in ("intaglio", "xgrammar"):
            raise ValueError(f"invalid StructuredOutput: unknown backend {self.backend!r}")

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    @property
    def schema(self) -> Any:
        schema = self.json_schema  # JSON text once constructed
        return json.loads(schema) if isinstance(schema, str) else schema

    @classmethod
    def from_value(cls, value: Any) -> StructuredOutput:
        if isinstance(value, StructuredOutput):
            return value
        if isinstance(value, str):  # the CLI flag: --structured '{"regex": "[0-9]+"}'
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"invalid structured output spec (not JSON): {e}") from e
        if isinstance(value, dict):
            return cls(**value)
        raise ValueError(f"invalid structured output spec {value!r}")
