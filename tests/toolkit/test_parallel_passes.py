"""Parallelism passes against their closed forms: fused all-reduce, sequence and pipeline
parallelism, collectives in the activation dtype, attention data parallel, overlap."""

from __future__ import annotations

import pytest

from intaglio.model.config import ModelConfig
from intaglio.toolkit import ops as K
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.comm_passes import (
    fuse_allreduce_norm,
    overlap_communication,
    sequence_parallel,
)
from intaglio.toolkit.cost import cost_step
from intaglio.toolkit.hardware import from_dict
from intaglio.toolkit.ops import SeqShape, total
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.passes import parse_passes
from intaglio.toolkit.pipeline_parallel import pipeline_parallel
from intaglio.toolkit.precision import precision
from tests.toolkit.test_step_model import tiny_moe_config

H, LAYERS, T = 256, 4, 40
IDEAL = from_dict(
    {
        "name": "ideal",
        "matmul_tflops": {"bfloat16": 100.0, "fp8": 200.0},
        "vector_tflops": {"bfloat16": 10.0, "float32": 10.0},
        "memory": [{"name": "hbm", "capacity_gib": 64, "bandwidth_gbs": 1000}],
        "interconnect": {"bandwidth_gbs": 100, "latency_us": 0},
        "efficiency": {"matmul": [[1, 1.0]], "vector": [[1, 1.0]], "memory": [[1, 1.0]]},
        "sources": {"all": "test"},
    }
)


def _llama() -> ModelConfig:
    return ModelConfig.from_hf(
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": H,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "intermediate_size": 512,
            "vocab_size": 1000,
            "torch_dtype": "bfloat16",
        }
    )


@pytest.fixture(scope="module")
def dense():
    return capture_step(_llama(), [SeqShape(1, 100)] * 8 + [SeqShape(32, 32)])  # T = 40


def _wire(ops) -> float:  # noqa: ANN001
    return sum(o.comm_bytes * o.attrs["comm_factor"] for o in ops if o.kind == K.COLLECTIVE)


def test_fused_allreduce_saves_the_reduced_tensor_and_the_norm_read(dense):
    tp = tensor_parallel(2)(dense)
    fused = fuse_allreduce_norm(tp)
    # Two all-reduces per layer are each followed by a residual add and a norm.
    assert len(fused) == len(tp) - 2 * 2 * LAYERS
    assert total(fused, "flops") == total(tp, "flops")
    saved = total(tp, "bytes") - total(fused, "bytes")
    assert saved == 2 * LAYERS * 2 * (T * H * 2)  # per fusion: two [T, H] bf16 reads
    assert _wire(fused) == _wire(tp)


def test_sequence_parallel_moves_the_same_bytes_and_splits_norms(dense):
    tp = tensor_parallel(4)(dense)
    sp = sequence_parallel(tp)
    assert _wire(sp) == pytest.approx(_wire(tp))  # reduce-scatter + all-gather = all-reduce
    roles = [o.role for o in sp if o.kind == K.COLLECTIVE]
    assert "all_reduce" not in roles
    # The embedding's and each layer's two all-reduces become reduce-scatters, each with an
    # all-gather before the next matmul; lm_head's logits all-gather stays.
    assert roles.count("reduce_scatter") == 2 * LAYERS + 1
    assert roles.count("all_gather") == 2 * LAYERS + 2

    def norm_work(ops) -> float:  # noqa: ANN001
        return sum(o.flops for o in ops if o.kind == K.NORM or o.role == "residual")

    assert norm_work(sp) == pytest.approx(norm_work(tp) / 4)
    with pytest.raises(ValueError, match="needs tensor parallelism"):
        sequence_parallel(dense)


def test_collectives_follow_the_activation_dtype(dense):
    tp = tensor_parallel(2)(dense)
    fp8 = precision(activations="fp8")(tp)
    assert _wire(fp8) == pytest.approx(_wire(tp) / 2)


def test_expert_parallel_runs_attention_data_parallel():
    ops = capture_step(tiny_moe_config(), [SeqShape(1, 64)] * 32)  # 32 tokens, 64 routed pairs
    ep = expert_parallel(4)(ops)

    def attention(o):  # noqa: ANN001, ANN202
        return [x for x in o if x.kind == K.ATTENTION]

    for a, b in zip(attention(ops), attention(ep)):
        assert b.flops == a.flops / 4 and b.kv_read_elems == a.kv_read_elems / 4
    qkv = [o for o in ep if o.role == "qkv_proj"]
    assert qkv[0].weight_elems == next(o for o in ops if o.role == "qkv_proj").weight_elems
    dispatch = next(o for o in ep if o.name.endswith("dispatch"))
    assert dispatch.comm_bytes == 32 * 2 / 4 * 128 * 2  # this device's routed copies, bf16


