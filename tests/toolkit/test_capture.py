"""Captured ops against closed-form FLOPs and bytes of dense, GQA, Qwen3 and MoE layers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from intaglio.model.config import ModelConfig
from intaglio.ops.linear import Linear
from intaglio.toolkit import ops as K
from intaglio.toolkit.attention_cost import attended_keys
from intaglio.toolkit.capture import build_meta_model, capture_step
from intaglio.toolkit.moe import MoEShape, moe_block_ops, register_moe_module
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.presets import PRESETS, load_model_config


def _config(kv_heads: int, arch: str = "LlamaForCausalLM", **extra) -> ModelConfig:
    hf = {
        "architectures": [arch],
        "hidden_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": kv_heads,
        "intermediate_size": 640,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16",
        **extra,
    }
    return ModelConfig.from_hf(hf)


BATCH = [SeqShape(1, 40), SeqShape(1, 300), SeqShape(17, 17), SeqShape(30, 90, samples=False)]


@pytest.mark.parametrize("kv_heads", [8, 2])  # MHA and GQA
def test_dense_layer_matches_closed_form(kv_heads):
    cfg = _config(kv_heads)
    ops = capture_step(cfg, BATCH)
    t = sum(s.num_new_tokens for s in BATCH)  # 49 tokens
    r = sum(s.samples for s in BATCH)  # 3 sampled rows
    h, inter, d, heads, v = 256, 640, 32, 8, 1000
    q, kv = heads * d, kv_heads * d
    layer = [o for o in ops if o.layer == 1]
    by_role = {o.role: o for o in layer}
    assert by_role["qkv_proj"].flops == 2 * t * h * (q + 2 * kv)
    assert by_role["qkv_proj"].weight_elems == h * (q + 2 * kv)
    assert by_role["o_proj"].flops == 2 * t * q * h
    assert by_role["gate_up_proj"].flops == 2 * t * h * 2 * inter
    assert by_role["down_proj"].flops == 2 * t * inter * h
    # Every byte of a bf16 matmul: weights + input + output at 2 bytes each.
    o = by_role["down_proj"]
    assert o.bytes == 2 * (inter * h + t * inter + t * h)
    # Attention: 4 * heads * d FLOPs per (query, attended key); causal keys by brute force.
    keys = sum(
        sum(min(p + 1, 10**9) for p in range(s.context_len - s.num_new_tokens, s.context_len))
        for s in BATCH
    )
    attn = by_role["attention"]
    assert attn.flops == 4 * heads * d * keys
    assert attn.kv_read_elems == 2 * kv * sum(s.context_len for s in BATCH)
    assert attn.kv_write_elems == 2 * kv * t
    lm = next(o for o in ops if o.role == "lm_head")
    assert lm.flops == 2 * r * h * v and lm.shape == (r, h, v)
    # Layer structure: norm, qkv, rope, attention, o_proj, residual, norm, gate_up, act, mul,
    # down, residual.
    assert [o.kind for o in layer].count(K.NORM) == 2
    assert [o.role for o in layer].count("residual") == 2
    assert by_role["residual"].act_in_elems == 2 * t * h


def test_matmul_weights_are_the_models_linear_parameters():
    cfg = _config(2)
    ops = capture_step(cfg, [SeqShape(4, 4)])
    model = build_meta_model(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, Linear))
    assert sum(o.weight_elems for o in ops if o.kind == K.MATMUL) == linear


def test_qwen3_qk_norm_and_tied_embeddings():
    cfg = _config(2, "Qwen3ForCausalLM", head_dim=64, tie_word_embeddings=True)
    ops = capture_step(cfg, [SeqShape(5, 5)])
    norms = [o for o in ops if o.kind == K.NORM and o.layer == 0]
    assert [o.role for o in norms] == [
        "input_layernorm",
        "q_norm",
        "k_norm",
        "post_attention_layernorm",
    ]
    assert norms[1].act_in_elems == 5 * 8 * 64 and norms[2].act_in_elems == 5 * 2 * 64
    lm = next(o for o in ops if o.role == "lm_head")
    assert lm.shape == (1, 256, 1000)


def test_sliding_window_keys_match_brute_force():
    rng = np.random.default_rng(0)
    for window in (None, 1, 7, 64):
        c = rng.integers(1, 200, 20)
        q = np.array([rng.integers(1, ci + 1) for ci in c])
        got = attended_keys(q, c, window)
        w = window or 10**9
        want = [sum(min(p + 1, w) for p in range(ci - qi, ci)) for qi, ci in zip(q, c)]
        np.testing.assert_allclose(got, want)


def test_405b_step_captures_in_seconds_without_memory():
    cfg = load_model_config("llama-3-405b")
    t0 = time.perf_counter()
    ops = capture_step(cfg, [SeqShape(1, 2048)] * 32 + [SeqShape(512, 512)])
    assert time.perf_counter() - t0 < 30
    assert len([o for o in ops if o.role == "attention"]) == 126
    # Dense matmul FLOPs per token: twice the non-embedding matmul parameters.
    hf = PRESETS["llama-3-405b"]
    h, i, layers = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    per_layer = h * (h + 2 * 8 * 128) + h * h + 3 * h * i
    t = 32 + 512
    mm = sum(o.flops for o in ops if o.kind == K.MATMUL and o.role != "lm_head")
    assert mm == 2 * t * layers * per_layer


def test_unknown_model_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="not a preset"):
        load_model_config("llama-9-9000b")


def test_moe_block_matches_closed_form():
    shape = MoEShape(
        hidden=64,
        expert_intermediate=96,
        num_experts=8,
        top_k=2,
        num_shared_experts=1,
        shared_intermediate=32,
    )
    t = 40
    ops = moe_block_ops("layers.0.mlp", 0, t, shape, "bfloat16", "bfloat16")
    experts = [o for o in ops if o.kind == K.EXPERT_MATMUL]
    assert len(experts) == 16
    # Routed FLOPs do not depend on the expert count: each token visits top_k experts.
    assert sum(o.flops for o in experts) == pytest.approx(2 * t * 2 * (64 * 192 + 96 * 64))
    router = next(o for o in ops if o.kind == K.ROUTER)
    assert router.flops == 2 * t * 64 * 8 + 5 * t * 8
    # Weights read: each expert with probability 1 - (1 - k/E)^T of being touched.
    touched = 1 - (1 - 2 / 8) ** t
    assert sum(o.weight_elems for o in experts) == pytest.approx(8 * touched * 3 * 64 * 96)
    # One token at top-1 of 8 touches one expert's weights on average.
    one = moe_block_ops("m", 0, 1, MoEShape(64, 96, 8, 1), "bfloat16", "bfloat16")
    assert sum(o.weight_elems for o in one if o.kind == K.EXPERT_MATMUL) == pytest.approx(
        3 * 64 * 96
    )


class _ToyMoE(nn.Module):
    """Stands in for a model's MoE block; its forward would need real routing data."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("capture must not run an opaque leaf's forward")


