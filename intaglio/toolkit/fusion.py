"""Fusion passes: fold ops into their neighbours so the tensor between them never hits memory.

A pass is a function `list[Op] -> list[Op]`. Folding producer `a` into consumer `b` adds their
FLOPs and weights and removes the intermediate tensor's round trip: `a` no longer writes it and
`b` no longer reads it. The intermediate is what `a` writes that `b` reads, min(a.out, b.in) for
the chains a transformer has (norm -> matmul, matmul -> SwiGLU -> product, matmul -> residual add,
rope -> attention). Our model already stores q/k/v and gate/up fused (one matmul each);
`unfuse_projections` rebuilds the separate matmuls of an unfused implementation, and
`fuse_projections` merges sibling matmuls that read the same input back into one.
"""

from __future__ import annotations

from collections.abc import Callable

from intaglio.toolkit import ops as K
from intaglio.toolkit.ops import Op

Pass = Callable[[list[Op]], list[Op]]


def merge(a: Op, b: Op, keep: Op) -> Op:
    """`a` then `b` as one op with `keep`'s identity; their intermediate stays on chip."""
    inter = min(a.act_out_elems, b.act_in_elems)
    other = b if keep is a else a
    return keep.replace(
        flops=a.flops + b.flops,
        weight_elems=a.weight_elems + b.weight_elems,
        act_in_elems=a.act_in_elems + b.act_in_elems - inter,
        act_out_elems=a.act_out_elems + b.act_out_elems - inter,
        kv_read_elems=a.kv_read_elems + b.kv_read_elems,
        kv_write_elems=a.kv_write_elems + b.kv_write_elems,
        fused=keep.fused + (other.name,) + other.fused,
    )


def _fold(ops: list[Op], match: Callable[[Op, Op], Op | None]) -> list[Op]:
    """Walk the sequence; where match(prev, op) gives a merged op, it replaces both."""
    out: list[Op] = []
    for op in ops:
        merged = match(out[-1], op) if out else None
        if merged is not None:
            out[-1] = merged
        else:
            out.append(op)
    return out


def _same_layer(a: Op, b: Op) -> bool:
    return a.layer == b.layer


def fuse_norm_into_matmul(ops: list[Op]) -> list[Op]:
    """RMSNorm computed in the prologue of the matmul that consumes it (qkv, gate/up)."""

    def match(prev: Op, op: Op) -> Op | None:
        if prev.kind == K.NORM and op.kind in (K.MATMUL, K.ROUTER) and _same_layer(prev, op):
            if prev.act_out_elems == op.act_in_elems:
                return merge(prev, op, keep=op)
        return None

    return _fold(ops, match)


def fuse_rope_into_attention(ops: list[Op]) -> list[Op]:
    """RoPE applied to q and k inside the attention kernel as they are loaded."""

    def match(prev: Op, op: Op) -> Op | None:
        if prev.kind == K.ROPE and op.kind == K.ATTENTION and _same_layer(prev, op):
            return merge(prev, op, keep=op)
        return None

    return _fold(ops, match)


def fuse_qk_norm_into_attention(ops: list[Op]) -> list[Op]:
    """Per-head work between the projections and attention (Llama 4's q/k L2 norm: casts,
    squares, a mean, rsqrt, a product) done by the attention kernel as it loads q and k,
    so the rope before it meets attention and folds in too."""
    out: list[Op] = []
    for op in ops:
        if op.kind == K.ATTENTION:
            while (
                out
                and out[-1].kind == K.ELEMENTWISE
                and ".self_attn." in out[-1].name
                and _same_layer(out[-1], op)
            ):
                op = merge(out.pop(), op, keep=op)
        out.append(op)
    return out


_EPILOGUE_ROLES = ("act", "act_mul", "residual")


def fuse_epilogues(ops: list[Op]) -> list[Op]:
    """SwiGLU activation and product, and residual adds, in the producing matmul's epilogue."""

    def match(prev: Op, op: Op) -> Op | None:
        if (
            prev.kind in (K.MATMUL, K.EXPERT_MATMUL)
            and op.kind == K.ELEMENTWISE
            and op.role in _EPILOGUE_ROLES
            and _same_layer(prev, op)
        ):
            return merge(prev, op, keep=prev)
        return None

    return _fold(ops, match)


