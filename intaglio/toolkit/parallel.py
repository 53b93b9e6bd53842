"""Tensor- and expert-parallel partitioning: one device's share of a step, plus collectives.

Tensor parallel (Megatron style) over `tp` devices: q/k/v and gate/up are split by columns,
o_proj and down_proj by rows and followed by an all-reduce of the hidden state; attention,
rope and the SwiGLU product split by heads; KV heads split too, replicated once tp exceeds
them; the vocabulary-parallel embedding adds an all-reduce and lm_head an all-gather of the
logits. Norms and residual adds are replicated. Apply partitioning before fusions, so the
all-reduce lands between a row-parallel matmul and the residual add it feeds.

Expert parallel over `ep` devices keeps each device's experts (balanced routing: 1/ep of
the token-expert pairs) and wraps each MoE block in an all-to-all dispatch and combine; the
rest of the model runs data parallel over the same devices (attention DP), each on 1/ep of
the tokens, rather than replicating attention over the whole batch.
"""

from __future__ import annotations

from intaglio.toolkit import ops as K
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.ops import DTYPE_BYTES, Op

_COLUMN = (
    "qkv_proj",
    "q_proj",
    "k_proj",
    "v_proj",
    "gate_up_proj",
    "gate_proj",
    "up_proj",
    "shared_gate_up",
)
_ROW = ("o_proj", "down_proj")
# The shared expert's down projection is row-split too, but its partial sums join the routed
# experts' in the one all-reduce after the MoE combine (as vLLM reduces them together).
_ROW_REDUCED_LATER = ("shared_down",)
_BY_HEADS = (K.ROPE,)
_SPLIT_ELEMENTWISE = ("act", "act_mul")
# Per-head norms: the activations split with the heads; the head_dim weight is on every device.
_SPLIT_ACTIVATIONS = ("q_norm", "k_norm")


def collective(
    name: str,
    layer: int | None,
    algo: str,
    payload_bytes: float,
    group: int,
    dtype: str = "bfloat16",
) -> Op:
    """A ring collective over `group` devices moving a `payload_bytes` tensor of `dtype`
    (the precision pass rescales the payload when the activations change dtype)."""
    factor, steps = {
        "all_reduce": (2 * (group - 1) / group, 2 * (group - 1)),
        "reduce_scatter": ((group - 1) / group, group - 1),
        "all_gather": ((group - 1) / group, group - 1),
        "all_to_all": ((group - 1) / group, 1),
        "send": (1.0, 1),  # point to point, e.g. between pipeline stages
    }[algo]
    return Op(
        name,
        K.COLLECTIVE,
        algo,
        layer,
        flops=0.0,
        comm_bytes=payload_bytes,
        act_dtype=dtype,
        attrs={"group": group, "comm_factor": factor, "comm_steps": steps, "payload_dtype": dtype},
    )


def _scale(op: Op, f: float, **fields: float) -> Op:
    """Divide FLOPs and the named element counts by `f` (a device's share)."""
    return op.replace(flops=op.flops / f, **{k: getattr(op, k) / f for k in fields})


