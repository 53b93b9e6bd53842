"""Building blocks shared by the decoder families: RMSNorm, rotary embedding, gated MLP."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from intaglio.ops.cpu_kernels import cpu_kernels
from intaglio.ops.linear import Linear


def _kernels_for(*tensors: torch.Tensor) -> ModuleType | None:
    """Our CPU kernels, unless absent or autograd would record the op (they have no backward;
    the rotary one even writes in place), where the torch path computes the same thing."""
    if tensors[0].device.type != "cpu":
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return cpu_kernels()


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            kernels = _kernels_for(x, self.weight)
            if kernels is not None:
                return kernels.rms_norm(x, self.weight, self.eps)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Normalise in fp32 and cast back before the weight, as the reference does.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def l2_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalisation over the last axis, in fp32 (Llama 4's q/k norm)."""
    return F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE with an optional 'llama3' frequency rescaling.

    Neox style (Llama, Qwen) rotates the pairs (x[i], x[i + d/2]); interleaved style (Llama 4,
    written with complex numbers in its reference) rotates the pairs (x[2i], x[2i + 1]).
    """

    def __init__(
        self,
        head_dim: int,
        theta: float,
        scaling: dict[str, Any] | None,
        *,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        self.interleaved = interleaved
        self.register_buffer("inv_freq", torch.empty(0, dtype=torch.float64), persistent=False)
        self._positions: torch.Tensor | None = None
        self._cos_sin: tuple[torch.Tensor, torch.Tensor] = (self.inv_freq, self.inv_freq)
        self.build_tables()

    def build_tables(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the fp64 inverse frequencies, e.g. after the model was built on `meta`.

        cos/sin are computed per step for the step's positions rather than tabulated up to
        max_position_embeddings: Llama 4 Scout allows 10M positions, 5 GB of tables.
        """
        d = self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        if self.scaling is not None:
            inv_freq = _scale_frequencies(inv_freq, self.scaling)
        self.inv_freq = inv_freq.to(device)

    def forward(
        self,
        positions: torch.Tensor,  # [num_tokens]
        q: torch.Tensor,  # [num_tokens, heads, head_dim]
        k: torch.Tensor,  # [num_tokens, kv_heads, head_dim]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layer rotates at the same positions: compute the angles once per step.
        if positions is not self._positions:
            self._positions = positions
            freqs = positions.to(torch.float64)[:, None] * self.inv_freq[None, :]
            self._cos_sin = (freqs.cos().float().unsqueeze(1), freqs.sin().float().unsqueeze(1))
        cos, sin = self._cos_sin  # [num_tokens, 1, head_dim / 2]
        kernels = _kernels_for(q, k)
        if kernels is not None and q.dtype == k.dtype == torch.float32:
            kernels.rotary_embedding_(q, k, cos.squeeze(1), sin.squeeze(1), self.interleaved)
            return q, k
        rotate = _rotate_interleaved if self.interleaved else _rotate
        return rotate(q, cos, sin), rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def _rotate_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    pairs = x.float().unflatten(-1, (-1, 2))  # [..., head_dim / 2, 2]
    x1, x2 = pairs[..., 0], pairs[..., 1]
    out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.flatten(-2).to(x.dtype)


def _scale_frequencies(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "freq_factors":  # GGUF's rope_freqs tensor: one divisor per frequency
        factors = torch.tensor(scaling["factors"], dtype=inv_freq.dtype)
        if factors.shape != inv_freq.shape:
            raise ValueError(
                f"{len(factors)} rope frequency factors for {len(inv_freq)} frequencies"
            )
        return inv_freq / factors
    if kind != "llama3":
        raise ValueError(
            f"unsupported rope scaling type {kind!r}; supported: llama3, linear, freq_factors"
        )
    # Llama 3.1: stretch low frequencies by `factor`, keep high ones, blend in between.
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    middle = (wavelen <= old_len / low) & (wavelen >= old_len / high)
    return torch.where(middle, blended, scaled)


class GatedMLP(nn.Module):
    """SwiGLU feed-forward with gate and up projections fused into one matmul."""

    def __init__(self, hidden: int, intermediate: int, bias: bool) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        kernels = _kernels_for(gate_up)
        if kernels is not None and gate_up.dtype == torch.float32:
            return self.down_proj(kernels.silu_and_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
