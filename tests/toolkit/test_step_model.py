"""StepCostModel (three probe captures, affine in tokens) against a direct capture per step."""

from __future__ import annotations

import numpy as np
import pytest

from intaglio.model.config import ModelConfig
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.cost import cost_step
from intaglio.toolkit.fusion import fuse_all, fuse_moe_grouped_gemm
from intaglio.toolkit.hardware import load_hardware
from intaglio.toolkit.ops import SeqShape
from intaglio.toolkit.parallel import expert_parallel, tensor_parallel
from intaglio.toolkit.passes import parse_passes
from intaglio.toolkit.precision import precision
from intaglio.toolkit.step_model import StepCostModel, apply_passes


def _cfg(**extra) -> ModelConfig:
    hf = {
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "max_position_embeddings": 8192,
        "sliding_window": 128,
        "torch_dtype": "bfloat16",
        **extra,
    }
    return ModelConfig.from_hf(hf)


def _random_batch(rng: np.random.Generator) -> list[SeqShape]:
    seqs = []
    for _ in range(rng.integers(1, 12)):
        new = int(rng.choice([1, 1, 1, rng.integers(2, 300)]))
        ctx = new + int(rng.integers(0, 500))
        seqs.append(SeqShape(new, ctx, samples=bool(rng.random() < 0.8)))
    return seqs


@pytest.mark.parametrize(
    "passes",
    [[], [fuse_all], [tensor_parallel(2), fuse_all], [precision(weights="fp8", kv="fp8")]],
    ids=["plain", "fused", "tp2-fused", "fp8"],
)
def test_template_equals_direct_capture(passes):
    cfg = _cfg()
    hw = load_hardware("h100-sxm")
    model = StepCostModel(cfg, hw, passes)
    rng = np.random.default_rng(1)
    for _ in range(4):
        seqs = _random_batch(rng)
        direct = apply_passes(capture_step(cfg, seqs), passes)
        inst = model.instantiate(seqs)
        assert [o.name for o in inst] == [o.name for o in direct]
        for a, b in zip(direct, inst):
            assert b.flops == pytest.approx(a.flops, rel=1e-9, abs=1e-6)
            assert b.bytes == pytest.approx(a.bytes, rel=1e-9, abs=1e-6)
            assert b.comm_bytes == pytest.approx(a.comm_bytes, rel=1e-9, abs=1e-6)
        q = np.array([s.num_new_tokens for s in seqs])
        c = np.array([s.context_len for s in seqs])
        got = model.step_time(q, c, sum(s.samples for s in seqs))
        assert got == pytest.approx(cost_step(direct, hw, model.weight_bytes_total).time_s)


def test_a_pass_that_depends_on_batch_size_is_refused():
    def only_big(ops):
        return ops if ops[0].shape[0] > 100 else ops[1:]

    with pytest.raises(ValueError, match="changes shape with the batch"):
        StepCostModel(_cfg(), load_hardware("h100-sxm"), [only_big])


def tiny_moe_config() -> ModelConfig:
    """A two-layer Qwen3-MoE: 8 experts, top 2."""
    return ModelConfig.from_hf(
        {
            "architectures": ["Qwen3MoeForCausalLM"],
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "intermediate_size": 256,
            "moe_intermediate_size": 64,
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "vocab_size": 500,
            "torch_dtype": "bfloat16",
        }
    )


@pytest.mark.parametrize(
    "passes",
    [[], [fuse_moe_grouped_gemm], [expert_parallel(2), fuse_all], parse_passes("ep=2,skew=1,fuse")],
)
def test_template_is_exact_for_moe(passes):
    cfg = tiny_moe_config()
    model = StepCostModel(cfg, load_hardware("h100-sxm"), passes)
    rng = np.random.default_rng(2)
    for _ in range(3):
        seqs = _random_batch(rng)
        direct = apply_passes(capture_step(cfg, seqs), passes)
        for a, b in zip(direct, model.instantiate(seqs)):
            assert b.flops == pytest.approx(a.flops, rel=1e-9, abs=1e-6)
            assert b.bytes == pytest.approx(a.bytes, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("passes", [[], [tensor_parallel(2), fuse_all]], ids=["plain", "tp2"])
def test_a_step_that_samples_nothing_skips_the_lm_head(passes):
    """A middle prefill chunk computes no logits: the direct capture has no lm_head, and the
    template must not read its weights either (a 128K-vocabulary lm_head is a fifth of a 1B
    model's bytes)."""
    cfg = _cfg()
    hw = load_hardware("h100-sxm")
    model = StepCostModel(cfg, hw, passes)
    seqs = [SeqShape(200, 400, samples=False)]
    direct = cost_step(apply_passes(capture_step(cfg, seqs), passes), hw)
    assert "lm_head" not in [o.name for o in direct.ops]
    q, c = np.array([200]), np.array([400])
    assert model.step_time(q, c, 0) == pytest.approx(direct.time_s, rel=1e-9)
    assert model.step_time(q, c, 1) > model.step_time(q, c, 0)
