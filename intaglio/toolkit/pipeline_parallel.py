"""Pipeline parallelism: the layers split into `pp` stages, a step's batch into micro-batches.

One device holds one stage: a contiguous 1/pp of the layers (the stage costed is the first,
given the embedding, the final norm and lm_head too, so it bounds the slowest stage). The
step's batch runs as `micro_batches` micro-batches through the stages (GPipe-style fill and
drain): the step takes (micro_batches + pp - 1) stage times of one micro-batch, each reading
the stage's weights again. The pass emits exactly that sequence: micro-batch-sized copies of
the stage's ops (token work divided by the micro-batch count, weights whole) with a send of
the activations to the next stage after each. The pp - 1 fill and drain copies stand for
the bubble: the step's time is right, and its FLOPs and bytes count them as worked.
"""

from __future__ import annotations

from intaglio.toolkit import ops as K
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.ops import DTYPE_BYTES, Op
from intaglio.toolkit.parallel import collective


def pipeline_parallel(pp: int, micro_batches: int | None = None) -> Pass:
    micro = micro_batches or pp
    if pp < 1 or micro < 1:
        raise ValueError(
            f"pipeline parallel needs pp >= 1 and micro-batches >= 1, got {pp}, {micro}"
        )

    def apply(ops: list[Op]) -> list[Op]:
        if pp == 1:
            return list(ops)
        layers = sorted({o.layer for o in ops if o.layer is not None})
        if len(layers) % pp:
            raise ValueError(f"{len(layers)} layers do not split into {pp} pipeline stages")
        stage = set(layers[: len(layers) // pp])
        kept = [o for o in ops if o.layer is None or o.layer in stage]
        shares = [_micro_share(o, micro) for o in kept]
        hidden = next((o.shape[-1] for o in ops if o.kind == K.EMBEDDING and o.shape), 0)
        tokens = next((o.shape[0] for o in ops if o.kind == K.EMBEDDING and o.shape), 0)
        act = next((o for o in ops if o.kind == K.EMBEDDING), None)
        dtype = act.act_dtype if act else "bfloat16"
        send = collective(
            "stage.send", max(stage), "send", tokens / micro * hidden * DTYPE_BYTES[dtype], 2, dtype
        )
        out: list[Op] = []
        for k in range(micro + pp - 1):
            out += [o.replace(name=f"{o.name}@mb{k}") for o in shares] + [send]
        return out

    return apply


def _micro_share(op: Op, micro: int) -> Op:
    """One micro-batch's part of an op: its tokens' work, the op's whole weights."""
    attrs = op.attrs
    if op.kind == K.ATTENTION:  # the step model scales its closed form by `share`
        seqs = max(1, round(op.attrs.get("num_seqs", 1) / micro))
        attrs = dict(op.attrs, num_seqs=seqs, share=op.attrs.get("share", 1.0) / micro)
    return op.replace(
        flops=op.flops / micro,
        act_in_elems=op.act_in_elems / micro,
        act_out_elems=op.act_out_elems / micro,
        kv_read_elems=op.kv_read_elems / micro,
        kv_write_elems=op.kv_write_elems / micro,
        comm_bytes=op.comm_bytes / micro,
        shape=(max(1, round(op.shape[0] / micro)), *op.shape[1:]) if op.shape else (),
        attrs=attrs,
    )
