"""The registry of capture leaves: modules recorded as ops of their own instead of being traced.

A leaf runs normally and a handler turns it into ops; an opaque leaf (data-dependent code, such
as a mixture-of-experts block) is not run at all: its handler returns the ops and an output of
the right shape. capture.py reads the registry; toolkit/moe.py and users add to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from intaglio.toolkit.ops import Op


@dataclass(frozen=True)
class LeafContext:
    name: str  # qualified module name
    layer: int | None


# (module, ctx, args, output) -> ops, for leaves that run normally.
LeafHandler = Callable[[nn.Module, LeafContext, tuple, torch.Tensor], list[Op]]
# (module, ctx, args) -> (ops, output), for opaque leaves whose forward is not run.
OpaqueHandler = Callable[[nn.Module, LeafContext, tuple], tuple[list[Op], torch.Tensor]]

LEAVES: dict[type, LeafHandler] = {}
OPAQUE: dict[type, OpaqueHandler] = {}


def register_leaf(cls: type, handler: LeafHandler) -> None:
    """Record every `cls` module as the ops `handler` returns (its internals are not traced)."""
    LEAVES[cls] = handler


def register_opaque_leaf(cls: type, handler: OpaqueHandler) -> None:
    """Replace `cls`'s forward during capture by `handler` (for data-dependent code, e.g. MoE)."""
    OPAQUE[cls] = handler
