"""ModelConfig: the architecture facts the engine needs, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# HF architecture name -> the family flags our one decoder class needs.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded; the message says what is wrong and where."""


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool  # Qwen2 (always) or Llama's attention_bias
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool  # Qwen3: per-head RMSNorm on q and k before RoPE
    sliding_window: int | None
    dtype: torch.dtype
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_hf(cls, hf: dict[str, Any], dtype: str | torch.dtype | None = None) -> ModelConfig:
        archs = hf.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ModelLoadError(
                f"unsupported architecture {archs or '(none given)'}; "
                f"supported: {sorted(SUPPORTED_ARCHITECTURES)}"
            )
        family = SUPPORTED_ARCHITECTURES[arch]
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            head_dim = int(hf.get("head_dim") or hidden // num_heads)
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
            # transformers >= 5 folds rope_theta and rope_scaling into rope_parameters.
            rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
            attention_bias = bool(hf.get("attention_bias", False))
            use_sliding = hf.get("use_sliding_window", family == "mistral")
            return cls(
                architecture=arch,
                family=family,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=num_heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
                head_dim=head_dim,
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=float(hf.get("rope_theta") or rope.get("rope_theta", 10000.0)),
                rope_scaling=rope
                if rope.get("rope_type", rope.get("type")) not in (None, "default")
                else None,
                max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                # Bias flags as each family's reference implementation reads them.
                qkv_bias=family == "qwen2" or (family in ("llama", "qwen3") and attention_bias),
                o_bias=family in ("llama", "qwen3") and attention_bias,
                mlp_bias=family == "llama" and bool(hf.get("mlp_bias", False)),
                qk_norm=family == "qwen3",
                sliding_window=hf.get("sliding_window") if use_sliding else None,
                dtype=resolve_dtype(
                    hf.get("torch_dtype", hf.get("dtype")) if dtype in (None, "auto") else dtype
                ),
                eos_token_ids=eos_ids,
            )
        except KeyError as e:
            raise ModelLoadError(f"config.json is missing required field {e}") from None

    @classmethod
    def from_folder(cls, path: str | Path, dtype: str | torch.dtype | None = None) -> ModelConfig:
        config_file = Path(path) / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"no config.json in model folder {path}")
        return cls.from_hf(json.loads(config_file.read_text()), dtype)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]
