"""Linear layer with a fast path for half-precision weights on CPUs without half-precision units.

Many CPUs (and VMs that hide AMX / AVX512-BF16) run torch's bf16 and fp16 kernels in slow
emulation, ten times below fp32. There the model computes in fp32 while its weights stay in half
precision (half the bytes to stream): a few rows (decode) go through our GEMV kernel, which
widens the weights in registers (ops/cpu_kernels.py); more rows go to the fp32 GEMM, over an
fp32 copy of the weight kept for it (`cache_fp32_weights`, within a memory budget) or else over
the weight widened a slab of rows at a time, so the widened copy stays in cache.

In the batch-invariant mode (model/batch_invariant.py) every Linear goes through our
row-invariant matmul instead, in fp32 over the stored weights, so a row's result does not depend
on how many rows share the call.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from intaglio.ops.cpu_kernels import cpu_kernels

HALF_DTYPES = (torch.bfloat16, torch.float16)
_SLAB_ELEMENTS = 1 << 18  # 1 MiB of fp32: a widened slab that fits in L2
GEMV_MAX_ROWS = 4  # the kernel's limit; beyond it the GEMM's reuse of each weight wins


@functools.cache
def cpu_has_half_matmul() -> bool:
    """True when the CPU advertises native bf16/fp16 matrix instructions (AMX, AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown platform: trust torch's own kernels
    return any(f in flags for f in ("amx_bf16", "avx512_bf16", "amx_fp16"))


class Linear(nn.Linear):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_fp32: torch.Tensor | None = None  # see cache_fp32_weights
        self.batch_invariant = False  # set by model/batch_invariant.py

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [rows, in] -> [rows, out]
        w = self.weight
        if self.batch_invariant:
            kernels = cpu_kernels()
            assert kernels is not None, "the batch-invariant mode checked for the kernels"
            out = kernels.invariant_matmul(x.float(), w)
            return out if self.bias is None else out + self.bias
        if w.dtype in HALF_DTYPES and x.dtype == torch.float32 and w.device.type == "cpu":
            kernels = cpu_kernels()
            if kernels is not None and x.shape[0] <= GEMV_MAX_ROWS:
                out = kernels.half_gemv(x, w)
            elif self.weight_fp32 is not None:
                out = x @ self.weight_fp32.t()
            else:
                out = _widened_matmul(x, w)
            return out if self.bias is None else out + self.bias
        return F.linear(x, w, self.bias)


def cache_fp32_weights(model: nn.Module, budget_bytes: int) -> int:
    """Give half-precision Linear layers fp32 copies, in module order, while they fit the budget.

    Only for models computing in fp32 over half weights (CPUs without half units). Returns the
    bytes used.
    """
    used = 0
    for module in model.modules():
        if isinstance(module, Linear) and module.weight.dtype in HALF_DTYPES:
            size = module.weight.numel() * 4
            if used + size <= budget_bytes:
                module.weight_fp32 = module.weight.detach().float()
                used += size
    return used


def _widened_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [rows, in] fp32 @ w [out, in] half, transposed -> [rows, out] fp32."""
    out = x.new_empty(x.shape[0], w.shape[0])
    step = max(16, _SLAB_ELEMENTS // w.shape[1])
    for start in range(0, w.shape[0], step):
        rows = slice(start, start + step)
        torch.matmul(x, w[rows].to(x.dtype).t(), out=out[:, rows])
    return out