def test_registered_moe_module_is_captured_as_router_and_experts():
    register_moe_module(_ToyMoE, lambda m: MoEShape(256, 128, 4, 2))
    cfg = _config(2, num_hidden_layers=2)
    model = build_meta_model(cfg)
    saved = [layer.mlp for layer in model.model.layers]
    try:
        for layer in model.model.layers:
            with torch.device("meta"):
                layer.mlp = _ToyMoE(256).to(torch.bfloat16)
        ops = capture_step(cfg, [SeqShape(8, 8)])
    finally:
        for layer, mlp in zip(model.model.layers, saved):
            layer.mlp = mlp
    assert [o.layer for o in ops if o.kind == K.ROUTER] == [0, 1]
    assert sum(o.kind == K.EXPERT_MATMUL for o in ops) == 2 * 4 * 2
    assert not any(o.role == "gate_up_proj" for o in ops)


def test_model_moe_layers_are_captured_against_closed_form():
    cfg = load_model_config("mixtral-8x7b")
    t, h, inter, k, e = 40, 4096, 14336, 2, 8
    ops = capture_step(cfg, [SeqShape(1, 100)] * 8 + [SeqShape(32, 32)])
    layer = [o for o in ops if o.layer == 3]
    experts = [o for o in layer if o.kind == K.EXPERT_MATMUL]
    assert len(experts) == 2 * e
    assert sum(o.flops for o in experts) == pytest.approx(2 * t * k * 3 * h * inter)
    router = next(o for o in layer if o.kind == K.ROUTER)
    assert router.shape == (t, h, e)
    touched = 1 - (1 - k / e) ** t
    assert sum(o.weight_elems for o in experts) == pytest.approx(e * touched * 3 * h * inter)
    assert not any(o.role == "gate_up_proj" for o in layer)  # no dense MLP on MoE layers


def test_llama4_shared_expert_and_chunked_attention():
    cfg = load_model_config("llama-4-maverick")
    ops = capture_step(cfg, [SeqShape(1, 20000)])
    by_layer = {o.layer: o for o in ops if o.kind == K.ATTENTION}
    # RoPE layers attend within 8192-token chunks; every fourth layer (NoPE) sees everything.
    assert by_layer[0].attrs["chunk"] == 8192 and by_layer[3].attrs["chunk"] is None
    assert by_layer[0].flops == 4 * 40 * 128 * (19999 % 8192 + 1)
    assert by_layer[3].flops == 4 * 40 * 128 * 20000
    # Maverick alternates dense and MoE layers; MoE layers have a shared expert.
    assert any(o.role == "gate_up_proj" for o in ops if o.layer == 0)
    assert any(o.role == "shared_gate_up" for o in ops if o.layer == 1)
    assert sum(o.kind == K.ROUTER for o in ops) == 24
