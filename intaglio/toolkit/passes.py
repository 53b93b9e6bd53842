"""Named passes and batch shapes for the command line: "tp=8,fuse,w=fp8" and "decode:64@2048".

Pass names: fuse (all fusions), fuse_norm, fuse_rope, fuse_qk_norm, fuse_epilogue,
fuse_projections, fuse_moe, fuse_allreduce (all-reduce + residual + norm), unfuse (separate
q/k/v and gate/up),
tp=N, ep=N (with attention data parallel), sp (sequence parallel), pp=N[:MICRO] (pipeline
stages and micro-batches), overlap[=CHUNKS] (collectives pipelined with their matmul),
skew=S (Zipf-skewed MoE routing, after ep),
w=DTYPE, a=DTYPE, kv=DTYPE, and fp8 (w=fp8). They run in the order given; partitioning
must come before fusion, pp last among the partitions, and sp, fuse_allreduce and overlap
after tp (all checked). In Python, a pass is any function `list[Op] -> list[Op]`, so user
passes compose with these.
"""

from __future__ import annotations

from intaglio.toolkit import fusion
from intaglio.toolkit.comm_passes import (
    fuse_allreduce_norm,
    overlap_communication,
    sequence_parallel,
)
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.moe import routing_skew
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.pipeline_parallel import pipeline_parallel
from intaglio.toolkit.precision import precision

SIMPLE: dict[str, Pass] = {
    "fuse": fusion.fuse_all,
    "fuse_norm": fusion.fuse_norm_into_matmul,
    "fuse_rope": fusion.fuse_rope_into_attention,
    "fuse_qk_norm": fusion.fuse_qk_norm_into_attention,
    "fuse_epilogue": fusion.fuse_epilogues,
    "fuse_projections": fusion.fuse_projections,
    "fuse_moe": fusion.fuse_moe_grouped_gemm,
    "fuse_allreduce": fuse_allreduce_norm,
    "unfuse": fusion.unfuse_projections,
    "fp8": precision(weights="fp8"),
    "sp": sequence_parallel,
}
_FUSIONS = {name for name in SIMPLE if name.startswith("fuse")}
_PARTITIONS = ("tp", "ep", "sp", "pp", "skew")
_AFTER_TP = ("sp", "fuse_allreduce", "overlap")  # they rewrite tensor-parallel collectives


def parse_passes(spec: str | None) -> list[Pass]:
    passes: list[Pass] = []
    seen: list[str] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        _check_order(item, key, seen, spec or "")
        seen.append(item)
        if item in SIMPLE:
            passes.append(SIMPLE[item])
        elif key in ("tp", "ep") and value.isdigit():
            passes.append((tensor_parallel if key == "tp" else expert_parallel)(int(value)))
        elif key == "pp" and value.replace(":", "", 1).isdigit():
            stages, _, micro = value.partition(":")
            passes.append(pipeline_parallel(int(stages), int(micro) if micro else None))
        elif key == "skew" and _is_number(value):
            passes.append(routing_skew(float(value)))
        elif key == "overlap" and (value.isdigit() or not value):
            passes.append(overlap_communication(int(value or 4)))
        elif key in ("w", "a", "kv") and value:
            name = {"w": "weights", "a": "activations", "kv": "kv"}[key]
            passes.append(precision(**{name: value}))
        else:
            raise ValueError(
                f"unknown pass {item!r}; use {', '.join(SIMPLE)}, tp=N, ep=N, pp=N[:MICRO], "
                "overlap[=CHUNKS], skew=S, w=DTYPE, a=DTYPE or kv=DTYPE"
            )
    return passes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_order(item: str, key: str, seen: list[str], spec: str) -> None:
    keys = [s.partition("=")[0] for s in seen]
    fused = [s for s in seen if s in _FUSIONS]
    if key in _PARTITIONS and fused:
        # Fusion folds the residual add into the row-parallel matmul (and norms into the
        # next one), so a later split would misplace the all-reduce and split replicated
        # work: partition first.
        raise ValueError(
            f"pass {item!r} comes after {fused[0]!r}; partitioning must come before "
            f"fusion, e.g. {','.join([item, *seen])}"
        )
    if key in _PARTITIONS and key in keys:
        raise ValueError(f"pass {key} is given twice in {spec!r}")
    if key in _PARTITIONS and "pp" in keys:
        raise ValueError(f"pass {item!r} comes after pp; pipeline stages are cut last")
    if key in _AFTER_TP and "tp" not in keys:
        raise ValueError(f"pass {item!r} rewrites tensor-parallel collectives; put tp=N before it")


def pass_setting(spec: str | None, key: str) -> str | None:
    """The value of `key=VALUE` in a pass spec (for the memory plan), e.g. tp or kv."""
    for item in (spec or "").split(","):
        k, _, v = item.strip().partition("=")
        if k == key:
            return v
    if key == "w" and "fp8" in [i.strip() for i in (spec or "").split(",")]:
        return "fp8"
    return None


def parse_batch(spec: str) -> list[SeqShape]:
    """'decode:64@2048+prefill:512+chunk:256@1024' -> the step's sequences."""
    seqs: list[SeqShape] = []
    for part in spec.split("+"):
        kind, _, rest = part.strip().partition(":")
        try:
            if kind == "decode":
                count, _, ctx = rest.partition("@")
                seqs += [SeqShape(1, int(ctx))] * int(count)
            elif kind == "prefill":
                n = int(rest)
                seqs.append(SeqShape(n, n))
            elif kind == "chunk":
                tokens, _, ctx = rest.partition("@")
                seqs.append(SeqShape(int(tokens), int(ctx)))
            else:
                raise ValueError(kind)
        except ValueError:
            raise ValueError(
                f"bad batch part {part!r}; use decode:COUNT@CONTEXT, prefill:TOKENS or "
                "chunk:TOKENS@CONTEXT joined by '+'"
            ) from None
    return seqs
