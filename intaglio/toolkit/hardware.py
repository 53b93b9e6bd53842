"""Hardware descriptions: validated JSON files of throughput, memory levels, links, efficiency.

A description gives peak matmul (matrix-unit) and vector throughput per dtype in TFLOP/s, memory
levels from the chip outward (capacity in GiB, bandwidth in GB/s, `on_chip` for SRAM), the
interconnect (per-device, per-direction GB/s and latency), and efficiency curves: the fraction
of peak an op of a given size reaches, as (size, fraction) points interpolated in log(size):
matmul by its rows (the tokens it multiplies; skinny matmuls waste matrix tiles), vector by
FLOPs, memory by bytes. `compute_memory_overlap` (0 to 1, default 1) says how far an op's
compute and memory time overlap: 1 takes their max (a GPU's latency hiding), 0 their sum.
Fixed costs: `op_overhead_us` per launched op and
`step_overhead_us` per engine step (host-side scheduling and sampling). Optional `power_w`
and `price_usd_per_hour` (one device) give tokens per joule and dollars per million tokens.
`kind_efficiency` (optional) scales the efficiency of one op kind, for a backend whose kernel
for it is weak. Every number says where it comes from in `sources`; guessed ones are listed
in `assumptions`.

Shipped files live in intaglio/toolkit/hardware/*.json; `load_hardware` takes one of their names
or a path. `with_overrides` sets fields by dotted path ("memory.0.bandwidth_gbs=4000") for sweeps.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intaglio.toolkit.onchip import OnChip, parse_on_chip
from intaglio.toolkit.ops import DTYPE_BYTES, KINDS, canonical_dtype

HARDWARE_DIR = Path(__file__).with_name("hardware")
_TOP_KEYS = {
    "name",
    "description",
    "matmul_tflops",
    "vector_tflops",
    "memory",
    "interconnect",
    "efficiency",
    "kind_efficiency",
    "compute_memory_overlap",
    "op_overhead_us",
    "step_overhead_us",
    "sources",
    "assumptions",
    "calibration",
    "on_chip",
    "power_w",
    "price_usd_per_hour",
}
_LEVEL_KEYS = {"name", "capacity_gib", "bandwidth_gbs", "on_chip"}
_LINK_KEYS = {"name", "bandwidth_gbs", "latency_us"}
_REQUIRED = ("name", "matmul_tflops", "vector_tflops", "memory", "efficiency", "sources")
_CURVES = ("matmul", "vector", "memory")


class HardwareError(ValueError):
    """A hardware description that is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    capacity_bytes: float
    bandwidth_bytes_s: float
    on_chip: bool


@dataclass(frozen=True)
class Curve:
    """Efficiency against op size, piecewise linear in log10(size), flat beyond the ends."""

    log_sizes: np.ndarray
    fractions: np.ndarray

    def __call__(self, size: np.ndarray | float) -> np.ndarray:
        x = np.log10(np.maximum(np.asarray(size, dtype=np.float64), 1.0))
        return np.interp(x, self.log_sizes, self.fractions)


