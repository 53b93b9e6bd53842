"""The on-chip part of a hardware description: matrix-unit geometry and the tile buffer.

Optional `on_chip` section of a description:

    "on_chip": {
      "matrix_unit": {"kind": "systolic", "rows": 128, "cols": 128, "count": 16},
      "tile_buffer_mib": 48, "tile_buffer_gbs": 400000,
      "resident": ["weights", "kv"]
    }

A systolic unit is a weight-stationary rows x cols array: one fold loads a rows x cols block
of the stationary operand and streams m rows through it in 2 rows + cols + m - 2 cycles
(SCALE-Sim's weight-stationary count: load, fill and drain, then one row per cycle). A "tile"
unit (a tensor core) does one m x k x n block per cycle: {"kind": "tile", "m": 16, "k": 16,
"n": 8, "count": 528}. The cycle time follows from the description's peak: every unit busy
every cycle gives matmul_tflops at that dtype. The tile buffer holds the tiles a matrix op
works on (double-buffered inputs and the fp32 accumulator); the on-chip memory level (the
description's first `on_chip` level) keeps resident what `resident` names, in that order, and
activations in what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RESIDENT_CLASSES = ("weights", "kv")
_UNIT_KEYS = {
    "systolic": {"kind", "rows", "cols", "count"},
    "tile": {"kind", "m", "k", "n", "count"},
}
_KEYS = {"matrix_unit", "tile_buffer_mib", "tile_buffer_gbs", "resident"}


@dataclass(frozen=True)
class MatrixUnit:
    kind: str  # "systolic" or "tile"
    block: tuple[int, int, int]  # (m, k, n) granularity: systolic (1, rows, cols)
    count: int

    @property
    def macs_per_cycle(self) -> int:
        m, k, n = self.block
        return (1 if self.kind == "systolic" else m) * k * n * self.count

    def cycles(self, m: Any, k: Any, n: Any, batch: Any = 1) -> np.ndarray:
        """Cycles for all units to compute `batch` independent m x k x n blocks (arrays
        broadcast); the blocks' folds spread over the units."""
        m, k, n, batch = (np.asarray(x, dtype=np.float64) for x in (m, k, n, batch))
        bm, bk, bn = self.block
        if self.kind == "systolic":
            folds = batch * np.ceil(k / bk) * np.ceil(n / bn)
            return np.ceil(folds / self.count) * (2 * bk + bn + m - 2)
        blocks = batch * np.ceil(m / bm) * np.ceil(k / bk) * np.ceil(n / bn)
        return np.ceil(blocks / self.count)


@dataclass(frozen=True)
class OnChip:
    unit: MatrixUnit
    tile_buffer_bytes: float
    tile_buffer_bytes_s: float  # feeding the matrix units; inf when not given
    resident: tuple[str, ...]  # what the on-chip memory level keeps, in order


def parse_on_chip(doc: Any, fail: Any) -> OnChip:
    """Validate the `on_chip` section; `fail(message)` makes the description's error."""
    if not isinstance(doc, dict):
        raise fail("on_chip must be an object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise fail(f"on_chip: unknown field(s) {unknown}; known: {sorted(_KEYS)}")
    unit = doc.get("matrix_unit")
    kind = unit.get("kind") if isinstance(unit, dict) else None
    if kind not in _UNIT_KEYS:
        raise fail(f"on_chip.matrix_unit.kind must be one of {sorted(_UNIT_KEYS)}, got {kind!r}")
    assert isinstance(unit, dict)
    if set(unit) != _UNIT_KEYS[kind]:
        raise fail(f"on_chip.matrix_unit ({kind}) needs exactly {sorted(_UNIT_KEYS[kind])}")
    for key in _UNIT_KEYS[kind] - {"kind"}:
        if not isinstance(unit[key], int) or unit[key] < 1:
            raise fail(f"on_chip.matrix_unit.{key} must be a positive integer, got {unit[key]!r}")
    block = (
        (1, unit["rows"], unit["cols"]) if kind == "systolic" else (unit["m"], unit["k"], unit["n"])
    )
    size = doc.get("tile_buffer_mib")
    if not isinstance(size, (int, float)) or size <= 0:
        raise fail(f"on_chip.tile_buffer_mib must be a positive number, got {size!r}")
    bw = doc.get("tile_buffer_gbs", float("inf"))
    if not isinstance(bw, (int, float)) or bw <= 0:
        raise fail(f"on_chip.tile_buffer_gbs must be a positive number, got {bw!r}")
    resident = doc.get("resident", list(RESIDENT_CLASSES))
    if not isinstance(resident, list) or not set(resident) <= set(RESIDENT_CLASSES):
        raise fail(f"on_chip.resident must list some of {list(RESIDENT_CLASSES)}, got {resident!r}")
    return OnChip(
        MatrixUnit(kind, block, unit["count"]),
        float(size) * 2**20,
        float(bw) * 1e9,
        tuple(resident),
    )
