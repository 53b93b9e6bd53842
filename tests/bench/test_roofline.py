"""The bench roofline: the toolkit's captured steps against a closed-form count of a Llama."""

from __future__ import annotations

import pytest
import transformers as tf

from intaglio.bench.random_model import RANDOM_CONFIGS
from intaglio.bench.roofline import (
    decode_roofline,
    model_params,
    prefill_roofline,
    step_roofline,
    workload_roofline,
)
from intaglio.model.config import ModelConfig
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.machine import MachineLimits
from intaglio.toolkit.ops import SeqShape

LIMITS = MachineLimits("cpu", 1, 20.0, 15.0, {"float32": 0.2}, {"float32": 1024})
TFLOPS = 0.2


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    hf = tf.LlamaConfig(
        **RANDOM_CONFIGS["120m"], tie_word_embeddings=False, architectures=["LlamaForCausalLM"]
    )
    return ModelConfig.from_hf(hf.to_dict(), "bfloat16")


def _counts(cfg: ModelConfig) -> dict[str, int]:
    """Closed-form parameter counts of a dense Llama (what bench/roofline.py once hand-counted)."""
    h, q, kv, inter, layers = (
        cfg.hidden_size,
        cfg.q_size,
        cfg.kv_size,
        cfg.intermediate_size,
        cfg.num_layers,
    )
    proj = layers * (h * (q + 2 * kv) + q * h + 3 * h * inter)
    return {
        "layers": proj,
        "head": cfg.vocab_size * h,
        "norms": layers * 2 * h + h,
        "embed": cfg.vocab_size * h,
    }


def test_model_params_count_matmul_weights_only(cfg: ModelConfig) -> None:
    c = _counts(cfg)
    assert model_params(cfg) == (sum(c.values()), c["layers"] + c["head"])


@pytest.mark.parametrize(("batch", "context"), [(1, 192), (8, 100.4)])
def test_decode_roofline_matches_the_closed_form(
    cfg: ModelConfig, batch: int, context: float
) -> None:
    c, elem, ctx = _counts(cfg), 2, round(context)
    r = decode_roofline(cfg, LIMITS, TFLOPS, batch, context)
    assert (r.batch, r.context) == (batch, ctx)
    # Every weight once (the embedding table: only the looked-up rows, norms included).
    weights = c["layers"] + c["head"] + c["norms"] + batch * cfg.hidden_size
    assert r.weight_bytes == weights * elem
    # K and V of the whole context read, the new token's written, on every layer.
    assert r.kv_bytes == batch * (ctx + 1) * 2 * cfg.num_layers * cfg.kv_size * elem
    # 2 FLOPs per weight per token and QK^T + PV over the context; norms, rope, SiLU and the
    # residual adds add a fraction of a percent.
    flops = batch * (2 * (c["layers"] + c["head"]) + 4 * cfg.num_layers * cfg.q_size * ctx)
    assert flops < r.flops < 1.005 * flops
    assert 0 < r.act_bytes < 0.02 * batch * r.weight_bytes
    assert r.bytes == r.weight_bytes + r.kv_bytes + r.act_bytes
    assert r.memory_time_s == pytest.approx(r.bytes / 20e9)
    assert r.compute_time_s == pytest.approx(r.flops / 0.2e12)
    assert r.time_s == max(r.memory_time_s, r.compute_time_s)
    assert r.bound == ("memory" if r.memory_time_s >= r.compute_time_s else "compute")
    assert r.tokens_per_s == pytest.approx(batch / r.time_s)
    assert batch > 1 or r.bound == "memory"  # one sequence: about a FLOP per byte


def test_prefill_computes_logits_for_the_last_token_only(cfg: ModelConfig) -> None:
    c, lens = _counts(cfg), [32, 80]
    r = prefill_roofline(cfg, LIMITS, TFLOPS, lens)
    flops = sum(
        2 * c["layers"] * n + 2 * c["head"] + 4 * cfg.num_layers * cfg.q_size * n * (n + 1) / 2
        for n in lens
    )
    assert flops < r.flops < 1.005 * flops
    assert (
        r.weight_bytes == (c["layers"] + c["head"] + c["norms"] + sum(lens) * cfg.hidden_size) * 2
    )
    # The prompts' K and V written, then read by attention from the cache.
    assert r.kv_bytes == 2 * sum(lens) * 2 * cfg.num_layers * cfg.kv_size * 2
    assert r == step_roofline(capture_step(cfg, [SeqShape(n, n) for n in lens]), LIMITS, TFLOPS)


def test_workload_floor_is_one_prefill_and_steady_decode(cfg: ModelConfig) -> None:
    prompts, outputs = [16, 48, 32], [5, 9, 4]
    w = workload_roofline(cfg, LIMITS, TFLOPS, prompts, outputs, batch=2)
    mean_context = (sum(prompts) + sum(outputs) / 2) / 3
    assert w.decode == decode_roofline(cfg, LIMITS, TFLOPS, 2, mean_context)
    assert w.prefill == prefill_roofline(cfg, LIMITS, TFLOPS, prompts)
    assert w.num_decode_tokens == sum(outputs) - 3
    assert w.decode_floor_s == pytest.approx(15 / w.decode.tokens_per_s)
    assert w.floor_s == pytest.approx(w.prefill.time_s + w.decode_floor_s)
    assert w.bytes == pytest.approx(w.prefill.bytes + 15 / 2 * w.decode.bytes)
