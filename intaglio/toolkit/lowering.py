"""Lowering a step onto a chip with an on-chip model: tiles, instructions and their schedule.

Every op of a (passed) step becomes instructions on four engines: `dma` (loads and stores
between memory levels and the tile buffer), `matrix` (the matrix units), `vector` and `link`
(collectives). Matrix ops and attention are tiled (toolkit/tiling.py); vector ops stream
through the tile buffer in chunks of a quarter of it. Each op is a double-buffered pipeline
(toolkit/pipeline.py): its loads may start as soon as the dma engine is free, so the next
op's first two tiles (weights) prefetch while the previous op computes; its computes wait for
the previous op to finish. The step's time is the last instruction's end, not a sum of
per-op rooflines.

Residency: the description's on-chip memory level first sets aside room for the step's
activations (twice the largest op's input and output), then keeps what `on_chip.resident`
names, in order (weights, then the step's KV cache), as far as its capacity goes; a fraction
f resident streams at f / on-chip + (1 - f) / main bandwidth. An op's activations live on
chip when they fit what residency leaves. Bytes are kept per class: weights, activations, KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from intaglio.toolkit import ops as K
from intaglio.toolkit.cost import OpTable, op_times
from intaglio.toolkit.hardware import Hardware, MemoryLevel
from intaglio.toolkit.onchip import OnChip
from intaglio.toolkit.ops import DTYPE_BYTES, Op
from intaglio.toolkit.pipeline import pipeline_uniform
from intaglio.toolkit.tiling import Feeds, TileChoice, tile_attention, tile_gemm

ENGINES = ("dma", "matrix", "vector", "link")
_TILED = (K.MATMUL, K.EXPERT_MATMUL, K.ROUTER)


@dataclass(frozen=True)
class Instruction:
    start_s: float
    end_s: float
    engine: str  # one of ENGINES
    kind: str  # load, compute, collective
    op: str
    op_kind: str  # the op's kind (matmul, attention, ...)
    layer: int | None
    detail: str


@dataclass(frozen=True)
class Residency:
    """Capacity accounting of the on-chip memory level for one step."""

    capacity_bytes: float
    weight_bytes: float  # the device's weights
    kv_bytes: float  # the KV cache the step reads
    resident_weight_bytes: float
    resident_kv_bytes: float

    @property
    def free_bytes(self) -> float:
        """What residency leaves for activations."""
        return self.capacity_bytes - self.resident_weight_bytes - self.resident_kv_bytes

    @property
    def weight_fraction(self) -> float:
        return self.resident_weight_bytes / self.weight_bytes if self.weight_bytes else 1.0

    @property
    def kv_fraction(self) -> float:
        return self.resident_kv_bytes / self.kv_bytes if self.kv_bytes else 1.0


def plan_residency(
    hw: Hardware, on_chip: OnChip, weight_bytes: float, kv_bytes: float, activation_bytes: float
) -> Residency:
    """What the on-chip level keeps, after `activation_bytes` set aside for activations."""
    level = _on_chip_level(hw)
    capacity = level.capacity_bytes if level else 0.0
    left, resident = max(0.0, capacity - activation_bytes), {"weights": 0.0, "kv": 0.0}
    for what in on_chip.resident:
        want = weight_bytes if what == "weights" else kv_bytes
        resident[what] = min(want, left)
        left -= resident[what]
    return Residency(capacity, weight_bytes, kv_bytes, resident["weights"], resident["kv"])


def _on_chip_level(hw: Hardware) -> MemoryLevel | None:
    return next((lv for lv in hw.memory if lv.on_chip and lv is not hw.main_memory), None)


@dataclass
class LoweredStep:
    instructions: list[Instruction]
    op_rows: list[dict[str, Any]]  # per op: span, tile, bytes by class, utilisation
    residency: Residency
    time_s: float
    bytes_by_class: dict[str, float]
    busy: dict[str, float]  # seconds each engine works, over all ops

    def trace_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "start_us": i.start_s * 1e6,
                "end_us": i.end_s * 1e6,
                "engine": i.engine,
                "instruction": i.kind,
                "op": i.op,
                "layer": "" if i.layer is None else i.layer,
                "detail": i.detail,
            }
            for i in self.instructions
        ]


class _Rates:
    """Seconds per byte of each class from where it lives, for one step's residency."""

    def __init__(self, hw: Hardware, res: Residency) -> None:
        main = hw.main_memory.bandwidth_bytes_s
        level = _on_chip_level(hw)
        near = level.bandwidth_bytes_s if level else main
        self.main, self.near, self.free = main, near, res.free_bytes
        self.weights = 1.0 / (res.weight_fraction / near + (1 - res.weight_fraction) / main)
        self.kv = 1.0 / (res.kv_fraction / near + (1 - res.kv_fraction) / main)

    def activations(self, op: Op) -> float:
        act = (op.act_in_elems + op.act_out_elems) * DTYPE_BYTES[op.act_dtype]
        return self.near if act <= self.free else self.main


