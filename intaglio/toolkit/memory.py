"""Memory plan: weights, activations and KV cache on one device, and what fits.

Weights are the model's parameters (counted on the `meta` model) at the weight dtype, split
over tensor-parallel devices except the replicated norms and MoE routers, and routed experts
split over expert-parallel devices too. Activations are the peak live tensors of a step of
`max_num_batched_tokens`: the residual stream, the widest projection output, and fp32 logits
for the sampled rows. Whatever is left of `utilization` x capacity after both holds the KV
cache, whose per-token size follows the KV heads each device keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from intaglio.model.config import ModelConfig
from intaglio.model.kv_layout import split_kv_blocks
from intaglio.model.moe import MoE
from intaglio.toolkit.capture import build_meta_model
from intaglio.toolkit.hardware import Hardware
from intaglio.toolkit.ops import DTYPE_BYTES, SeqShape, canonical_dtype


@dataclass(frozen=True)
class MemoryPlan:
    capacity_bytes: float
    usable_bytes: float
    weight_bytes: float
    activation_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    num_kv_blocks: int
    block_size: int
    fits: bool
    message: str
    # Chunked local attention layers' own pool (engine/chunked_kv.py); 0 without such layers.
    num_local_kv_blocks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_overflow(plan: MemoryPlan, seqs: Sequence[SeqShape], data_parallel: int = 1) -> str | None:
    """Why a step over `seqs` does not fit a plan sized for it, or None when it fits: the
    weights, the step's activations and its sequences' KV cache (1/data_parallel of it on
    one device), with the numbers."""
    need = -(-sum(s.context_len for s in seqs) // data_parallel)
    if plan.fits and need <= plan.kv_capacity_tokens:
        return None
    gib = 2**30
    return (
        f"the step does not fit one device: weights {plan.weight_bytes / gib:.1f} GiB + "
        f"activations {plan.activation_bytes / gib:.1f} GiB + KV of {need} tokens "
        f"({need * plan.kv_bytes_per_token / gib:.1f} GiB) against {plan.usable_bytes / gib:.1f}"
        f" GiB usable, room for {max(plan.kv_capacity_tokens, 0)} KV tokens; raise tensor or "
        "expert parallelism, lower the precision or shrink the batch"
    )


def count_parameters(cfg: ModelConfig) -> tuple[int, int, int]:
    """(all parameters, those replicated on every device: norms and MoE routers, those of
    routed experts), counted without memory."""
    kinds = _parameter_kinds(cfg)
    total = sum(n for n, _, _ in kinds)  # tied weights are counted once
    replicated = sum(n for n, kind, _ in kinds if kind == "replicated")
    experts = sum(n for n, kind, _ in kinds if kind == "expert")
    return total, replicated, experts


def device_weight_elems(cfg: ModelConfig, tp: int = 1, ep: int = 1, pp: int = 1) -> float:
    """Parameters one device holds: split over tp (routed experts over tp x ep), norms and
    routers replicated, and the decoder layers split into pp stages (the costed stage keeps
    the embedding, final norm and lm_head as well)."""
    share = {"replicated": 1, "expert": tp * ep, "split": tp}
    return sum(
        n / share[kind] / (pp if in_layer else 1) for n, kind, in_layer in _parameter_kinds(cfg)
    )


def _parameter_kinds(cfg: ModelConfig) -> list[tuple[int, str, bool]]:
    """(size, how it splits, inside a decoder layer) of each parameter of the meta model."""
    model = build_meta_model(cfg)
    routers = {f"{n}.gate." for n, m in model.named_modules() if isinstance(m, MoE)}
    out = []
    for name, p in model.named_parameters():  # tied weights appear once
        if "norm" in name or any(name.startswith(r) for r in routers):
            kind = "replicated"
        elif ".experts." in name:
            kind = "expert"
        else:
            kind = "split"
        out.append((p.numel(), kind, ".layers." in name))
    return out


def plan_memory(
    cfg: ModelConfig,
    hw: Hardware,
    tp: int = 1,
    ep: int = 1,
    pp: int = 1,
    weight_dtype: str | None = None,
    kv_dtype: str | None = None,
    act_dtype: str | None = None,
    max_num_batched_tokens: int = 2048,
    max_num_seqs: int = 256,
    block_size: int = 16,
    utilization: float = 0.9,
) -> MemoryPlan:
    model_dtype = canonical_dtype(str(cfg.dtype))
    w_bytes = DTYPE_BYTES[canonical_dtype(weight_dtype or model_dtype)]
    a_bytes = DTYPE_BYTES[canonical_dtype(act_dtype or model_dtype)]
    kv_bytes = DTYPE_BYTES[canonical_dtype(kv_dtype or model_dtype)]
    weights = device_weight_elems(cfg, tp, ep, pp) * w_bytes
    widest = max(cfg.q_size + 2 * cfg.kv_size, 2 * cfg.intermediate_size) / tp
    activations = max_num_batched_tokens * (2 * cfg.hidden_size + widest) * a_bytes
    activations += min(max_num_seqs, max_num_batched_tokens) * cfg.vocab_size / tp * 4
    kv_heads = max(1, cfg.num_kv_heads // tp)
    capacity = hw.main_memory.capacity_bytes
    usable = capacity * utilization
    free = usable - weights - activations
    # KV pools as the engine sizes them (model/kv_layout.py): chunked-attention layers keep
    # only their windows.
    blocks, local_blocks, _ = split_kv_blocks(
        cfg,
        int(free),
        # whole bytes, even at fp4; a pipeline stage keeps 1/pp of the layers' KV
        int(2 * block_size * kv_heads * cfg.head_dim * kv_bytes / pp),
        block_size,
        max_num_seqs,
        max_num_batched_tokens,
    )
    tokens = blocks * block_size
    num_full = cfg.num_layers - (
        sum(cfg.uses_chunked_attention(i) for i in range(cfg.num_layers)) if local_blocks else 0
    )
    per_token = 2 * num_full * kv_heads * cfg.head_dim * kv_bytes / pp
    fits = blocks >= 1
    gib = 2**30
    if fits:
        message = (
            f"weights {weights / gib:.1f} GiB + activations {activations / gib:.1f} GiB leave "
            f"{free / gib:.1f} GiB for {tokens} KV tokens ({blocks} blocks of {block_size})"
        )
        if local_blocks:
            message += f", after {local_blocks} blocks for the chunked-attention layers' windows"
    else:
        message = (
            f"does not fit: weights {weights / gib:.1f} GiB + activations "
            f"{activations / gib:.1f} GiB exceed {utilization:.0%} of {capacity / gib:.1f} GiB; "
            "raise tensor or expert parallelism, or lower the weight precision"
        )
    return MemoryPlan(
        capacity,
        usable,
        weights,
        activations,
        per_token,
        tokens,
        blocks,
        block_size,
        fits,
        message,
        local_blocks,
    )
