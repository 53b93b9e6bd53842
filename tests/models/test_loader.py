"""Checkpoint formats: sharded safetensors, stored dtypes, and the dtype override."""

from __future__ import annotations

import json

import pytest
import torch

from checkpoints import build_checkpoint
from intaglio.model.loader import load_model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    single = build_checkpoint("qwen2", tmp_path / "single", seed=3)
    sharded = build_checkpoint("qwen2", tmp_path / "sharded", seed=3, max_shard_size="60KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert _same_weights(load_model(single, "float32"), load_model(sharded, "float32"))


def test_stored_dtype_is_the_default_and_can_be_overridden(tmp_path):
    folder = build_checkpoint("llama", tmp_path / "bf16", dtype="bfloat16")
    config = json.loads((folder / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    model = load_model(folder)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert load_model(folder, "float16").lm_head.weight.dtype == torch.float16
    assert load_model(folder, "float32").model.norm.weight.dtype == torch.float32


def test_mistral_sliding_window_caps_max_model_len(tmp_path):
    from intaglio import LLM

    folder = build_checkpoint("mistral", tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sliding_window": 64}))
    assert LLM(str(folder), dtype="float32").engine.max_model_len == 64
    with pytest.raises(ValueError, match="exceeds"):
        LLM(str(folder), dtype="float32", max_model_len=65)
