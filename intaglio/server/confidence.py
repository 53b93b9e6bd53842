"""Confidence fields of a choice, when the request asked for them: all of them in a response,
each chunk's own tokens' in a stream."""

from __future__ import annotations

from typing import Any

from intaglio.engine.outputs import CompletionOutput
from intaglio.sampling.confidence import GroupConfidence, group_confidences
from intaglio.sampling.params import SamplingParams


def confidence_fields(output: CompletionOutput, window: int | None) -> dict[str, Any]:
    """Per-token confidences and their sliding-window group confidences; {} when not asked."""
    if output.confidences is None:
        return {}
    window = window or SamplingParams.confidence_window
    return {
        "confidences": output.confidences,
        "group_confidences": group_confidences(output.confidences, window),
    }


class StreamConfidences:
    """The confidence fields of each streamed chunk: its tokens' confidences and group
    confidences (each choice's window carries over from its earlier chunks)."""

    def __init__(self, window: int | None) -> None:
        self._window = window or SamplingParams.confidence_window
        self._groups: dict[int, GroupConfidence] = {}

    def fields(self, index: int, confidences: list[float] | None) -> dict[str, Any]:
        """{} when not asked; `index` is the choice's."""
        if confidences is None:
            return {}
        group = self._groups.setdefault(index, GroupConfidence(self._window))
        return {
            "confidences": confidences,
            "group_confidences": [group.add(c) for c in confidences],
        }
