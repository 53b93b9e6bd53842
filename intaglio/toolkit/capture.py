"""Capture one engine step's operations by running the model code on the `meta` device.

The model (intaglio/model) is built on `meta`, so a 405B step costs shapes, not memory. Leaf
modules (Linear, RMSNorm, RotaryEmbedding, Embedding, and any registered with `register_leaf`)
become one Op each through forward hooks; the aten ops that run outside every leaf (residual
adds, the SwiGLU activation, casts, gathers) are recorded by a TorchDispatchMode as elementwise
ops; attention is recorded by a backend that stands in for the real one, from the step's
sequence shapes. Mixture-of-experts blocks route tokens by data, which `meta` tensors lack:
register them as *opaque* leaves whose handler emits router and expert-matmul ops under an
assumed routing (see toolkit/moe.py) and returns an output of the right shape.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from intaglio.attention.metadata import AttentionMetadata
from intaglio.model.config import ModelConfig
from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.layers import RMSNorm, RotaryEmbedding
from intaglio.ops.linear import Linear

# The model's own MoE block is data-dependent: toolkit/moe.py registers it as an opaque leaf.
from intaglio.toolkit import moe as _moe  # noqa: F401  (imported for that registration)
from intaglio.toolkit import ops as K
from intaglio.toolkit.attention_cost import attention_work
from intaglio.toolkit.leaves import (
    LEAVES,
    OPAQUE,
    LeafContext,
    OpaqueHandler,
    register_leaf,
)
from intaglio.toolkit.ops import Op, SeqShape, canonical_dtype


def _dtype(t: torch.Tensor | torch.dtype) -> str:
    return canonical_dtype(str(t.dtype if isinstance(t, torch.Tensor) else t))


def _role(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _weight(m: nn.Module) -> torch.Tensor:
    """A leaf's `weight` parameter (nn.Module types attributes as tensor or module)."""
    w = m.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(m).__name__}.weight is not a tensor")
    return w


def _linear_ops(m: nn.Module, ctx: LeafContext, args: tuple, out: torch.Tensor) -> list[Op]:
    x = args[0]  # [m, k]
    rows, k, n = x.numel() // x.shape[-1], x.shape[-1], out.shape[-1]
    bias = getattr(m, "bias", None) is not None
    role = _role(ctx.name)
    kind = K.ROUTER if role in ("router", "gate") else K.MATMUL
    return [
        Op(
            ctx.name,
            kind,
            role,
            ctx.layer,
            flops=2.0 * rows * k * n + (rows * n if bias else 0),
            weight_elems=k * n + (n if bias else 0),
            act_in_elems=rows * k,
            act_out_elems=rows * n,
            weight_dtype=_dtype(_weight(m)),
            act_dtype=_dtype(x),
            kv_dtype=_dtype(x),
            shape=(rows, k, n),
        )
    ]


def _norm_ops(m: nn.Module, ctx: LeafContext, args: tuple, out: torch.Tensor) -> list[Op]:
    x = args[0]
    # square, sum, scale by rsqrt, multiply by the weight: 4 FLOPs per element
    return [
        Op(
            ctx.name,
            K.NORM,
            _role(ctx.name),
            ctx.layer,
            flops=4.0 * x.numel(),
            weight_elems=_weight(m).numel(),
            act_in_elems=x.numel(),
            act_out_elems=out.numel(),
            weight_dtype=_dtype(_weight(m)),
            act_dtype=_dtype(x),
            kv_dtype=_dtype(x),
            shape=tuple(x.shape),
        )
    ]


def _rope_ops(m: nn.Module, ctx: LeafContext, args: tuple, out: Any) -> list[Op]:
    _, q, k = args  # positions, q [n, heads, d], k [n, kv_heads, d]
    elems = q.numel() + k.numel()
    # x1*cos - x2*sin per output element (3 FLOPs); cos and sin rows looked up per token
    table = 2 * q.shape[0] * q.shape[-1] // 2
    return [
        Op(
            ctx.name,
            K.ROPE,
            "rope",
            ctx.layer,
            flops=3.0 * elems,
            act_in_elems=elems + table,
            act_out_elems=elems,
            act_dtype=_dtype(q),
            kv_dtype=_dtype(q),
            shape=tuple(q.shape),
        )
    ]


