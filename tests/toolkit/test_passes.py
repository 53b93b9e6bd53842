"""Fusion, precision and partitioning passes: what each must conserve and what it must save."""

from __future__ import annotations

import pytest

from intaglio.model.config import ModelConfig
from intaglio.toolkit import ops as K
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.fusion import (
    fuse_all,
    fuse_epilogues,
    fuse_moe_grouped_gemm,
    fuse_norm_into_matmul,
    fuse_projections,
    fuse_rope_into_attention,
    unfuse_projections,
)
from intaglio.toolkit.moe import MoEShape, moe_block_ops
from intaglio.toolkit.ops import SeqShape, total
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.precision import precision

H, T = 256, 24


@pytest.fixture(scope="module")
def ops():
    cfg = ModelConfig.from_hf(
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": H,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "intermediate_size": 512,
            "vocab_size": 1000,
            "torch_dtype": "bfloat16",
        }
    )
    return capture_step(cfg, [SeqShape(1, 50)] * 4 + [SeqShape(20, 20)])  # T = 24 tokens


def test_fusions_keep_flops_and_save_exactly_the_intermediates(ops):
    base_bytes = total(ops, "bytes")
    fused = fuse_norm_into_matmul(ops)
    # Two norms per layer and the final norm before lm_head's gather: 4 fold into matmuls.
    assert len(fused) == len(ops) - 4
    assert total(fused, "flops") == total(ops, "flops")
    # Each fold saves writing and reading the normalised [T, H] activations (bf16).
    assert base_bytes - total(fused, "bytes") == 4 * 2 * T * H * 2
    qkv = next(o for o in fused if o.role == "qkv_proj")
    assert qkv.fused == ("layers.0.input_layernorm",)


def test_epilogue_and_rope_fusion(ops):
    fused = fuse_epilogues(fuse_rope_into_attention(ops))
    layer = [o for o in fused if o.layer == 0]
    assert [o.role for o in layer] == [
        "input_layernorm",
        "qkv_proj",
        "attention",
        "o_proj",
        "post_attention_layernorm",
        "gate_up_proj",
        "down_proj",
    ]
    gate_up = next(o for o in layer if o.role == "gate_up_proj")
    assert gate_up.act_out_elems == T * 512  # writes silu(gate) * up, not gate and up
    down = next(o for o in layer if o.role == "down_proj")
    assert down.act_in_elems == T * 512 + T * H  # its input and the residual
    assert total(fused, "flops") == total(ops, "flops")


def test_unfuse_then_fuse_projections_round_trips(ops):
    split = unfuse_projections(ops)
    roles = [o.role for o in split if o.layer == 0 and o.kind == K.MATMUL]
    assert roles == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert total(split, "flops") == total(ops, "flops")
    # Unfused, k and v read the input again, and so does up: 3 extra reads per layer.
    assert total(split, "bytes") - total(ops, "bytes") == 2 * 3 * T * H * 2
    back = fuse_projections(split)
    assert [(o.role, o.flops, o.bytes) for o in back] == [(o.role, o.flops, o.bytes) for o in ops]


def test_fuse_all_composes(ops):
    fused = fuse_all(ops)
    assert total(fused, "flops") == total(ops, "flops")
    assert total(fused, "bytes") < total(ops, "bytes")
    roles = [o.role for o in fused if o.layer == 0]
    assert roles == ["qkv_proj", "attention", "o_proj", "gate_up_proj", "down_proj"]


def test_precision_changes_only_the_named_tensors(ops):
    fp8 = precision(weights="fp8", kv="fp8")(ops)
    for a, b in zip(ops, fp8):
        if a.kind == K.MATMUL:
            assert b.weight_bytes == a.weight_bytes / 2 and b.act_dtype == "bfloat16"
        if a.kind == K.ATTENTION:
            assert b.kv_bytes == a.kv_bytes / 2
        if a.kind in (K.NORM, K.ELEMENTWISE):
            assert b == a
    w8a8 = precision(weights="fp8", activations="fp8")(ops)
    assert {o.compute_dtype for o in w8a8 if o.kind == K.MATMUL} == {"fp8"}
    with pytest.raises(ValueError, match="unknown dtype"):
        precision(weights="fp3")


def test_tensor_parallel_splits_work_and_adds_collectives(ops):
    tp = tensor_parallel(4)(ops)
    mm = lambda xs: sum(o.flops for o in xs if o.kind == K.MATMUL and o.role != "lm_head")  # noqa: E731
    assert mm(tp) == pytest.approx(mm(ops) / 4)
    reduces = [o for o in tp if o.role == "all_reduce"]
    assert len(reduces) == 2 * 2 + 1  # o_proj and down_proj per layer, plus the embedding
    assert reduces[1].comm_bytes == T * H * 2
    assert reduces[1].attrs["comm_factor"] == pytest.approx(2 * 3 / 4)
    attn = next(o for o in tp if o.kind == K.ATTENTION)
    # 8 heads over 4 devices; the 2 KV heads are replicated (one per device).
    assert attn.attrs["num_heads"] == 2 and attn.attrs["num_kv_heads"] == 1
    orig = next(o for o in ops if o.kind == K.ATTENTION)
    assert attn.kv_read_elems == orig.kv_read_elems / 2
    assert any(o.role == "all_gather" for o in tp)
    with pytest.raises(ValueError, match="do not split"):
        tensor_parallel(3)(ops)


def test_expert_parallel_and_grouped_gemm():
    shape = MoEShape(hidden=64, expert_intermediate=32, num_experts=8, top_k=2)
    moe = moe_block_ops("layers.0.mlp", 0, 64, shape, "bfloat16", "bfloat16")
    ep = expert_parallel(4)(moe)
    experts = [o for o in ep if o.kind == K.EXPERT_MATMUL]
    assert {o.attrs["expert"] for o in experts} == {0, 4}
    assert sum(o.role == "act" for o in ep) == 2
    assert [o.role for o in ep if o.kind == K.COLLECTIVE] == ["all_to_all", "all_to_all"]
    grouped = fuse_moe_grouped_gemm(moe)
    g = [o for o in grouped if o.kind == K.EXPERT_MATMUL]
    assert [o.role for o in g] == ["expert_gate_up", "expert_down"]
    assert g[0].attrs["grouped"] == 8 and g[0].shape[0] == 64 * 2
    assert total(grouped, "flops") == pytest.approx(total(moe, "flops"))


def test_a_user_pass_is_just_a_function(ops):
    def drop_embedding(xs):
        return [o for o in xs if o.kind != K.EMBEDDING]

    assert not any(o.kind == K.EMBEDDING for o in drop_embedding(fuse_all(ops)))