@dataclass(frozen=True)
class Hardware:
    name: str
    matmul_flops: dict[str, float]  # dtype -> FLOP/s
    vector_flops: dict[str, float]
    memory: tuple[MemoryLevel, ...]  # inner (on-chip) to outer
    link_bytes_s: float  # per device, per direction
    link_latency_s: float
    matmul_eff: Curve
    vector_eff: Curve
    memory_eff: Curve
    op_overhead_s: float
    step_overhead_s: float
    kind_eff: dict[str, float]  # op kind -> extra efficiency factor (a backend's weak kernel)
    overlap: float  # 1: an op takes max(compute, memory); 0: their sum
    raw: dict[str, Any]  # the validated document, for reports and overrides
    on_chip: OnChip | None = None  # matrix-unit geometry and tile buffer, for lowering
    power_w: float | None = None  # one device under load, for tokens per joule
    price_usd_per_hour: float | None = None  # one device, for dollars per million tokens

    @property
    def main_memory(self) -> MemoryLevel:
        """The outermost level: where weights and KV cache live unless they fit on chip."""
        return self.memory[-1]

    def matmul_rate(self, dtype: str) -> float:
        return _rate(self.matmul_flops, dtype, self.name, "matmul_tflops")

    def vector_rate(self, dtype: str) -> float:
        return _rate(self.vector_flops, dtype, self.name, "vector_tflops")

    def with_overrides(self, overrides: dict[str, Any]) -> Hardware:
        """A copy with fields set by dotted path, e.g. {"matmul_tflops.bfloat16": 2000}.

        A path may add an optional field the description lacks; validation of the result
        rejects any key, at any depth, that a description cannot have (a typo)."""
        doc = copy.deepcopy(self.raw)
        for path, value in overrides.items():
            try:
                _set_path(doc, path, value)
            except (KeyError, IndexError, ValueError, TypeError):
                raise HardwareError(f"{self.name}: no field {path!r} to override") from None
        return from_dict(doc, source=f"{self.name} with overrides {sorted(overrides)}")


def _rate(table: dict[str, float], dtype: str, name: str, field: str) -> float:
    if dtype not in table:
        raise HardwareError(
            f"hardware {name!r} has no {field} for {dtype}; it lists {sorted(table)}"
        )
    return table[dtype]


def _set_path(doc: Any, path: str, value: Any) -> None:
    keys = path.split(".")
    node = doc
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def available_hardware() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.json"))


