"""StructuredOutput: what a request's output must match (exactly one kind of constraint)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_KINDS = ("json_schema", "regex", "grammar", "choice", "json_object")


@dataclass(frozen=True)
class StructuredOutput:
    """One of: a JSON Schema (dict or JSON text), a regex, a CFG text, a choice list, or any
    JSON object (`json_object=True`). `whitespace` is the regex allowed between JSON tokens.
    `backend` names the grammar engine: "intaglio" (ours) or "xgrammar" (when installed).
    """

    json_schema: str | dict[str, Any] | None = None  # a dict is kept as JSON text (hashable)
    regex: str | None = None
    grammar: str | None = None
    choice: tuple[str, ...] | None = None
    json_object: bool = False
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
