"""Workspace: the [B, V]-sized buffers the sampler's chain reuses from step to step.

On the CPU a fresh tensor of [B, V] floats (12 MB at B=64, V=49K) is handed back to the
operating system when freed, so allocating one each step pays its page faults each step, more
than the work done in it. A Sampler keeps one Workspace; the buffers grow to the largest batch
seen and are views of it.
"""

from __future__ import annotations

import torch


def _view(buffer: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    return buffer[: rows * width].view(rows, width)


class Workspace:
    def __init__(self) -> None:
        self._copy = torch.empty(0)
        self._zeros = torch.empty(0)

    def copy_of(self, logits: torch.Tensor) -> torch.Tensor:
        """A float32 copy of logits [B, V], which the chain may edit in place."""
        if self._copy.numel() < logits.numel() or self._copy.device != logits.device:
            self._copy = torch.empty(logits.numel(), dtype=torch.float32, device=logits.device)
        return _view(self._copy, *logits.shape).copy_(logits)

    def zeros(self, rows: int, width: int, device: torch.device) -> torch.Tensor:
        """A float32 [rows, width] table of zeros; whoever writes to it must zero those entries
        again before the next call (scatter at the same indices), so no pass clears it."""
        if self._zeros.numel() < rows * width or self._zeros.device != device:
            self._zeros = torch.zeros(rows * width, dtype=torch.float32, device=device)
        return _view(self._zeros, rows, width)
