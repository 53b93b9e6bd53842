"""Passes on the tensor-parallel collectives: fused all-reduce + residual + norm, sequence
parallelism, and compute/communication overlap. Each runs after `tensor_parallel`.

- `fuse_allreduce_norm`: the all-reduce after a row-parallel matmul also adds the residual
  and applies the next RMSNorm (as TensorRT-LLM's fused AllReduce kernels do): the reduced
  tensor is never written and read back, the residual add and the norm launch no kernels;
  the fused op reads the residual stream and writes the new one and the normalised output.
- `sequence_parallel` (Megatron-LM): each all-reduce becomes a reduce-scatter, and an
  all-gather runs before the next column-parallel matmul; in between, residual adds and norms
  work on 1/tp of the tokens. The bytes on the wire are the all-reduce's (RS + AG = AR).
- `overlap_communication(chunks)`: a collective after a matmul is pipelined with it in
  `chunks` pieces, each piece's reduction overlapping the next piece's GEMM, so only
  max(comm - matmul, 0) + min(comm, matmul) / chunks stays exposed (the cost model reads
  `overlap_chunks`).
"""

from __future__ import annotations

from intaglio.toolkit import ops as K
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.ops import Op
from intaglio.toolkit.parallel import collective

_REDUCED = ("o_proj.all_reduce", "down_proj.all_reduce", "combine.all_reduce", "embed.all_reduce")


def _is_tp_reduce(op: Op) -> bool:
    return (
        op.kind == K.COLLECTIVE
        and op.role in ("all_reduce", "reduce_scatter")
        and (op.name.endswith(_REDUCED) or op.name.endswith(".reduce_scatter"))
    )


def fuse_allreduce_norm(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if _is_tp_reduce(op) and nxt is not None and nxt.role == "residual":
            stream = nxt.act_out_elems  # [tokens, hidden]: the residual stream
            fused = op.replace(
                flops=nxt.flops,
                act_in_elems=nxt.act_in_elems - stream,  # the reduced sum stays on chip
                act_out_elems=nxt.act_out_elems,
                act_dtype=nxt.act_dtype,
                comm_bytes=op.comm_bytes,
                fused=op.fused + (nxt.name,),
            )
            i += 2
            norm = ops[i] if i < len(ops) else None
            if norm is not None and norm.kind == K.NORM:
                fused = fused.replace(
                    flops=fused.flops + norm.flops,
                    weight_elems=norm.weight_elems,
                    act_out_elems=fused.act_out_elems + norm.act_out_elems,
                    fused=fused.fused + (norm.name,),
                )
                i += 1
            out.append(fused)
            continue
        out.append(op)
        i += 1
    return out


def sequence_parallel(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    group = 0
    gather: Op | None = None  # the all-gather owed before the next matrix op
    for op in ops:
        if op.kind == K.COLLECTIVE and op.role == "all_reduce" and op.name.endswith(_REDUCED):
            group = op.attrs["group"]
            name = op.name.removesuffix(".all_reduce")
            out.append(
                collective(
                    f"{name}.reduce_scatter",
                    op.layer,
                    "reduce_scatter",
                    op.comm_bytes,
                    group,
                    op.act_dtype,
                )
            )
            gather = collective(
                f"{name}.all_gather", op.layer, "all_gather", op.comm_bytes, group, op.act_dtype
            )
            continue
        if gather is not None and (op.kind in K.MATRIX_KINDS or op.kind == K.COLLECTIVE):
            out.append(gather.replace(layer=op.layer))
            gather = None
        if gather is not None and (op.kind == K.NORM or op.role == "residual"):
            op = op.replace(
                flops=op.flops / group,
                act_in_elems=op.act_in_elems / group,
                act_out_elems=op.act_out_elems / group,
            )
        out.append(op)
    if not group:
        raise ValueError("sequence parallelism (sp) needs tensor parallelism (tp=N) before it")
    return out


def overlap_communication(chunks: int = 4) -> Pass:
    if chunks < 1:
        raise ValueError(f"overlap needs at least 1 chunk, got {chunks}")

    def apply(ops: list[Op]) -> list[Op]:
        out: list[Op] = []
        for op in ops:
            after_matmul = out and out[-1].kind in (K.MATMUL, K.EXPERT_MATMUL)
            if op.kind == K.COLLECTIVE and after_matmul:
                op = op.replace(attrs=dict(op.attrs, overlap_chunks=chunks))
            out.append(op)
        return out

    return apply
