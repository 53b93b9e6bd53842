"""Linear layer with a fast path for half-precision weights on CPUs without half-precision units.

Many CPUs (and VMs that hide AMX / AVX512-BF16) run torch's bf16 and fp16 kernels in slow
emulation, ten times below fp32. There the model computes in fp32 while its weights stay in half
precision (half the bytes to stream), stored transposed, [in, out] contiguous: torch multiplies
that layout well for a single row (decode at batch 1, the input rounded to the weight's dtype as
a half-precision model would); for more rows the weight is widened to fp32 for the fp32 GEMM,
a slab of columns at a time so the widened copy stays in cache instead of going to memory.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_HALF = (torch.bfloat16, torch.float16)
_SLAB_ELEMENTS = 1 << 18  # 1 MiB of fp32: a widened slab that fits in L2


@functools.cache
def cpu_has_half_matmul() -> bool:
    """True when the CPU advertises native bf16/fp16 matrix instructions (AMX, AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown platform: trust torch's own kernels
    return any(f in flags for f in ("amx_bf16", "avx512_bf16", "amx_fp16"))


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [rows, in] -> [rows, out]
        if self.weight.dtype in _HALF and not self.weight.is_contiguous():
            w_t = self.weight.t()  # [in, out], contiguous: see use_transposed_half_weights
            if x.shape[0] == 1:
                out = (x.to(w_t.dtype) @ w_t).to(x.dtype)
            else:
                out = _widened_matmul(x, w_t)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.weight, self.bias)


def _widened_matmul(x: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """x [rows, in] fp32 @ w_t [in, out] half -> [rows, out] fp32."""
    out = x.new_empty(x.shape[0], w_t.shape[1])
    step = max(64, _SLAB_ELEMENTS // w_t.shape[0])
    for start in range(0, w_t.shape[1], step):
        cols = slice(start, start + step)
        torch.matmul(x, w_t[:, cols].to(x.dtype), out=out[:, cols])
    return out


def use_transposed_half_weights(model: nn.Module) -> int:
    """Re-lay every half-precision Linear weight as [in, out] when the CPU lacks half units.

    The parameter stays a [out, in] view of the same storage, so tied embeddings, state dicts
    and F.linear keep working. Returns the number of layers changed; when it is not zero the
    model must compute in fp32.
    """
    if cpu_has_half_matmul():
        return 0
    changed = 0
    for module in model.modules():
        w = module.weight if isinstance(module, Linear) else None
        if w is not None and w.device.type == "cpu" and w.dtype in _HALF and w.is_contiguous():
            w.data = w.data.t().contiguous().t()
            changed += 1
    return changed
