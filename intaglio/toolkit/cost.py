"""Cost model: time of each op on a Hardware description, the bound it hits, and step totals.

Per op: compute = FLOPs / (peak rate of its unit and dtype x efficiency at its size: rows for
matrix ops, FLOPs for vector ops);
memory = (weight bytes / weight bandwidth + other bytes / main-memory bandwidth) / efficiency at
its bytes, where weights stream from an on-chip level when the whole model's weights fit there;
communication = latency x steps + bytes x algorithm factor / link bandwidth (collectives only;
one pipelined with the matmul before it in c chunks exposes max(comm - matmul, 0) +
min(comm, matmul) / c).
An op takes max(compute, memory) (plus (1 - overlap) x the smaller, for hardware that does not
hide one behind the other) + communication + a fixed launch overhead; its bound is whichever
term is largest. Everything is computed over numpy columns (an OpTable) so the
simulator can cost thousands of steps a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intaglio.toolkit import ops as K
from intaglio.toolkit.hardware import Hardware
from intaglio.toolkit.ops import Op

BOUNDS = ("compute", "memory", "comm", "overhead")


@dataclass
class OpTable:
    """Column view of an op list: the numbers the cost model needs, one entry per op."""

    flops: np.ndarray
    rows: np.ndarray  # matrix ops' rows (tokens): the matmul efficiency key
    weight_bytes: np.ndarray
    other_bytes: np.ndarray  # activations and KV cache, read and written
    comm_bytes: np.ndarray
    comm_factor: np.ndarray  # bytes on the wire per payload byte (ring all-reduce: 2(g-1)/g)
    comm_steps: np.ndarray  # latency-bound hops
    overlap_chunks: np.ndarray  # collectives pipelined with the matmul before them (0: not)
    is_matrix: np.ndarray  # bool: runs on the matrix units
    dtypes: list[str]  # compute dtype per op
    kinds: list[str]

    @classmethod
    def from_ops(cls, ops: list[Op]) -> OpTable:
        return cls(
            flops=np.array([o.flops for o in ops], dtype=np.float64),
            rows=np.array([o.rows for o in ops], dtype=np.float64),
            weight_bytes=np.array([o.weight_bytes for o in ops], dtype=np.float64),
            other_bytes=np.array([o.bytes - o.weight_bytes for o in ops], dtype=np.float64),
            comm_bytes=np.array([o.comm_bytes for o in ops], dtype=np.float64),
            comm_factor=np.array([o.attrs.get("comm_factor", 0.0) for o in ops]),
            comm_steps=np.array([o.attrs.get("comm_steps", 0.0) for o in ops]),
            overlap_chunks=np.array([o.attrs.get("overlap_chunks", 0.0) for o in ops]),
            is_matrix=np.array([o.kind in K.MATRIX_KINDS for o in ops], dtype=bool),
            dtypes=[o.compute_dtype for o in ops],
            kinds=[o.kind for o in ops],
        )


@dataclass
class OpTimes:
    compute_s: np.ndarray
    memory_s: np.ndarray
    comm_s: np.ndarray
    overhead_s: np.ndarray
    time_s: np.ndarray

    @property
    def bound(self) -> list[str]:
        stacked = np.stack([self.compute_s, self.memory_s, self.comm_s, self.overhead_s])
        return [BOUNDS[i] for i in stacked.argmax(axis=0)]


def weight_bandwidth(hw: Hardware, weight_bytes_total: float) -> float:
    """Bytes/s at which weights stream: the fastest level (on chip or main) that holds them."""
    fits = [lv for lv in hw.memory if lv.capacity_bytes >= weight_bytes_total]
    return max((lv.bandwidth_bytes_s for lv in fits), default=hw.main_memory.bandwidth_bytes_s)


def peak_rates(hw: Hardware, table: OpTable) -> np.ndarray:
    """Peak FLOP/s of each op's unit at its dtype."""
    rates = np.empty(len(table.dtypes))
    cache: dict[tuple[bool, str], float] = {}
    for i, (matrix, dtype) in enumerate(zip(table.is_matrix.tolist(), table.dtypes)):
        key = (matrix, dtype)
        if key not in cache:
            cache[key] = hw.matmul_rate(dtype) if matrix else hw.vector_rate(dtype)
        rates[i] = cache[key]
    return rates


def kind_scale(hw: Hardware, table: OpTable) -> np.ndarray:
    """Each op's extra efficiency factor from the description's kind_efficiency."""
    return np.array([hw.kind_eff.get(k, 1.0) for k in table.kinds])


