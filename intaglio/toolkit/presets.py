"""Named model presets: the config.json fields of published checkpoints, for capture on `meta`.

Numbers are copied from each model's published config.json (Hugging Face hub, the model cards
cited per entry); only the fields ModelConfig reads are kept (Llama 4: the text model's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from intaglio.model.config import ModelConfig

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _llama(hidden: int, layers: int, heads: int, kv: int, inter: int, **extra: Any) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": _LLAMA3_ROPE,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    cfg.update(extra)
    return cfg


def _qwen3(hidden: int, layers: int, heads: int, inter: int, tied: bool) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": inter,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
    }


_LLAMA4_SCOUT = {
    "architectures": ["Llama4ForCausalLM"],
    "hidden_size": 5120,
    "intermediate_size": 8192,  # each expert's (and the shared expert's)
    "intermediate_size_mlp": 16384,  # the dense layers' (none in Scout)
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 202048,
    "num_local_experts": 16,
    "num_experts_per_tok": 1,
    "interleave_moe_layer_step": 1,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 16.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    },
    "attention_chunk_size": 8192,
    "max_position_embeddings": 10485760,
    "use_qk_norm": True,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

PRESETS: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-2-7b-hf: the "7B" of most published decode figures (MHA, 4k context).
    "llama-2-7b": _llama(
        4096,
        32,
        32,
        32,
        11008,
        vocab_size=32000,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rope_scaling=None,
    ),
    "llama-3.2-1b": _llama(2048, 16, 32, 8, 8192, tie_word_embeddings=True),
    "llama-3-8b": _llama(4096, 32, 32, 8, 14336),  # meta-llama/Llama-3.1-8B
    "llama-3-70b": _llama(8192, 80, 64, 8, 28672),  # meta-llama/Llama-3.1-70B
    "llama-3-405b": _llama(16384, 126, 128, 8, 53248),  # meta-llama/Llama-3.1-405B
    "qwen3-0.6b": _qwen3(1024, 28, 16, 3072, tied=True),  # Qwen/Qwen3-0.6B
    "qwen3-8b": _qwen3(4096, 36, 32, 12288, tied=False),  # Qwen/Qwen3-8B
    "qwen3-32b": _qwen3(5120, 64, 64, 25600, tied=False),  # Qwen/Qwen3-32B
    # Qwen/Qwen3-30B-A3B: 128 experts of 768, top 8, every layer sparse.
    "qwen3-30b-a3b": {
        **_qwen3(2048, 48, 32, 6144, tied=False),
        "architectures": ["Qwen3MoeForCausalLM"],
        "num_key_value_heads": 4,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
    },
    # mistralai/Mixtral-8x7B-v0.1: 8 experts of 14336, top 2.
    "mixtral-8x7b": {
        "architectures": ["MixtralForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    },
    # meta-llama/Llama-4-Scout-17B-16E (text): 16 experts + a shared one, top 1, chunked
    # local attention on the RoPE layers.
    "llama-4-scout": _LLAMA4_SCOUT,
    # meta-llama/Llama-4-Maverick-17B-128E (text): 128 experts on every other layer.
    "llama-4-maverick": {
        **_LLAMA4_SCOUT,
        "num_local_experts": 128,
        "interleave_moe_layer_step": 2,
        "use_qk_norm": False,
        "rope_scaling": None,
        "max_position_embeddings": 1048576,
    },
}


def load_model_config(
    spec: str, dtype: str | None = None, overrides: dict[str, Any] | None = None
) -> ModelConfig:
    """A preset name, a model folder, or a config.json path -> ModelConfig.

    `overrides` replaces config.json fields first (model variants: fewer KV heads, more layers).
    """
    if spec in PRESETS:
        hf = dict(PRESETS[spec])
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(
                f"unknown model {spec!r}: not a preset ({', '.join(sorted(PRESETS))}), "
                "a model folder or a config.json file"
            )
        hf = json.loads(path.read_text())
    unknown = sorted(set(overrides or {}) - set(hf))
    if unknown:
        raise ValueError(
            f"model override(s) {unknown} name no field of {spec}'s config; its fields: "
            f"{sorted(hf)}"
        )
    hf.update(overrides or {})
    return ModelConfig.from_hf(hf, dtype)
