"""`intaglio codesign calibrate`: a hardware description of this CPU, measured with torch.

Peaks: read bandwidth of a 1 GiB tensor and square-matmul throughput per dtype
(intaglio/toolkit/machine.py). Efficiency curves: matmuls of the shapes an LLM step runs (rows
1 to 1024 against 768- to 4096-wide weights) give the matmul curve where they are compute
bound; GEMVs and elementwise adds of 4 KB to 400 MB give the memory curve. The per-op overhead
is the time of a tiny op (torch dispatch from Python). `fit_to_steps` then sets the per-step
overhead and the attention kernel's efficiency by non-negative least squares on measured
engine steps (the engine runs more Python per op than a bare torch call, and the
reference attention backend gathers the KV cache before it attends); those steps must not be
the ones used to validate.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from intaglio.toolkit import ops as K
from intaglio.toolkit.cost import OpTable, op_times
from intaglio.toolkit.hardware import Hardware, from_dict
from intaglio.toolkit.machine import dtype_name, measure_bandwidth, measure_matmul
from intaglio.toolkit.ops import Op

_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_WEIGHT_SHAPES = ((2304, 768), (768, 2048), (4096, 768))  # [out, in], cycled past the caches
_ADD_SIZES = [1 << p for p in range(10, 27, 2)]  # fp32 elements: 4 KB .. 256 MB per tensor


def _timed(fn: Callable[[], object], repeats: int = 5) -> float:
    """Best of `repeats` after a warm-up: on a shared machine, the least disturbed run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _binned(points: list[tuple[float, float]]) -> list[list[float]]:
    """Median efficiency per half decade of size: a strictly increasing curve of points."""
    bins: dict[int, list[tuple[float, float]]] = {}
    for size, eff in points:
        bins.setdefault(int(np.floor(np.log10(size) * 2)), []).append((size, eff))
    out = []
    for key in sorted(bins):
        sizes, effs = zip(*bins[key])
        out.append(
            [float(np.exp(np.mean(np.log(sizes)))), float(min(max(np.median(effs), 1e-3), 1))]
        )
    return out


def _weights_past_cache(min_bytes: int = 400 << 20) -> list[torch.Tensor]:
    """LLM-shaped fp32 weights, more of them than the last-level cache holds, so cycling
    through them streams from memory as a model's layers do."""
    weights: list[torch.Tensor] = []
    while sum(w.numel() * 4 for w in weights) < min_bytes:
        for shape in _WEIGHT_SHAPES:
            weights.append(torch.randn(shape))
    return weights


def measure_cpu(
    num_threads: int = 1, dtypes: Sequence[torch.dtype] = (torch.float32,), rounds: int = 4
) -> dict:
    """Run the microbenchmarks; return a hardware description document for this CPU."""
    torch.set_num_threads(num_threads)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        read_gbs, _ = measure_bandwidth(cpu, 1 << 30, repeats=6)
        peaks = {
            dtype_name(d): measure_matmul(cpu, d, 4096 if d == torch.float32 else 1024)[0] * 1e12
            for d in dtypes
        }
        tiny = torch.ones(8)
        overhead = _timed(functools.partial(torch.add, tiny, tiny), 200)
        weights = _weights_past_cache()
        inputs = {m: {k: torch.randn(m, k) for k in {w.shape[1] for w in weights}} for m in _ROWS}

        def run(m: int) -> None:
            for w in weights:
                torch.nn.functional.linear(inputs[m][w.shape[1]], w)

        # Rounds over all row counts, best per count: a burst of load from other processes
        # then spoils one round of a point, not every run of it.
        # Process CPU time: one busy thread, so it leaves out time other processes held the core.
        best = {m: float("inf") for m in _ROWS}
        for _ in range(rounds):
            for m in _ROWS:
                t0 = time.process_time()
                run(m)
                best[m] = min(best[m], time.process_time() - t0)
        achieved = [(m, sum(2.0 * m * w.numel() for w in weights) / best[m]) for m in _ROWS]
        # A GEMV streams its weights once: the memory bandwidth the engine's decode sees.
        gemv_gbs = sum(4.0 * w.numel() for w in weights) / best[1] / 1e9
        read_gbs = max(read_gbs, gemv_gbs)
        weights.clear()
        peak = max(peaks["float32"], max(f for _, f in achieved))  # a noisy peak run
        peaks["float32"] = peak
        mem_points = []
        for size in _ADD_SIZES:
            x, y, z = torch.ones(size), torch.ones(size), torch.empty(size)
            t = _timed(functools.partial(torch.add, x, y, out=z), 3) - overhead
            mem_points.append((12.0 * size, 12.0 * size / (read_gbs * 1e9 * max(t, 1e-9))))
    return {
        "name": f"CPU {platform.processor() or platform.machine()} ({num_threads} thread)",
        "description": "Calibrated by `intaglio codesign calibrate` on this machine.",
        "matmul_tflops": {k: v / 1e12 for k, v in peaks.items()},
        # Vector work (norms, rope, adds) is memory bound here; its peak is set to the fp32
        # matmul peak so only the memory side decides.
        "vector_tflops": {k: v / 1e12 for k, v in peaks.items()},
        "memory": [{"name": "dram", "capacity_gib": _ram_gib(), "bandwidth_gbs": read_gbs}],
        "efficiency": {
            "matmul": [[float(m), min(f / peak, 1.0)] for m, f in achieved],
            "vector": [[1.0, 1.0]],
            "memory": _binned(mem_points),
        },
        "compute_memory_overlap": 1.0,
        "op_overhead_us": overhead * 1e6,
        "step_overhead_us": 0.0,
        "sources": {
            "matmul_tflops": f"measured: best of a square matmul and the row sweep, "
            f"{num_threads} thread(s)",
            "memory": "measured: the faster of a sum over a 1 GiB fp32 tensor and one-row "
            "matmuls streaming 400 MB of weights",
            "efficiency": "measured: matmuls of 1-512 rows over weights cycled past the caches; "
            "elementwise adds of 4 KB - 256 MB",
            "op_overhead_us": "measured: a torch.add of 8 elements",
        },
        "assumptions": ["vector_tflops equals the fp32 matmul peak (not measured)"],
        "calibration": {
            "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__,
            "num_threads": num_threads,
        },
    }