def lower_step(
    ops: list[Op], hw: Hardware, weight_bytes_total: float, layers: set[int] | None = None
) -> LoweredStep:
    """Lower a step's ops onto `hw` (which must have an on_chip section). `weight_bytes_total`
    is one device's weights (the memory plan's); instructions of ops outside `layers` are
    scheduled but not kept in the trace (None keeps all)."""
    if hw.on_chip is None:
        raise ValueError(
            f"hardware {hw.name!r} has no on_chip section (matrix unit, tile buffer) to lower to"
        )
    oc = hw.on_chip
    kv_total = sum(o.kv_read_elems * DTYPE_BYTES[o.kv_dtype] for o in ops)
    # Activations first: the largest op's input and output, twice (one op's output is the
    # next one's input while the next output is written).
    acts = max(
        ((o.act_in_elems + o.act_out_elems) * DTYPE_BYTES[o.act_dtype] for o in ops), default=0.0
    )
    res = plan_residency(hw, oc, weight_bytes_total, kv_total, 2 * acts)
    rates = _Rates(hw, res)
    table = OpTable.from_ops(ops)
    table.overlap_chunks = np.zeros(len(ops))  # the schedule decides what overlaps
    comm = op_times(hw, table, weight_bytes_total).comm_s
    instructions: list[Instruction] = []
    rows: list[dict[str, Any]] = []
    by_class = {"weights": 0.0, "activations": 0.0, "kv": 0.0}
    busy = dict.fromkeys(ENGINES, 0.0)
    dma_free = prev_start = prev_end = 0.0
    for i, op in enumerate(ops):
        keep = layers is None or op.layer in layers
        ready = prev_end + hw.op_overhead_s
        if op.kind == K.COLLECTIVE:
            link_s = float(comm[i])
            chunks = op.attrs.get("overlap_chunks", 0)
            if chunks:  # pipelined in chunks with the op before it (computing from
                # prev_start): each chunk's reduction follows that chunk's compute
                before = prev_end - prev_start
                ready = prev_start + before / chunks
                end = max(prev_end + link_s / chunks, ready + link_s)
            else:
                end = ready + link_s
            # A fused all-reduce + residual + norm also streams its tensors.
            end += op.bytes / rates.activations(op)
            if keep:
                instructions.append(
                    Instruction(
                        ready,
                        end,
                        "link",
                        "collective",
                        op.name,
                        op.kind,
                        op.layer,
                        f"{op.role} {op.comm_bytes / 1e6:.3g} MB",
                    )
                )
            rows.append(_row(op, prev_end, end, hw, link_s=link_s))
            busy["link"] += link_s
            prev_start, prev_end = ready, end
            continue
        tiled, classes, extra_s = _tile(op, hw, oc, rates)
        n = tiled.total_steps if tiled else _vector_steps(op, oc)
        load_s = (tiled.load_s if tiled else 0.0) + extra_s
        compute_s = tiled.compute_s if tiled else op.flops / hw.vector_rate(op.compute_dtype)
        load_end, comp_end = pipeline_uniform(n, load_s / n, compute_s / n, dma_free, ready)
        load_end, comp_end = float(load_end), float(comp_end)
        comp_start = max(ready, dma_free + load_s / n)
        engine = "matrix" if tiled else "vector"
        if keep:
            what = ", ".join(f"{k} {v / 1e6:.3g} MB" for k, v in classes.items() if v)
            instructions.append(
                Instruction(
                    dma_free,
                    load_end,
                    "dma",
                    "load",
                    op.name,
                    op.kind,
                    op.layer,
                    f"{what} in {n} step(s)",
                )
            )
            tile = f"tile {'x'.join(map(str, tiled.tile))}" if tiled else "stream"
            instructions.append(
                Instruction(
                    comp_start,
                    comp_end,
                    engine,
                    "compute",
                    op.name,
                    op.kind,
                    op.layer,
                    f"{op.flops / 1e9:.3g} GFLOP, {tile}",
                )
            )
        for k, v in classes.items():
            by_class[k] += v
        busy["dma"] += load_s
        busy[engine] += compute_s
        rows.append(
            _row(
                op,
                prev_end,
                comp_end,
                hw,
                first=min(dma_free, prev_end),
                load_s=load_s,
                compute_s=compute_s,
                tiled=tiled,
                classes=classes,
            )
        )
        dma_free, prev_start, prev_end = load_end, comp_start, comp_end
    end = max(prev_end, dma_free) + hw.step_overhead_s
    return LoweredStep(instructions, rows, res, end, by_class, busy)