def tensor_parallel(tp: int) -> Pass:
    if tp < 1:
        raise ValueError(f"tensor parallel degree must be at least 1, got {tp}")

    def apply(ops: list[Op]) -> list[Op]:
        if tp == 1:
            return list(ops)
        out: list[Op] = []
        for op in ops:
            act_bytes = DTYPE_BYTES[op.act_dtype]
            if op.kind == K.MATMUL and op.role in _COLUMN:
                m, k, n = op.shape
                out.append(
                    _scale(op, tp, weight_elems=1, act_out_elems=1).replace(shape=(m, k, n // tp))
                )
            elif op.kind == K.MATMUL and op.role in _ROW:
                m, k, n = op.shape
                out.append(
                    _scale(op, tp, weight_elems=1, act_in_elems=1).replace(shape=(m, k // tp, n))
                )
                out.append(
                    collective(
                        f"{op.name}.all_reduce",
                        op.layer,
                        "all_reduce",
                        op.act_out_elems * act_bytes,
                        tp,
                        op.act_dtype,
                    )
                )
            elif op.kind == K.MATMUL and op.role in _ROW_REDUCED_LATER:
                m, k, n = op.shape
                out.append(
                    _scale(op, tp, weight_elems=1, act_in_elems=1).replace(shape=(m, k // tp, n))
                )
            elif op.kind == K.MATMUL and op.role == "lm_head":
                m, k, n = op.shape
                out.append(
                    _scale(op, tp, weight_elems=1, act_out_elems=1).replace(shape=(m, k, n // tp))
                )
                out.append(
                    collective(
                        "lm_head.all_gather",
                        None,
                        "all_gather",
                        op.act_out_elems * act_bytes,
                        tp,
                        op.act_dtype,
                    )
                )
            elif op.kind == K.EMBEDDING:
                out.append(_scale(op, tp, weight_elems=1))
                out.append(
                    collective(
                        "embed.all_reduce",
                        None,
                        "all_reduce",
                        op.act_out_elems * act_bytes,
                        tp,
                        op.act_dtype,
                    )
                )
            elif op.kind == K.ATTENTION:
                out.append(_attention_share(op, tp))
            elif op.kind in _BY_HEADS or op.role in _SPLIT_ELEMENTWISE:
                out.append(_scale(op, tp, act_in_elems=1, act_out_elems=1, weight_elems=1))
            elif op.role in _SPLIT_ACTIVATIONS or (
                op.kind == K.ELEMENTWISE and ".self_attn." in op.name
            ):  # per-head work between the projections and attention (Llama 4's q/k L2 norm)
                out.append(_scale(op, tp, act_in_elems=1, act_out_elems=1))
            elif op.kind == K.EXPERT_MATMUL:
                m, k, n = op.shape  # gate/up split by columns, down by rows, as dense MLPs
                shape = (m, k // tp, n) if op.role == "expert_down" else (m, k, n // tp)
                out.append(
                    _scale(op, tp, weight_elems=1, act_in_elems=1, act_out_elems=1).replace(
                        shape=shape
                    )
                )
            elif op.role == "moe_combine":
                out.append(op)
                out.append(
                    collective(
                        f"{op.name}.all_reduce",
                        op.layer,
                        "all_reduce",
                        op.act_out_elems * act_bytes,
                        tp,
                        op.act_dtype,
                    )
                )
            else:
                out.append(op)
        return out

    return apply


def _attention_share(op: Op, tp: int) -> Op:
    heads, kv_heads = op.attrs["num_heads"], op.attrs["num_kv_heads"]
    if heads % tp:
        raise ValueError(f"{heads} attention heads do not split over tensor parallel {tp}")
    kv_local = max(1, kv_heads // tp)  # replicated once tp exceeds the KV heads
    kv_share = kv_local / kv_heads
    return op.replace(
        flops=op.flops / tp,
        act_in_elems=op.act_in_elems / tp,
        act_out_elems=op.act_out_elems / tp,
        kv_read_elems=op.kv_read_elems * kv_share,
        kv_write_elems=op.kv_write_elems * kv_share,
        attrs=dict(op.attrs, num_heads=heads // tp, num_kv_heads=kv_local),
    )


def expert_parallel(ep: int) -> Pass:
    """Experts split over `ep` devices, and everything else data parallel over them: each
    device runs attention, norms and the dense parts for its 1/ep of the batch's tokens (with
    all their weights) and all-to-alls its routed tokens to the experts' devices."""
    if ep < 1:
        raise ValueError(f"expert parallel degree must be at least 1, got {ep}")

    def apply(ops: list[Op]) -> list[Op]:
        if ep == 1:
            return list(ops)
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for i, op in enumerate(ops):
            if op.kind == K.EXPERT_MATMUL:
                first.setdefault(op.attrs["group"], i)
                last[op.attrs["group"]] = i
        out: list[Op] = []
        for i, op in enumerate(ops):
            group: str = op.attrs.get("group", "")
            if op.kind == K.EXPERT_MATMUL and first[group] == i:
                out.append(_all_to_all(f"{group}.dispatch", op, ep))
            expert = op.attrs.get("expert")
            if op.kind == K.EXPERT_MATMUL and expert is None:  # grouped: this device's share
                out.append(_scale(op, ep, weight_elems=1, act_in_elems=1, act_out_elems=1))
            elif expert is not None:  # one expert's op: device 0 keeps its own experts
                if expert % ep == 0:
                    out.append(op)
            else:
                out.append(_data_parallel_share(op, ep))
            if op.kind == K.EXPERT_MATMUL and last[group] == i:
                out.append(_all_to_all(f"{group}.combine", op, ep))
        return out

    return apply


def _data_parallel_share(op: Op, dp: int) -> Op:
    """One of `dp` devices' share of a token-parallel op: its tokens, all of its weights."""
    shared = _scale(
        op, dp, act_in_elems=1, act_out_elems=1, kv_read_elems=1, kv_write_elems=1, comm_bytes=1
    )
    if op.kind == K.ATTENTION:  # the step model scales its closed form by `share`
        seqs = max(1, round(op.attrs.get("num_seqs", 1) / dp))
        share = op.attrs.get("share", 1.0) / dp
        shared = shared.replace(attrs=dict(op.attrs, num_seqs=seqs, share=share))
    return shared


def _all_to_all(name: str, op: Op, ep: int) -> Op:
    # Each device sends its own tokens' routed copies to the experts' devices (and back).
    routed = op.attrs.get("routed_tokens", 0.0) / ep
    payload = routed * op.attrs.get("hidden", 0) * DTYPE_BYTES[op.act_dtype]
    return collective(name, op.layer, "all_to_all", payload, ep, op.act_dtype)