def _embedding_ops(m: nn.Module, ctx: LeafContext, args: tuple, out: torch.Tensor) -> list[Op]:
    ids = args[0]
    return [
        Op(
            ctx.name,
            K.EMBEDDING,
            "embed",
            None,
            flops=0.0,
            weight_elems=out.numel(),  # only the looked-up rows are read
            act_in_elems=ids.numel(),
            act_out_elems=out.numel(),
            weight_dtype=_dtype(_weight(m)),
            act_dtype=_dtype(out),
            kv_dtype=_dtype(out),
            shape=tuple(out.shape),
        )
    ]


register_leaf(Linear, _linear_ops)
register_leaf(nn.Linear, _linear_ops)
register_leaf(RMSNorm, _norm_ops)
register_leaf(RotaryEmbedding, _rope_ops)
register_leaf(nn.Embedding, _embedding_ops)

# FLOPs per output element of the pointwise ops the model runs outside leaves.
_POINTWISE_FLOPS = {"silu": 4.0, "gelu": 8.0, "sigmoid": 4.0, "exp": 1.0, "_to_copy": 0.0}
# Allocation and bookkeeping ops that move no data.
_FREE = {"empty", "empty_like", "detach", "lift_fresh", "alias", "zeros", "ones", "full"}
_GATHERS = {"index", "index_select", "gather"}
_RENAME = {"index": "gather", "index_select": "gather", "_to_copy": "cast", "silu": "act"}


class _Recorder(TorchDispatchMode):
    """Records aten ops that run outside leaf modules; module hooks keep the scope stack."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self.scope: list[str] = []
        self.leaf_depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if self.leaf_depth == 0:
            op = self._pointwise(func, args, out)
            if op is not None:
                self.ops.append(op)
        return out

    def _pointwise(self, func: Any, args: tuple, out: Any) -> Op | None:
        short = func.overloadpacket.__name__.rstrip("_")
        if func.is_view or short in _FREE or not isinstance(out, torch.Tensor):
            return None
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if short == "_to_copy" and tensors and tensors[0].dtype == out.dtype:
            return None
        name = self.scope[-1] if self.scope else ""
        role = "residual" if short == "add" and _role(name).isdigit() else short
        role = _RENAME.get(role, role)
        if role == "mul" and name.endswith("mlp"):
            role = "act_mul"  # the SwiGLU product silu(gate) * up
        if short in _GATHERS:
            read = out.numel() + sum(t.numel() for t in tensors[1:])
        else:
            read = sum(t.numel() for t in tensors)
        return Op(
            f"{name}.{role}" if name else role,
            K.ELEMENTWISE,
            role,
            _layer_of(name),
            flops=_POINTWISE_FLOPS.get(short, 0.0 if short in _GATHERS else 1.0) * out.numel(),
            act_in_elems=read,
            act_out_elems=out.numel(),
            act_dtype=_dtype(out),
            kv_dtype=_dtype(out),
            shape=tuple(out.shape),
        )


def _layer_of(name: str) -> int | None:
    m = re.search(r"layers\.(\d+)", name)
    return int(m.group(1)) if m else None


class _CaptureAttention:
    """Stands in for the attention backend: records the op from the step's sequence shapes."""

    name = "capture"

    def __init__(self, recorder: _Recorder, cfg: ModelConfig, seqs: list[SeqShape]) -> None:
        self.recorder, self.cfg = recorder, cfg
        self.q_lens = np.array([s.num_new_tokens for s in seqs])
        self.ctx_lens = np.array([s.context_len for s in seqs])

    def forward(self, q, k, v, k_cache, v_cache, meta, scale) -> torch.Tensor:  # noqa: ANN001
        name = self.recorder.scope[-1] + ".attn"
        layer = _layer_of(name)
        heads, kv_heads, d = q.shape[1], k.shape[1], q.shape[2]
        chunk = (
            self.cfg.attention_chunk_size
            if layer is not None and self.cfg.uses_chunked_attention(layer)
            else None
        )
        window = self.cfg.sliding_window
        work = attention_work(self.q_lens, self.ctx_lens, heads, kv_heads, d, window, chunk)
        self.recorder.ops.append(
            Op(
                name,
                K.ATTENTION,
                "attention",
                layer,
                flops=work["flops"],
                act_in_elems=work["act_in_elems"],
                act_out_elems=work["act_out_elems"],
                kv_read_elems=work["kv_read_elems"],
                kv_write_elems=work["kv_write_elems"],
                act_dtype=_dtype(q),
                kv_dtype=_dtype(k_cache),
                shape=(int(self.q_lens.sum()), heads, d),
                attrs={
                    "num_heads": heads,
                    "num_kv_heads": kv_heads,
                    "head_dim": d,
                    "window": window,
                    "chunk": chunk,
                    "num_seqs": len(self.q_lens),  # the lowering tiles per sequence
                },
            )
        )
        return torch.empty_like(q)