def load_hardware(spec: str | Path) -> Hardware:
    """A shipped description's name (see available_hardware) or a path to a JSON file."""
    path = Path(spec)
    if not path.is_file():
        path = HARDWARE_DIR / f"{spec}.json"
    if not path.is_file():
        raise HardwareError(
            f"no hardware description {str(spec)!r}: not a file and not one of "
            f"{available_hardware()}"
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HardwareError(f"{path}: not valid JSON ({e})") from None
    return from_dict(doc, source=str(path))


def from_dict(doc: Any, source: str = "<dict>") -> Hardware:
    """Validate a description document and build the Hardware it describes."""

    def fail(msg: str) -> HardwareError:
        return HardwareError(f"{source}: {msg}")

    if not isinstance(doc, dict):
        raise fail("the description must be a JSON object")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise fail(f"missing required field(s) {missing}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown field(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    matmul = _rates(doc["matmul_tflops"], "matmul_tflops", fail)
    vector = _rates(doc["vector_tflops"], "vector_tflops", fail)
    levels = doc["memory"]
    if not isinstance(levels, list) or not levels:
        raise fail("memory must be a non-empty list of levels, on-chip first")
    memory = tuple(_level(lv, i, fail) for i, lv in enumerate(levels))
    link = doc.get("interconnect") or {"bandwidth_gbs": 0.0, "latency_us": 0.0}
    _known_keys(link, _LINK_KEYS, "interconnect", fail)
    bw = _positive_or_zero(link.get("bandwidth_gbs"), "interconnect.bandwidth_gbs", fail)
    lat = _positive_or_zero(link.get("latency_us"), "interconnect.latency_us", fail)
    eff = doc["efficiency"]
    if not isinstance(eff, dict) or set(eff) - set(_CURVES) or not set(_CURVES) <= set(eff):
        raise fail(f"efficiency must have exactly the curves {list(_CURVES)}")
    curves = {k: _curve(eff[k], f"efficiency.{k}", fail) for k in _CURVES}
    kind_eff = doc.get("kind_efficiency") or {}
    if not isinstance(kind_eff, dict):
        raise fail("kind_efficiency must map op kinds to fractions")
    for kind, value in kind_eff.items():
        if kind not in KINDS:
            raise fail(f"kind_efficiency: unknown op kind {kind!r}; kinds: {list(KINDS)}")
        if not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise fail(f"kind_efficiency.{kind} must lie in (0, 1], got {value!r}")
    overlap = doc.get("compute_memory_overlap", 1.0)
    if not isinstance(overlap, (int, float)) or not 0 <= overlap <= 1:
        raise fail(f"compute_memory_overlap must lie in [0, 1], got {overlap!r}")
    if not isinstance(doc["sources"], dict) or not doc["sources"]:
        raise fail("sources must map each figure to where it comes from")
    return Hardware(
        name=str(doc["name"]),
        matmul_flops=matmul,
        vector_flops=vector,
        memory=memory,
        link_bytes_s=bw * 1e9,
        link_latency_s=lat * 1e-6,
        matmul_eff=curves["matmul"],
        vector_eff=curves["vector"],
        memory_eff=curves["memory"],
        op_overhead_s=_positive_or_zero(doc.get("op_overhead_us", 0.0), "op_overhead_us", fail)
        * 1e-6,
        step_overhead_s=_positive_or_zero(
            doc.get("step_overhead_us", 0.0), "step_overhead_us", fail
        )
        * 1e-6,
        kind_eff={k: float(v) for k, v in kind_eff.items()},
        overlap=float(overlap),
        raw=doc,
        on_chip=parse_on_chip(doc["on_chip"], fail) if "on_chip" in doc else None,
        power_w=_optional_positive(doc, "power_w", fail),
        price_usd_per_hour=_optional_positive(doc, "price_usd_per_hour", fail),
    )


def _rates(table: Any, field: str, fail: Any) -> dict[str, float]:
    if not isinstance(table, dict) or not table:
        raise fail(f"{field} must map dtypes to TFLOP/s")
    out = {}
    for dtype, value in table.items():
        try:
            name = canonical_dtype(dtype)
        except ValueError:
            raise fail(f"{field}: unknown dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}") from None
        if not isinstance(value, (int, float)) or value <= 0:
            raise fail(f"{field}.{dtype} must be a positive number, got {value!r}")
        out[name] = float(value) * 1e12
    return out


def _level(lv: Any, i: int, fail: Any) -> MemoryLevel:
    where = f"memory[{i}]"
    if not isinstance(lv, dict):
        raise fail(f"{where} must be an object")
    _known_keys(lv, _LEVEL_KEYS, where, fail)
    for key in ("name", "capacity_gib", "bandwidth_gbs"):
        if key not in lv:
            raise fail(f"{where} is missing {key!r}")
    for key in ("capacity_gib", "bandwidth_gbs"):
        if not isinstance(lv[key], (int, float)) or lv[key] <= 0:
            raise fail(f"{where}.{key} must be a positive number, got {lv[key]!r}")
    return MemoryLevel(
        str(lv["name"]),
        float(lv["capacity_gib"]) * 2**30,
        float(lv["bandwidth_gbs"]) * 1e9,
        bool(lv.get("on_chip", False)),
    )


def _optional_positive(doc: dict[str, Any], key: str, fail: Any) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or value <= 0:
        raise fail(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _known_keys(obj: Any, known: set[str], where: str, fail: Any) -> None:
    if not isinstance(obj, dict):
        raise fail(f"{where} must be an object")
    unknown = sorted(set(obj) - known)
    if unknown:
        raise fail(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")


def _curve(points: Any, field: str, fail: Any) -> Curve:
    ok = (
        isinstance(points, list)
        and points
        and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
            for p in points
        )
    )
    if not ok:
        raise fail(f"{field} must be a list of [size, fraction] pairs")
    sizes = np.array([p[0] for p in points], dtype=np.float64)
    fracs = np.array([p[1] for p in points], dtype=np.float64)
    if np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise fail(f"{field}: sizes must be positive and strictly increasing")
    if np.any(fracs <= 0) or np.any(fracs > 1):
        raise fail(f"{field}: fractions must lie in (0, 1]")
    return Curve(np.log10(sizes), fracs)


def _positive_or_zero(value: Any, field: str, fail: Any) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, (int, float)) or value < 0:
        raise fail(f"{field} must be a non-negative number, got {value!r}")
    return float(value)
