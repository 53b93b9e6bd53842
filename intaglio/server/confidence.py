"""Confidence fields of a choice (non-streaming responses), when the request asked for them."""

from __future__ import annotations

from typing import Any

from intaglio.engine.outputs import CompletionOutput
from intaglio.sampling.confidence import group_confidences
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