def fuse_moe_grouped_gemm(ops: list[Op]) -> list[Op]:
    """Consecutive per-expert matmuls of one MoE block and role become one grouped GEMM."""

    def match(prev: Op, op: Op) -> Op | None:
        if (
            prev.kind == K.EXPERT_MATMUL
            and op.kind == K.EXPERT_MATMUL
            and prev.attrs.get("group") == op.attrs.get("group")
            and prev.role == op.role
        ):
            m = prev.shape[0] + op.shape[0] if prev.shape and op.shape else 0
            attrs = dict(prev.attrs, grouped=prev.attrs.get("grouped", 1) + 1)
            attrs.pop("expert", None)
            if "route_probs" in prev.attrs:  # skewed routing: each expert's own share
                attrs["route_probs"] = prev.attrs["route_probs"] + op.attrs["route_probs"]
            return prev.replace(
                name=f"{prev.attrs.get('group')}.{prev.role}.grouped",
                flops=prev.flops + op.flops,
                weight_elems=prev.weight_elems + op.weight_elems,
                act_in_elems=prev.act_in_elems + op.act_in_elems,
                act_out_elems=prev.act_out_elems + op.act_out_elems,
                shape=(m, *prev.shape[1:]) if prev.shape else (),
                attrs=attrs,
                fused=prev.fused + (op.name,) + op.fused,
            )
        return None

    return _fold(ops, match)


_SPLITS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def unfuse_projections(ops: list[Op]) -> list[Op]:
    """Separate q/k/v and gate/up matmuls, as an unfused implementation runs them.

    q/k/v split by the attention op's head counts when they follow; gate/up split in halves.
    """
    out: list[Op] = []
    for i, op in enumerate(ops):
        if op.kind != K.MATMUL or op.role not in _SPLITS or not op.shape:
            out.append(op)
            continue
        m, k, n = op.shape
        if op.role == "gate_up_proj":
            widths = [n // 2, n // 2]
        else:
            attn = next((o for o in ops[i:] if o.kind == K.ATTENTION), None)
            if attn is None:
                out.append(op)
                continue
            q = attn.attrs["num_heads"] * attn.attrs["head_dim"]
            kv = attn.attrs["num_kv_heads"] * attn.attrs["head_dim"]
            widths = [q, kv, kv]
        prefix = op.name.rsplit(".", 1)[0]
        for role, w in zip(_SPLITS[op.role], widths):
            share = w / n
            out.append(
                op.replace(
                    name=f"{prefix}.{role}",
                    role=role,
                    flops=op.flops * share,
                    weight_elems=op.weight_elems * share,
                    act_out_elems=op.act_out_elems * share,
                    shape=(m, k, w),
                )
            )
    return out


_SIBLINGS = {
    ("q_proj", "k_proj"): "qk_proj",
    ("qk_proj", "v_proj"): "qkv_proj",
    ("gate_proj", "up_proj"): "gate_up_proj",
}


def fuse_projections(ops: list[Op]) -> list[Op]:
    """Sibling matmuls reading the same input (q, k, v; gate, up) as one wider matmul."""

    def match(prev: Op, op: Op) -> Op | None:
        role = _SIBLINGS.get((prev.role, op.role))
        if role is None or prev.kind != K.MATMUL or op.kind != K.MATMUL:
            return None
        m, k, n1 = prev.shape
        return prev.replace(
            name=f"{prev.name.rsplit('.', 1)[0]}.{role}",
            role=role,
            flops=prev.flops + op.flops,
            weight_elems=prev.weight_elems + op.weight_elems,
            act_out_elems=prev.act_out_elems + op.act_out_elems,  # the input is read once
            shape=(m, k, n1 + op.shape[2]),
            fused=prev.fused + (op.name,) + op.fused,
        )

    return _fold(ops, match)


def fuse_all(ops: list[Op]) -> list[Op]:
    """Every fusion above, in an order where each one's pattern survives the previous."""
    for p in (
        fuse_projections,
        fuse_norm_into_matmul,
        fuse_qk_norm_into_attention,
        fuse_rope_into_attention,
        fuse_epilogues,
        fuse_moe_grouped_gemm,
    ):
        ops = p(ops)
    return ops