def test_pipeline_step_is_fill_plus_micro_batches_of_one_stage(dense):
    pp, micro = 2, 4
    piped = pipeline_parallel(pp, micro)(dense)
    stage = [o for o in dense if o.layer is None or o.layer < LAYERS // pp]
    copies = micro + pp - 1
    assert len(piped) == copies * (len(stage) + 1)  # each copy sends its activations on
    assert total(piped, "weight_elems") == pytest.approx(copies * total(stage, "weight_elems"))
    assert total(piped, "flops") == pytest.approx(copies / micro * total(stage, "flops"))
    sends = [o for o in piped if o.role == "send"]
    assert sends[0].comm_bytes == T / micro * H * 2
    # The step: (micro + pp - 1) stage times of one micro-batch, each re-reading the weights.
    one = piped[: len(stage) + 1]
    assert cost_step(piped, IDEAL).time_s == pytest.approx(copies * cost_step(one, IDEAL).time_s)
    assert total(one, "weight_elems") == total(stage, "weight_elems")


def test_overlap_exposes_only_what_the_matmul_cannot_hide(dense):
    tp = tensor_parallel(2)(dense)
    chunks = 4
    plain = cost_step(tp, IDEAL)
    hidden = cost_step(overlap_communication(chunks)(tp), IDEAL)
    for i, op in enumerate(tp):
        if op.kind == K.COLLECTIVE and tp[i - 1].kind == K.MATMUL:
            comm, before = plain.times.comm_s[i], plain.times.time_s[i - 1]
            expect = max(comm - before, 0) + min(comm, before) / chunks
            assert hidden.times.comm_s[i] == pytest.approx(expect)
    assert hidden.time_s < plain.time_s


ORDER_ERRORS = [
    ("sp,tp=2", "put tp=N before it"),
    ("fuse_allreduce", "put tp=N before it"),
    ("tp=2,pp=2,ep=2", "pipeline stages are cut last"),
    ("tp=2,fuse_allreduce,sp", "partitioning must come before fusion"),
]


@pytest.mark.parametrize("spec,message", ORDER_ERRORS)
def test_pass_order_is_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_passes(spec)


def test_named_passes_compose():
    passes = parse_passes("tp=2,sp,overlap=2,pp=2:4,fuse_allreduce,fuse,a=fp8")
    assert len(passes) == 7


def test_llama4_qk_norm_and_rope_fold_into_attention():
    from intaglio.toolkit.fusion import fuse_all, fuse_qk_norm_into_attention
    from intaglio.toolkit.presets import load_model_config

    ops = capture_step(load_model_config("llama-4-scout"), [SeqShape(1, 64)] * 4)
    layer = [o for o in ops if o.layer == 0]
    folded = fuse_qk_norm_into_attention(layer)
    between = [o for o in layer if o.kind == K.ELEMENTWISE and ".self_attn." in o.name]
    assert between and len(folded) == len(layer) - len(between)
    assert total(folded, "flops") == pytest.approx(total(layer, "flops"))
    assert total(folded, "bytes") < total(layer, "bytes")
    fused = [o for o in fuse_all(layer) if o.kind in (K.ATTENTION, K.ROPE)]
    assert [o.kind for o in fused] == [K.ATTENTION]  # rope now meets attention and folds in


def test_skewed_routing_makes_the_hot_experts_device_the_straggler():
    from intaglio.toolkit.moe import routing_skew

    ops = expert_parallel(4)(capture_step(tiny_moe_config(), [SeqShape(1, 64)] * 32))
    assert routing_skew(0.0)(ops) == ops  # s = 0 is balanced routing
    skewed = routing_skew(1.0)(ops)
    weights = [1 / (e + 1) for e in range(8)]
    load = 4 * (weights[0] + weights[4]) / sum(weights)  # device 0 holds experts 0 and 4
    for a, b in zip(ops, skewed):
        if a.kind == K.COLLECTIVE and a.role == "all_to_all":
            assert b.comm_bytes == pytest.approx(a.comm_bytes * load)

    def expert_flops(o) -> float:  # noqa: ANN001
        return sum(x.flops for x in o if x.kind == K.EXPERT_MATMUL)

    assert expert_flops(skewed) == pytest.approx(expert_flops(ops) * load)
    with pytest.raises(ValueError, match="partitioning must come before fusion"):
        parse_passes("ep=4,fuse,skew=1")