def _tile(
    op: Op, hw: Hardware, oc: OnChip, rates: _Rates
) -> tuple[TileChoice | None, dict[str, float], float]:
    """The op's tiling (None for vector ops), its traffic by class and extra dma seconds."""
    a = DTYPE_BYTES[op.act_dtype]
    act_bw = rates.activations(op)
    matrix = op.kind in K.MATRIX_KINDS and op.flops > 0
    cycle_s = 2 * oc.unit.macs_per_cycle / hw.matmul_rate(op.compute_dtype) if matrix else 0.0
    if op.kind in _TILED and op.shape and op.flops:
        _, k, n = op.shape
        w = DTYPE_BYTES[op.weight_dtype]
        matrices = max(op.weight_elems / (k * n), 1e-9)  # experts touched (1 when dense)
        # Dense rows are the shape's (a fused norm adds FLOPs, not rows); an expert's are
        # its expected share of the routed tokens.
        rows = op.shape[0] if op.kind != K.EXPERT_MATMUL else op.flops / (2 * k * n * matrices)
        feeds = Feeds(
            act_bw, rates.weights, act_bw, oc.tile_buffer_bytes, oc.tile_buffer_bytes_s, cycle_s
        )
        t = tile_gemm(rows, k, n, a, w, a, oc.unit, feeds, repeats=matrices)
        return t, {"weights": t.b_bytes, "activations": t.a_bytes + t.c_bytes, "kv": 0.0}, 0.0
    if op.kind == K.ATTENTION and op.flops:
        heads, kvh, d = op.attrs["num_heads"], op.attrs["num_kv_heads"], op.attrs["head_dim"]
        seqs = op.attrs.get("num_seqs", 1)
        tokens = op.shape[0]
        kvb = DTYPE_BYTES[op.kv_dtype]
        feeds = Feeds(
            act_bw, rates.kv, act_bw, oc.tile_buffer_bytes, oc.tile_buffer_bytes_s, cycle_s
        )
        t = tile_attention(
            rows=heads // kvh * tokens / seqs,
            head_dim=d,
            keys=op.flops / (4 * heads * d * tokens),
            keys_read=op.kv_read_elems / (2 * kvh * d * seqs),
            a=a,
            kv=kvb,
            unit=oc.unit,
            feeds=feeds,
            repeats=kvh * seqs,
        )
        written = op.kv_write_elems * kvb
        classes = {"weights": 0.0, "activations": t.a_bytes + t.c_bytes, "kv": t.b_bytes + written}
        return t, classes, written / rates.kv
    weights = op.weight_bytes
    acts = op.bytes - weights - op.kv_bytes
    return (
        None,
        {"weights": weights, "activations": acts, "kv": op.kv_bytes},
        (weights / rates.weights + acts / act_bw + op.kv_bytes / rates.kv),
    )


def _vector_steps(op: Op, oc: OnChip) -> int:
    return max(1, int(np.ceil(op.bytes / (oc.tile_buffer_bytes / 4))))


def _row(
    op: Op,
    start: float,
    end: float,
    hw: Hardware,
    first: float | None = None,
    load_s: float = 0.0,
    compute_s: float = 0.0,
    link_s: float = 0.0,
    tiled: TileChoice | None = None,
    classes: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One op's line: `time_us` is what it adds to the step (from the previous op's end);
    the busy fractions are over its own window, from its first instruction (a prefetch may
    start during the previous op) to its end."""
    span = max(end - start, 1e-15)
    window = max(end - (start if first is None else first), 1e-15)
    matrix = op.kind in K.MATRIX_KINDS
    peak = hw.matmul_rate(op.compute_dtype) if matrix else 0.0
    classes = classes or {}
    return {
        "name": op.name,
        "kind": op.kind,
        "time_us": span * 1e6,
        "tile": "x".join(map(str, tiled.tile)) if tiled else "",
        "a_stationary": tiled.a_stationary if tiled else "",
        "per_step": tiled.problems_per_step if tiled else "",
        "steps": tiled.total_steps if tiled else "",
        "weight_mb": classes.get("weights", 0.0) / 1e6,
        "act_mb": classes.get("activations", 0.0) / 1e6,
        "kv_mb": classes.get("kv", 0.0) / 1e6,
        "matrix_util": op.flops / window / peak if peak else 0.0,
        "dma_busy": load_s / window,
        "unit_busy": compute_s / window,
        "link_busy": link_s / window,
    }
