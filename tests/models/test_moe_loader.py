"""Llama 4 and MoE checkpoints: config parsing against HF's own derivations, weight loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints import LLAMA4_SCOUT_TEXT, build_checkpoint
from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.loader import load_model
from intaglio.model.moe import MoE


@pytest.mark.parametrize("interval,step", [(4, 1), (2, 2), (3, 4)])
def test_llama4_layer_plan_defaults_follow_hf(interval, step):
    """Without explicit lists, NoPE layers come from no_rope_layer_interval and MoE layers from
    interleave_moe_layer_step, as HF's Llama4TextConfig derives them."""
    import transformers as tf

    hf = tf.Llama4TextConfig(
        num_hidden_layers=8,
        no_rope_layer_interval=interval,
        interleave_moe_layer_step=step,
        architectures=["Llama4ForCausalLM"],
    ).to_dict()
    expected_rope = tuple(bool(r) for r in hf["no_rope_layers"])
    expected_moe = tuple(hf["moe_layers"])
    for key in ("no_rope_layers", "moe_layers", "layer_types"):
        hf.pop(key)
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope_layers == expected_rope
    assert cfg.moe_layers == expected_moe
    assert cfg.intermediate_size == hf["intermediate_size_mlp"]
    assert cfg.moe_intermediate_size == cfg.shared_expert_intermediate_size == 8192


def test_multimodal_checkpoint_loads_only_the_text_model(checkpoint):
    folder = checkpoint("llama4_multimodal")
    stored = {k for f in folder.glob("*.safetensors") for k in load_file(f)}
    assert any(k.startswith("vision_model.") for k in stored)
    model = load_model(folder, "float32")
    assert model.cfg.weight_prefix == "language_model."
    assert not any("vision" in n for n, _ in model.named_parameters())
    moe = model.model.layers[1].mlp
    assert isinstance(moe, MoE) and moe.top_k == 2 and moe.shared_expert is not None
    fused = stored_tensor(folder, "language_model.model.layers.1.feed_forward.experts.down_proj")
    assert torch.equal(moe.experts.down_proj.data, fused)


def stored_tensor(folder, name: str) -> torch.Tensor:
    for f in folder.glob("*.safetensors"):
        tensors = load_file(f)
        if name in tensors:
            return tensors[name]
    raise KeyError(name)


def test_missing_expert_weight_is_named(tmp_path):
    folder = build_checkpoint("mixtral", tmp_path / "m")
    path = folder / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.0.block_sparse_moe.experts.1.w3.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"model\.layers\.0\.mlp\.experts\.gate_up_proj"):
        load_model(folder, "float32")


def test_wrong_expert_count_is_a_shape_error(tmp_path):
    folder = build_checkpoint("qwen3_moe", tmp_path / "q")
    config = json.loads((folder / "config.json").read_text())
    config["num_experts"] = config.get("num_local_experts", config.get("num_experts")) - 1
    config.pop("num_local_experts", None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="expert 5, the config has 5 experts"):
        load_model(folder, "float32")


_MAVERICK = dict(
    LLAMA4_SCOUT_TEXT,
    num_local_experts=128,
    interleave_moe_layer_step=2,
    use_qk_norm=False,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    max_position_embeddings=1048576,
)


@pytest.mark.parametrize("text", [LLAMA4_SCOUT_TEXT, _MAVERICK], ids=["scout", "maverick"])
def test_full_size_llama4_on_meta_matches_hf(text):
    """Llama 4 Scout and Maverick text configs: the same parameter count as HF's model; the
    bench roofline's counts, from the toolkit's capture, agree with HF's (all parameters, and
    those one token multiplies by: no embedding table, no norms, top-k of the routed experts);
    Scout's llama3 RoPE (high == low freq factor) is finite."""
    import transformers as tf
    from transformers.models.llama4.modeling_llama4 import Llama4TextRotaryEmbedding

    from intaglio.bench.roofline import model_params
    from intaglio.model.decoder import DecoderForCausalLM
    from intaglio.model.layers import RotaryEmbedding

    hf_cfg = tf.Llama4TextConfig(**text, architectures=["Llama4ForCausalLM"])
    with torch.device("meta"):
        hf_params = dict(tf.Llama4ForCausalLM(hf_cfg).named_parameters())
        cfg = ModelConfig.from_hf(hf_cfg.to_dict(), "bfloat16")
        ours = sum(p.numel() for p in DecoderForCausalLM(cfg).parameters())
    hf_count = sum(p.numel() for p in hf_params.values())
    embed, norms, experts = (
        sum(p.numel() for n, p in hf_params.items() if key in n)
        for key in ("embed_tokens", "norm", ".experts.")
    )
    top_k = text.get("num_experts_per_tok", 1) / text["num_local_experts"]
    num_params, matmul_params = model_params(cfg)
    assert ours == hf_count == num_params
    assert matmul_params == hf_count - embed - norms - round(experts * (1 - top_k))
    rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, interleaved=True)
    hf_rope = Llama4TextRotaryEmbedding(hf_cfg)
    assert torch.isfinite(rope.inv_freq).all()
    torch.testing.assert_close(rope.inv_freq.float(), hf_rope.inv_freq.float())
