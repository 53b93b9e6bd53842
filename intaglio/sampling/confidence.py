"""Confidence of a trace (after DeepConf, Fu et al. 2025).

Token confidence: the negative mean log-probability of the model's top-k tokens at that
position (high when the distribution is peaked). Group confidence: the mean token confidence
over a sliding window of the last `window` tokens. A request with a threshold stops early
(finish reason low_confidence) once a full window's group confidence falls below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def token_confidence(raw_logprobs: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """[B, V] log-probabilities, [B] k per row (>= 1) -> [B] confidences."""
    k_max = int(top_k.max())
    top = raw_logprobs.topk(k_max, dim=-1).values.clamp_min(torch.finfo(raw_logprobs.dtype).min)
    within = torch.arange(k_max, device=top.device)[None, :] < top_k[:, None]
    return -torch.where(within, top, 0.0).sum(dim=-1) / top_k


@dataclass
class GroupConfidence:
    """The sliding-window mean ending at each token (shorter windows at the start), token by
    token: a stream gives each chunk the group confidences of its own tokens."""

    window: int
    values: list[float] = field(default_factory=list)
    total: float = 0.0

    def add(self, confidence: float) -> float:
        i = len(self.values)
        self.values.append(confidence)
        self.total += confidence
        if i >= self.window:
            self.total -= self.values[i - self.window]
        return self.total / min(i + 1, self.window)


def group_confidences(confidences: list[float], window: int) -> list[float]:
    """The sliding-window mean ending at each token (shorter windows at the start)."""
    group = GroupConfidence(window)
    return [group.add(c) for c in confidences]


@dataclass
class ConfidenceState:
    top_k: int
    window: int
    threshold: float | None  # None: report only
    values: list[float] = field(default_factory=list)  # one per output token
    low: bool = False  # a full window fell below the threshold: the trace stops

    def add(self, confidence: float) -> None:
        self.values.append(confidence)
        if self.threshold is not None and len(self.values) >= self.window:
            group = sum(self.values[-self.window :]) / self.window
            self.low = group < self.threshold
