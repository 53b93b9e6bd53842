"""Pooling: an embedding request's prompt hidden states turned into one vector.

An embedding request is a prompt-only request: its steps compute the prompt like any prefill,
and instead of sampling at the end it reports the model's final hidden states (after the
final norm) pooled over the prompt, as vLLM serves a decoder model for embeddings: the last
token's state (vLLM's default for decoder models) or the mean of every position's. The
executor sums the rows each step reaches (`ExecutorOutput.pooled`), the engine adds the sums
up per request, and `vector` turns the total into the embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from intaglio.errors import RequestError

POOLING_TYPES = ("last", "mean")


@dataclass(frozen=True)
class Pooling:
    type: str = "last"  # "last": the last prompt token's state; "mean": all positions' mean
    normalize: bool = True  # scale the vector to unit L2 norm (as vLLM does by default)

    def __post_init__(self) -> None:
        if self.type not in POOLING_TYPES:
            raise RequestError(
                f"pooling must be one of {POOLING_TYPES}, got {self.type!r}", "pooling"
            )
        if not isinstance(self.normalize, bool):
            raise RequestError(
                f"normalize must be true or false, got {self.normalize!r}", "normalize"
            )

    @classmethod
    def from_value(cls, value: Any) -> Pooling:
        """A Pooling, its type ("last", "mean"), or a dict of its fields."""
        if isinstance(value, Pooling):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and set(value) <= {"type", "normalize"}:
            return cls(**value)
        raise RequestError(
            f"pooling must be 'last', 'mean' or {{'type': ..., 'normalize': ...}}, got {value!r}",
            "pooling",
        )

    @property
    def reads_every_position(self) -> bool:
        """Mean pooling needs every prompt position's hidden state (no prefix-cache hits)."""
        return self.type == "mean"

    def vector(self, total: list[float], count: int) -> list[float]:
        """The embedding from the sum of `count` pooled rows (one row for last pooling)."""
        vector = [x / count for x in total] if count > 1 else list(total)
        if not self.normalize:
            return vector
        norm = math.sqrt(math.fsum(x * x for x in vector))
        return [x / max(norm, 1e-12) for x in vector]  # torch's F.normalize floor
