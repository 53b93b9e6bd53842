"""Named passes and batch shapes for the command line: "tp=8,fuse,w=fp8" and "decode:64@2048".

Pass names: fuse (all fusions), fuse_norm, fuse_rope, fuse_epilogue, fuse_projections,
fuse_moe, unfuse (separate q/k/v and gate/up), tp=N, ep=N, w=DTYPE, a=DTYPE, kv=DTYPE, and fp8
(w=fp8). They run in the order given; partitioning must come before fusion (checked). In
Python, a pass is any function `list[Op] -> list[Op]`, so user passes compose with these.
"""

from __future__ import annotations

from intaglio.toolkit import fusion
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.precision import precision

SIMPLE: dict[str, Pass] = {
    "fuse": fusion.fuse_all,
    "fuse_norm": fusion.fuse_norm_into_matmul,
    "fuse_rope": fusion.fuse_rope_into_attention,
    "fuse_epilogue": fusion.fuse_epilogues,
    "fuse_projections": fusion.fuse_projections,
    "fuse_moe": fusion.fuse_moe_grouped_gemm,
    "unfuse": fusion.unfuse_projections,
    "fp8": precision(weights="fp8"),
}


_FUSIONS = {name for name in SIMPLE if name.startswith("fuse")}


def parse_passes(spec: str | None) -> list[Pass]:
    passes: list[Pass] = []
    seen: list[str] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        fused = [s for s in seen if s in _FUSIONS]
        if key in ("tp", "ep") and fused:
            # Fusion folds the residual add into the row-parallel matmul (and norms into the
            # next one), so a later split would misplace the all-reduce and split replicated
            # work: partition first.
            raise ValueError(
                f"pass {item!r} comes after {fused[0]!r}; partitioning must come before "
                f"fusion, e.g. {','.join([item, *seen])}"
            )
        if key in ("tp", "ep") and key in [s.partition("=")[0] for s in seen]:
            raise ValueError(f"pass {key}= is given twice in {spec!r}")
        seen.append(item)
        if item in SIMPLE:
            passes.append(SIMPLE[item])
            continue
        if key in ("tp", "ep") and value.isdigit():
            passes.append((tensor_parallel if key == "tp" else expert_parallel)(int(value)))
        elif key in ("w", "a", "kv") and value:
            name = {"w": "weights", "a": "activations", "kv": "kv"}[key]
            passes.append(precision(**{name: value}))
        else:
            raise ValueError(
                f"unknown pass {item!r}; use {', '.join(SIMPLE)}, tp=N, ep=N, w=DTYPE, a=DTYPE "
                "or kv=DTYPE"
            )
    return passes


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
