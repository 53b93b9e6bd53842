"""Precision pass: store weights, run matmul activations, or keep the KV cache in other dtypes.

Weights and activations change on the matrix ops (matmuls, expert matmuls, router); the KV cache
changes on attention. Vector ops (norms, rope, elementwise) keep their precision, as fp8
serving stacks do. An fp8 matmul output is counted at fp8 too (the next op's input format),
and so are the collectives that move activations (all-reduce, all-gather, all-to-all).
"""

from __future__ import annotations

from intaglio.toolkit import ops as K
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.ops import DTYPE_BYTES, Op, canonical_dtype

_WEIGHTED = (K.MATMUL, K.EXPERT_MATMUL, K.ROUTER, K.EMBEDDING)
_MATRIX_ACT = (K.MATMUL, K.EXPERT_MATMUL)


def precision(
    weights: str | None = None, activations: str | None = None, kv: str | None = None
) -> Pass:
    """A pass setting the given dtypes ('bf16', 'fp8', 'int4', ...); None leaves one as is."""
    w = canonical_dtype(weights) if weights else None
    a = canonical_dtype(activations) if activations else None
    c = canonical_dtype(kv) if kv else None

    def apply(ops: list[Op]) -> list[Op]:
        out = []
        for op in ops:
            changes: dict[str, str] = {}
            if w and op.kind in _WEIGHTED:
                changes["weight_dtype"] = w
            if a and op.kind in _MATRIX_ACT:
                changes["act_dtype"] = a
            if c and op.kind == K.ATTENTION:
                changes["kv_dtype"] = c
            if a and op.kind == K.COLLECTIVE:  # collectives move activations in their dtype
                payload = op.attrs.get("payload_dtype", op.act_dtype)
                scale = DTYPE_BYTES[a] / DTYPE_BYTES[payload]
                attrs = dict(op.attrs, payload_dtype=a)
                out.append(op.replace(comm_bytes=op.comm_bytes * scale, attrs=attrs))
                continue
            out.append(op.replace(**changes) if changes else op)
        return out

    return apply