def _ram_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return kib / 2**20
    except (OSError, ValueError, IndexError):
        return 16.0


def fit_to_steps(doc: dict, samples: Sequence[tuple[list[Op], float]]) -> dict:
    """Fit the per-step overhead and attention's efficiency to measured engine steps.

    A step's time is (modelled time of its non-attention ops, with the measured per-op
    overhead) + step_overhead + x * (modelled time of its attention ops); both coefficients are
    fitted by least squares, non-negative. (A per-op overhead cannot be told apart from the
    per-step one here: every step of one model runs the same number of ops.) Returns a new
    document; kind_efficiency.attention = 1 / x (at most 1).
    """
    hw = from_dict(doc).with_overrides({"step_overhead_us": 0.0, "kind_efficiency": {}})
    rows, target = [], []
    for ops, measured in samples:
        attn = [o for o in ops if o.kind == K.ATTENTION]
        rest = [o for o in ops if o.kind != K.ATTENTION]
        # Attention's launch overheads are not scaled by its efficiency: count them apart.
        attn_work = _modelled_time(hw, attn, ops) - len(attn) * hw.op_overhead_s
        rows.append([1.0, attn_work])
        target.append(measured - _modelled_time(hw, rest, ops) - len(attn) * hw.op_overhead_s)
    x = _nnls(np.asarray(rows), np.asarray(target))
    out = dict(doc)
    out["step_overhead_us"] = float(x[0]) * 1e6
    out["kind_efficiency"] = {"attention": float(min(1.0, 1.0 / x[1])) if x[1] > 0 else 1.0}
    out["sources"] = dict(doc["sources"])
    for key in ("step_overhead_us", "kind_efficiency"):
        out["sources"][key] = f"fitted to {len(samples)} measured engine steps (training batches)"
    return out


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients, by trying each subset of columns."""
    best, best_err = np.zeros(a.shape[1]), float(b @ b)
    for mask in range(1, 1 << a.shape[1]):
        cols = [j for j in range(a.shape[1]) if mask >> j & 1]
        coef, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
        if np.any(coef < 0):
            continue
        x = np.zeros(a.shape[1])
        x[cols] = coef
        err = float(np.sum((a @ x - b) ** 2))
        if err < best_err:
            best, best_err = x, err
    return best


def _modelled_time(hw: Hardware, subset: list[Op], all_ops: list[Op]) -> float:
    """Time of `subset` on `hw`; weights stream from where the whole step's weights fit."""
    if not subset:
        return 0.0
    total_weights = float(OpTable.from_ops(all_ops).weight_bytes.sum())
    return float(op_times(hw, OpTable.from_ops(subset), total_weights).time_s.sum())