_MODELS: dict[str, DecoderForCausalLM] = {}


def build_meta_model(cfg: ModelConfig) -> DecoderForCausalLM:
    """The model on `meta` (cached per config): parameters have shapes, no storage."""
    key = repr(cfg)
    if key not in _MODELS:
        with torch.device("meta"):
            model = DecoderForCausalLM(cfg).to(cfg.dtype)
        _MODELS[key] = model
    return _MODELS[key]


def capture_step(cfg: ModelConfig, seqs: list[SeqShape]) -> list[Op]:
    """The ops of one engine step over `seqs`, in execution order (logits for sampling rows).

    Everything runs at the config's dtype; the precision pass changes dtypes afterwards.
    """
    if not seqs:
        raise ValueError("a step needs at least one sequence")
    model = build_meta_model(cfg)
    recorder = _Recorder()
    num_tokens = sum(s.num_new_tokens for s in seqs)
    handles = _install_hooks(model, recorder)
    saved_backend = model.backend
    model.backend = _CaptureAttention(recorder, cfg, seqs)  # type: ignore[assignment]
    try:
        with torch.device("meta"), recorder:
            ids = torch.empty(num_tokens, dtype=torch.int64)
            positions = torch.empty(num_tokens, dtype=torch.int64)
            cache = torch.empty(0, 1, cfg.num_kv_heads, cfg.head_dim, dtype=model.compute_dtype)
            meta = AttentionMetadata(ids, 0, None, None, [])
            hidden = model(ids, positions, [(cache, cache)] * cfg.num_layers, meta)
            rows = sum(1 for s in seqs if s.samples)
            if rows:
                model.compute_logits(hidden[torch.empty(rows, dtype=torch.int64)])
    finally:
        model.backend = saved_backend
        for h in handles:
            h.remove()
    return recorder.ops


def _install_hooks(model: nn.Module, rec: _Recorder) -> list[Any]:
    handles: list[Any] = []
    for static_name, module in model.named_modules():
        static = static_name.removeprefix("model.")
        leaf = next((h for c, h in LEAVES.items() if type(module) is c), None)
        opaque = next((h for c, h in OPAQUE.items() if isinstance(module, c)), None)
        if opaque is not None:
            handles.append(_swap_forward(module, static, opaque, rec))
            continue

        def pre(mod: nn.Module, args: tuple, static: str = static, leaf: Any = leaf) -> None:
            rec.scope.append(_resolve(static, rec.scope))
            rec.leaf_depth += leaf is not None

        def post(mod: nn.Module, args: tuple, out: Any, leaf: Any = leaf) -> None:
            name = rec.scope.pop()
            if leaf is not None:
                rec.leaf_depth -= 1
                if rec.leaf_depth == 0:
                    rec.ops.extend(leaf(mod, LeafContext(name, _layer_of(name)), args, out))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def _resolve(static: str, scope: list[str]) -> str:
    """A module's name where it runs now: a shared module (the rotary table) takes the layer
    of the module calling it."""
    enclosing = _layer_of(scope[-1]) if scope else None
    if enclosing is None:
        return static
    return re.sub(r"layers\.\d+", f"layers.{enclosing}", static, count=1)


class _Restore:
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def remove(self) -> None:
        del self.module.forward  # back to the class's forward


def _swap_forward(
    module: nn.Module, static: str, handler: OpaqueHandler, rec: _Recorder
) -> _Restore:
    def forward(*args: Any) -> torch.Tensor:
        name = _resolve(static, rec.scope)
        ctx = LeafContext(name, _layer_of(name))
        rec.leaf_depth += 1
        try:
            ops, out = handler(module, ctx, args)
        finally:
            rec.leaf_depth -= 1
        rec.ops.extend(ops)
        return out

    module.forward = forward  # type: ignore[method-assign]
    return _Restore(module)
