"""Mixture-of-experts blocks as ops: a router, per-expert matmuls, shared experts, a combine.

Routing depends on data that `meta` tensors do not have, so capture assumes it: every token
picks `top_k` of `num_experts` experts uniformly (balanced load: tokens * top_k / num_experts
rows per expert, fractional as an expectation). An expert's weights are read when at least one
token reaches it, which for T tokens happens with probability 1 - (1 - top_k / E)^T; that
expectation is the weight traffic, so a batch-1 decode reads only the experts it touches.

To capture a model's MoE module, register it once with `register_moe_module(cls, shape_of)`,
where `shape_of(module)` returns its MoEShape; capture then replaces the module's forward by
these ops and an output of the input's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from intaglio.model.moe import MoE
from intaglio.toolkit import ops as K
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.leaves import LeafContext, register_opaque_leaf
from intaglio.toolkit.ops import Op, canonical_dtype

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class MoEShape:
    hidden: int
    expert_intermediate: int
    num_experts: int
    top_k: int
    num_shared_experts: int = 0
    shared_intermediate: int = 0


def moe_block_ops(
    name: str, layer: int | None, tokens: int, shape: MoEShape, weight_dtype: str, act_dtype: str
) -> list[Op]:
    h, inter, e, k = shape.hidden, shape.expert_intermediate, shape.num_experts, shape.top_k
    routed = tokens * k
    rows = routed / e
    touched = 1.0 - (1.0 - k / e) ** tokens

    def op(op_name: str, kind: str, role: str, **counts: Any) -> Op:
        return Op(
            op_name,
            kind,
            role,
            layer,
            weight_dtype=weight_dtype,
            act_dtype=act_dtype,
            kv_dtype=act_dtype,
            **counts,
        )

    ops = [
        op(
            f"{name}.router",
            K.ROUTER,
            "router",
            flops=2.0 * tokens * h * e + 5.0 * tokens * e,  # logits, then softmax and top-k
            weight_elems=h * e,
            act_in_elems=tokens * h,
            act_out_elems=tokens * k * 2,  # expert ids and gate weights
            shape=(tokens, h, e),
        )
    ]
    common = {"group": name, "hidden": h, "routed_tokens": routed, "num_experts": e, "top_k": k}
    # Every expert's gate/up, then the activations, then every down projection: the order a
    # grouped-GEMM kernel runs them, so fuse_moe_grouped_gemm can merge each role.
    gate_up: list[Op] = []
    acts: list[Op] = []
    down: list[Op] = []
    for x in range(e):
        for role, kk, n, dest in (
            ("expert_gate_up", h, 2 * inter, gate_up),
            ("expert_down", inter, h, down),
        ):
            dest.append(
                op(
                    f"{name}.experts.{x}.{role}",
                    K.EXPERT_MATMUL,
                    role,
                    flops=2.0 * rows * kk * n,
                    weight_elems=touched * kk * n,
                    act_in_elems=rows * kk,
                    act_out_elems=rows * n,
                    shape=(round(rows), kk, n),
                    attrs=dict(common, expert=x),
                )
            )
        acts.append(
            op(
                f"{name}.experts.{x}.act",
                K.ELEMENTWISE,
                "act",
                flops=5.0 * rows * inter,  # silu(gate) * up
                act_in_elems=2 * rows * inter,
                act_out_elems=rows * inter,
                shape=(round(rows), inter),
                attrs=dict(common, expert=x),
            )
        )
    ops += gate_up + acts + down
    if shape.num_shared_experts:
        si = shape.shared_intermediate * shape.num_shared_experts
        for role, kk, n in (("shared_gate_up", h, 2 * si), ("shared_down", si, h)):
            ops.append(
                op(
                    f"{name}.shared.{role}",
                    K.MATMUL,
                    role,
                    flops=2.0 * tokens * kk * n,
                    weight_elems=kk * n,
                    act_in_elems=tokens * kk,
                    act_out_elems=tokens * n,
                    shape=(tokens, kk, n),
                )
            )
    ops.append(
        op(
            f"{name}.combine",
            K.ELEMENTWISE,
            "moe_combine",
            flops=2.0 * routed * h,  # gate-weighted sum of each token's expert outputs
            act_in_elems=routed * h + tokens * k,
            act_out_elems=tokens * h,
            shape=(tokens, h),
        )
    )
    return ops


def register_moe_module(cls: type[M], shape_of: Callable[[M], MoEShape]) -> None:
    """Capture every `cls` module as moe_block_ops under balanced routing."""

    def handler(module: nn.Module, ctx: LeafContext, args: tuple) -> tuple[list[Op], torch.Tensor]:
        assert isinstance(module, cls)  # capture calls the handler of the module's own class
        x = args[0]  # [num_tokens, hidden]
        weight = next(module.parameters())
        ops = moe_block_ops(
            ctx.name,
            ctx.layer,
            x.numel() // x.shape[-1],
            shape_of(module),
            canonical_dtype(str(weight.dtype)),
            canonical_dtype(str(x.dtype)),
        )
        return ops, torch.empty_like(x)

    register_opaque_leaf(cls, handler)


def model_moe_shape(m: MoE) -> MoEShape:
    """The shape of intaglio/model/moe.py's block (Mixtral, Qwen3-MoE, Llama 4)."""
    num_experts, hidden, two_inter = m.experts.gate_up_proj.shape
    shared = m.shared_expert.down_proj.in_features if m.shared_expert is not None else 0
    return MoEShape(
        hidden=hidden,
        expert_intermediate=two_inter // 2,
        num_experts=num_experts,
        top_k=m.top_k,
        num_shared_experts=1 if shared else 0,
        shared_intermediate=shared,
    )