def op_times(
    hw: Hardware,
    table: OpTable,
    weight_bytes_total: float,
    rates: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> OpTimes:
    """Per-op times; `rates` and `scale` may be precomputed (they depend only on the ops)."""
    rates = peak_rates(hw, table) if rates is None else rates
    scale = kind_scale(hw, table) if scale is None else scale
    eff = np.where(table.is_matrix, hw.matmul_eff(table.rows), hw.vector_eff(table.flops))
    compute = table.flops / (rates * eff * scale)
    total_bytes = table.weight_bytes + table.other_bytes
    bw_w = weight_bandwidth(hw, weight_bytes_total)
    bw_main = hw.main_memory.bandwidth_bytes_s
    memory = (table.weight_bytes / bw_w + table.other_bytes / bw_main) / (
        hw.memory_eff(total_bytes) * scale
    )
    comm = np.zeros_like(compute)
    has_comm = table.comm_bytes > 0
    if has_comm.any():
        if hw.link_bytes_s <= 0:
            raise ValueError(f"hardware {hw.name!r} has no interconnect for collectives")
        comm = np.where(
            has_comm,
            hw.link_latency_s * table.comm_steps
            + table.comm_bytes * table.comm_factor / hw.link_bytes_s,
            0.0,
        )
    overhead = np.full_like(compute, hw.op_overhead_s)
    overlapped = np.maximum(compute, memory) + (1.0 - hw.overlap) * np.minimum(compute, memory)
    chunks = table.overlap_chunks
    if (chunks > 0).any():  # pipelined with the op before: only part of it stays exposed
        before = np.concatenate([[0.0], (overlapped + overhead)[:-1]])
        hidden = np.maximum(comm - before, 0) + np.minimum(comm, before) / np.maximum(chunks, 1)
        comm = np.where(chunks > 0, hidden, comm)
    time = overlapped + comm + overhead
    return OpTimes(compute, memory, comm, overhead, time)


@dataclass
class StepCost:
    ops: list[Op]
    times: OpTimes
    step_overhead_s: float
    hw: Hardware

    @property
    def time_s(self) -> float:
        return float(self.times.time_s.sum()) + self.step_overhead_s

    @property
    def flops(self) -> float:
        return float(sum(o.flops for o in self.ops))

    @property
    def bytes(self) -> float:
        return float(sum(o.bytes for o in self.ops))

    @property
    def main_dtype(self) -> str:
        """The dtype most FLOPs run at: MFU is measured against its peak."""
        by_dtype: dict[str, float] = {}
        for o in self.ops:
            if o.kind in K.MATRIX_KINDS:
                by_dtype[o.compute_dtype] = by_dtype.get(o.compute_dtype, 0.0) + o.flops
        return max(by_dtype, key=by_dtype.__getitem__) if by_dtype else "bfloat16"

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over the matrix peak at the main dtype."""
        return self.flops / self.time_s / self.hw.matmul_rate(self.main_dtype)

    @property
    def mbu(self) -> float:
        """Memory-bandwidth utilisation: achieved bytes/s over main-memory bandwidth."""
        return self.bytes / self.time_s / self.hw.main_memory.bandwidth_bytes_s

    @property
    def dominant_bound(self) -> str:
        """The bound that takes the most of the step's time."""
        per: dict[str, float] = {}
        for b, t in zip(self.times.bound, self.times.time_s.tolist()):
            per[b] = per.get(b, 0.0) + t
        return max(per, key=per.__getitem__)

    def rows(self) -> list[dict]:
        bounds = self.times.bound
        out = []
        for i, o in enumerate(self.ops):
            row = o.to_row()
            row.update(
                time_us=self.times.time_s[i] * 1e6,
                compute_us=self.times.compute_s[i] * 1e6,
                memory_us=self.times.memory_s[i] * 1e6,
                comm_us=self.times.comm_s[i] * 1e6,
                bound=bounds[i],
            )
            out.append(row)
        return out

    def breakdown(self, key: str = "kind") -> dict[str, float]:
        """Seconds per op kind (or role): where the step's time goes."""
        out: dict[str, float] = {}
        for o, t in zip(self.ops, self.times.time_s.tolist()):
            k = getattr(o, key)
            out[k] = out.get(k, 0.0) + t
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def cost_step(ops: list[Op], hw: Hardware, weight_bytes_total: float | None = None) -> StepCost:
    """Cost a captured (and transformed) step; weights stream from where the model fits."""
    table = OpTable.from_ops(ops)
    if weight_bytes_total is None:
        weight_bytes_total = float(table.weight_bytes.sum())
    return StepCost(ops, op_times(hw, table, weight_bytes_total), hw.step_overhead_s, hw)
