"""Logits processors registered by name, for users' research samplers.

A request names processors in `SamplingParams.logits_processors` and passes their arguments in
`extra_args`. Each processor is called once per step with the rows that named it, batched:

    def my_processor(logits: Tensor[R, V], rows: list[ProcessorRow]) -> Tensor[R, V]

It runs inside the sampler's one chain (sampler.py), after the penalties and before the grammar
mask, so a structured request's grammar still has the last word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ProcessorRow:
    """What a processor sees of one row: its history and its request's extra_args."""

    prompt_token_ids: list[int]
    output_token_ids: list[int]
    extra_args: Mapping[str, Any]


LogitsProcessor = Callable[[torch.Tensor, list[ProcessorRow]], torch.Tensor]

_REGISTRY: dict[str, LogitsProcessor] = {}


def register_logits_processor(name: str, processor: LogitsProcessor) -> None:
    """Make `processor` available to requests as `logits_processors=[name]`."""
    if not name or not isinstance(name, str):
        raise ValueError("a logits processor needs a non-empty name")
    _REGISTRY[name] = processor


def unregister_logits_processor(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> Mapping[str, LogitsProcessor]:
    return _REGISTRY


def apply_processors(
    logits: torch.Tensor, names: list[tuple[str, ...]], rows: list[ProcessorRow]
) -> torch.Tensor:
    """Run each named processor once over the rows that name it, in each row's order."""
    depth = max((len(n) for n in names), default=0)
    for position in range(depth):  # a row's second processor sees its first one's result
        groups: dict[str, list[int]] = {}
        for row, row_names in enumerate(names):
            if position < len(row_names):
                groups.setdefault(row_names[position], []).append(row)
        for name, idx in groups.items():
            index = torch.tensor(idx, dtype=torch.int64, device=logits.device)
            out = _REGISTRY[name](logits.index_select(0, index), [rows[i] for i in idx])
            if out.shape != (len(idx), logits.shape[1]):
                raise ValueError(f"logits processor {name!r} changed the shape of its logits")
            logits = logits.index_copy(0, index, out.to(logits.dtype))
    return logits
