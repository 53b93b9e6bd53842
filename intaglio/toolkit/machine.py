"""Measure this machine's limits on the spot: memory bandwidth and matmul throughput.

The numbers are the ceilings a roofline divides by, taken with torch and the current thread
count on the device the engine runs on, so they include whatever the library can reach (MKL,
oneDNN) rather than a datasheet peak. Each figure is the best of several runs: on a shared
machine the best run is the one least disturbed by neighbours.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class MachineLimits:
    device: str
    num_threads: int
    read_bandwidth_gbs: float  # GB/s (1e9), streaming reads: what decode does to the weights
    copy_bandwidth_gbs: float  # GB/s, read + write bytes of a large copy
    matmul_tflops: dict[str, float]  # dtype name -> TFLOP/s (1e12) of a large square matmul
    matmul_sizes: dict[str, int]  # dtype name -> the square size that was timed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, kernel selection, lazy init
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_bandwidth(
    device: torch.device, size_bytes: int = 1 << 30, repeats: int = 5
) -> tuple[float, float]:
    """(read GB/s, copy GB/s) over a `size_bytes` float32 buffer, far larger than any cache.

    Read: `x.sum()` streams every byte once and writes a scalar; a sum is a few vector adds per
    cache line, so it is bound by memory, not arithmetic. This is the figure the decode roofline
    uses, because a decode step reads the weights (and the KV cache) and writes almost nothing.
    Copy: `y.copy_(x)` counts read + write bytes (2 * size), as STREAM's copy does; writes may
    cost an extra read for ownership on CPUs, so this usually comes out lower than the read.
    """
    n = size_bytes // 4
    x = torch.ones(n, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    read = _best_time(x.sum, device, repeats)
    copy = _best_time(functools.partial(y.copy_, x), device, repeats)
    return size_bytes / read / 1e9, 2 * size_bytes / copy / 1e9


def measure_matmul(
    device: torch.device,
    dtype: torch.dtype,
    max_size: int = 4096,
    target_s: float = 0.25,
    repeats: int = 3,
) -> tuple[float, int]:
    """(TFLOP/s, n) of an n x n @ n x n matmul, n grown until one run takes ~target_s.

    Starting small and doubling keeps slow paths (bf16 without native support) from taking
    minutes, while fast paths reach sizes where the kernel runs at its peak.
    """
    n = 512
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t = _best_time(functools.partial(torch.mm, a, b), device, repeats)
        if n >= max_size or t >= target_s:
            return 2 * n**3 / t / 1e12, n
        n *= 2


def measure_machine(
    device: str | torch.device = "cpu",
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16),
    bandwidth_bytes: int = 1 << 30,
    max_matmul_size: int = 4096,
) -> MachineLimits:
    device = torch.device(device)
    with torch.inference_mode():
        read, copy = measure_bandwidth(device, bandwidth_bytes)
        tflops: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for dtype in dict.fromkeys(dtypes):
            tflops[dtype_name(dtype)], sizes[dtype_name(dtype)] = measure_matmul(
                device, dtype, max_matmul_size
            )
    return MachineLimits(
        device=str(device),
        num_threads=torch.get_num_threads(),
        read_bandwidth_gbs=read,
        copy_bandwidth_gbs=copy,
        matmul_tflops=tflops,
        matmul_sizes=sizes,
    )
