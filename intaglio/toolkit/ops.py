"""Op: one operation of an engine step, as a chip would execute it.

Traffic is kept as element counts per tensor class (weights, activations in and out, KV cache
read and written) next to each class's dtype, so a precision pass changes a dtype and every byte
count follows. FLOPs count multiply and add separately (a multiply-accumulate is 2 FLOPs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Op kinds (what the hardware sees) ------------------------------------------------------------
MATMUL = "matmul"
ATTENTION = "attention"
NORM = "norm"
ELEMENTWISE = "elementwise"
ROPE = "rope"
EMBEDDING = "embedding"
ROUTER = "router"
EXPERT_MATMUL = "expert_matmul"
COLLECTIVE = "collective"
KINDS = (
    MATMUL,
    ATTENTION,
    NORM,
    ELEMENTWISE,
    ROPE,
    EMBEDDING,
    ROUTER,
    EXPERT_MATMUL,
    COLLECTIVE,
)
# Kinds whose math runs on the matrix units; the rest run on vector units.
MATRIX_KINDS = (MATMUL, ATTENTION, ROUTER, EXPERT_MATMUL)

# Bytes per element of every dtype a description may name (fp4 / int4: two per byte).
DTYPE_BYTES: dict[str, float] = {
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "fp8": 1,
    "int8": 1,
    "fp4": 0.5,
    "int4": 0.5,
}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16'; raises for a dtype the toolkit has no size for."""
    name = _ALIASES.get(name, name).removeprefix("torch.")
    if name == "float8_e4m3fn" or name == "float8_e5m2":
        name = "fp8"
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {name!r}; known: {sorted(DTYPE_BYTES)}")
    return name


@dataclass(frozen=True)
class Op:
    name: str  # where it runs in the model, e.g. "layers.3.self_attn.qkv_proj"
    kind: str  # one of KINDS
    role: str  # what it does: qkv_proj, o_proj, gate_up_proj, down_proj, lm_head, residual, ...
    layer: int | None  # decoder layer index; None outside the layers
    flops: float
    weight_elems: float = 0.0
    act_in_elems: float = 0.0
    act_out_elems: float = 0.0
    kv_read_elems: float = 0.0
    kv_write_elems: float = 0.0
    comm_bytes: float = 0.0  # payload of a collective (per device)
    weight_dtype: str = "bfloat16"
    act_dtype: str = "bfloat16"
    kv_dtype: str = "bfloat16"
    shape: tuple[int, ...] = ()  # matmul: (m, k, n); others: the main tensor's shape
    attrs: dict[str, Any] = field(default_factory=dict)  # kind-specific facts (heads, group)
    fused: tuple[str, ...] = ()  # names of the ops a fusion pass folded into this one

    @property
    def weight_bytes(self) -> float:
        return self.weight_elems * DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes(self) -> float:
        return (self.kv_read_elems + self.kv_write_elems) * DTYPE_BYTES[self.kv_dtype]

    @property
    def bytes_read(self) -> float:
        act = self.act_in_elems * DTYPE_BYTES[self.act_dtype]
        kv = self.kv_read_elems * DTYPE_BYTES[self.kv_dtype]
        return self.weight_bytes + act + kv

    @property
    def bytes_written(self) -> float:
        act = self.act_out_elems * DTYPE_BYTES[self.act_dtype]
        return act + self.kv_write_elems * DTYPE_BYTES[self.kv_dtype]

    @property
    def bytes(self) -> float:
        """Memory traffic: what is read plus what is written (collectives: none)."""
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte of memory traffic (the roofline's x axis)."""
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def rows(self) -> float:
        """Rows of a matrix op (tokens, or sampled rows for lm_head): its efficiency key."""
        return float(self.shape[0]) if self.shape else 0.0

    @property
    def compute_dtype(self) -> str:
        """The math runs at the activations' precision (weights are widened to meet them)."""
        return self.act_dtype

    def replace(self, **changes: Any) -> Op:
        return dataclasses.replace(self, **changes)

    def to_row(self) -> dict[str, Any]:
        """A flat record for tables and CSV."""
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "layer": "" if self.layer is None else self.layer,
            "shape": "x".join(str(s) for s in self.shape),
            "dtype": self.compute_dtype,
            "flops": self.flops,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "comm_bytes": self.comm_bytes,
            "intensity": self.intensity,
            "fused": "+".join(self.fused),
        }


@dataclass(frozen=True)
class SeqShape:
    """One request's part of a step: new tokens this step and context once they are written."""

    num_new_tokens: int
    context_len: int
    samples: bool = True  # the step reaches its last known token, so logits are computed

    def __post_init__(self) -> None:
        if self.num_new_tokens < 1 or self.context_len < self.num_new_tokens:
            raise ValueError(
                f"a sequence needs 1 <= num_new_tokens <= context_len, got "
                f"{self.num_new_tokens} new tokens at context {self.context_len}"
            )


def total(ops: list[Op], attr: str) -> float:
    return float(sum(getattr(op, attr) for op in ops))
