"""Our AVX-512 decode kernels (csrc/), compiled on first use for this CPU.

torch's extension builder compiles them once per source version (a hash of csrc/ names the
build) into its cache folder (`TORCH_EXTENSIONS_DIR`, by default under ~/.cache), about half a
minute on two cores. Without
AVX-512 or a C++ compiler, or with INTAGLIO_CPU_KERNELS=0, `cpu_kernels()` returns None and the
callers take their plain torch path, which computes the same thing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

_SOURCES = Path(__file__).parent / "csrc"
# paged_decode_attention keeps a head in registers: head_dim must be one of these.
DECODE_ATTENTION_HEAD_DIMS = (16, 32, 64, 128, 256)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# A build takes under two minutes; a lock older than this was left by a killed build, and torch
# would wait on it forever.
_STALE_LOCK_S = 600.0


def _remove_stale_lock(name: str) -> None:
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    try:
        if time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
            logger.warning("removing a stale build lock left by a killed build: %s", lock)
            lock.unlink()
    except FileNotFoundError:
        pass


@functools.cache
def cpu_kernels() -> ModuleType | None:
    if os.environ.get("INTAGLIO_CPU_KERNELS", "1") == "0":
        return None
    if not {"avx512f", "avx512bw", "f16c"} <= cpu_flags():
        return None
    try:
        from torch.utils.cpp_extension import load

        logger.info("loading the CPU decode kernels (built once per version, ~30 s)")
        files = sorted(_SOURCES.iterdir())
        # The sources' folder is part of the name: two checkouts never rebuild each other's
        # extension (a build rewrites build.ninja with its own paths).
        key = str(_SOURCES.resolve()).encode() + b"".join(f.read_bytes() for f in files)
        name = f"intaglio_cpu_kernels_{hashlib.sha256(key).hexdigest()[:12]}"
        _remove_stale_lock(name)
        return load(
            name=name,
            sources=[str(_SOURCES / "cpu_kernels.cpp")],
            # -fopenmp: at::parallel_for is inlined here and only splits work under OpenMP
            # (the runtime is torch's own libgomp, already loaded).
            extra_cflags=["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mf16c", "-mfma"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as exc:  # no compiler, or a build error: fall back, loudly
        logger.warning("CPU decode kernels unavailable (%s); using the torch path", exc)
        return None