register_moe_module(MoE, model_moe_shape)


def routing_skew(s: float) -> Pass:
    """Skewed routing: expert e draws a share p_e ∝ (e + 1)^-s of the token-expert pairs
    (Zipf; s = 0 is the balanced default), so expert 0 is the hottest. Each expert's rows and
    FLOPs scale by E·p_e and its weights by the chance it is touched, 1 − (1 − k·p_e)^T. Run
    after `ep=N` (and before fusion): device 0, which holds the hottest expert, is the
    straggler, and its all-to-alls carry its experts' share, ep · Σ p_e over them."""
    if s < 0:
        raise ValueError(f"routing skew must be >= 0, got {s}")

    def apply(ops: list[Op]) -> list[Op]:
        if s == 0:
            return list(ops)
        out: list[Op] = []
        for op in ops:
            e = op.attrs.get("num_experts")
            if e is None or op.attrs.get("expert") is None:
                out.append(op)
                continue
            p = _zipf(e, s)
            x, k = op.attrs["expert"], op.attrs["top_k"]
            load = e * p[x]
            tokens = op.attrs["routed_tokens"] / k
            uniform = 1.0 - (1.0 - k / e) ** tokens
            touched = 1.0 - (1.0 - min(1.0, k * p[x])) ** tokens
            out.append(
                op.replace(
                    flops=op.flops * load,
                    act_in_elems=op.act_in_elems * load,
                    act_out_elems=op.act_out_elems * load,
                    weight_elems=op.weight_elems * touched / uniform if uniform else 0.0,
                    attrs=dict(op.attrs, route_probs=[min(1.0, k * p[x])]),
                )
            )
        return _scale_all_to_alls(out, s)

    return apply


def _zipf(e: int, s: float) -> list[float]:
    w = [(i + 1.0) ** -s for i in range(e)]
    return [v / sum(w) for v in w]


def _scale_all_to_alls(ops: list[Op], s: float) -> list[Op]:
    """Each MoE block's dispatch and combine carry device 0's experts' share of the pairs."""
    kept: dict[str, set[int]] = {}
    experts: dict[str, int] = {}
    for op in ops:
        if op.kind == K.EXPERT_MATMUL and op.attrs.get("expert") is not None:
            kept.setdefault(op.attrs["group"], set()).add(op.attrs["expert"])
            experts[op.attrs["group"]] = op.attrs["num_experts"]
    out = []
    for op in ops:
        group = op.name.rsplit(".", 1)[0]
        if op.kind == K.COLLECTIVE and op.role == "all_to_all" and group in kept:
            e = experts[group]
            p = _zipf(e, s)
            ep = e // len(kept[group])
            op = op.replace(comm_bytes=op.comm_bytes * ep * sum(p[x] for x in kept[group]))
        out.append(op)
    return out
