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
    "MixtralForCausalLM": "mixtral",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "Llama4ForCausalLM": "llama4",
    "Llama4ForConditionalGeneration": "llama4",  # its text model, under `language_model.`
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
    # Mixture of experts (Mixtral, Qwen3-MoE, Llama 4); num_experts == 0 means a dense model.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    moe_layers: tuple[int, ...] = ()  # the other layers keep a dense MLP of intermediate_size
    router: str = "softmax"  # "softmax" (Mixtral, Qwen3-MoE) or "sigmoid" (Llama 4)
    norm_topk_prob: bool = False  # softmax router: renormalise the top-k probabilities
    shared_expert_intermediate_size: int = 0  # Llama 4: a dense expert every token goes through
    # Llama 4 (iRoPE): NoPE layers attend to everything, RoPE layers within local chunks.
    rope_layers: tuple[bool, ...] = ()  # per layer, True = applies RoPE; empty = every layer
    rope_interleaved: bool = False  # rotate (x[2i], x[2i+1]) pairs instead of halves
    attention_chunk_size: int | None = None  # chunked local attention on the RoPE layers
    qk_l2_norm: bool = False  # weightless RMS norm of q and k after RoPE, on RoPE layers
    attn_temperature_tuning: bool = False  # scale q on NoPE layers by position
    floor_scale: float = 8192.0
    attn_scale: float = 0.1
    weight_prefix: str = ""  # prefix of the text model's weights in the checkpoint

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
        prefix = ""
        if arch == "Llama4ForConditionalGeneration":
            if "text_config" not in hf:
                raise ModelLoadError(f"{arch} config.json has no text_config")
            text = dict(hf["text_config"])
            stored = [d.get(k) for d in (text, hf) for k in ("torch_dtype", "dtype")]
            text["torch_dtype"] = next((d for d in stored if d), None)
            hf = text
            prefix = "language_model."
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ModelLoadError(f"unsupported hidden_act {act!r}; supported: silu")
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            head_dim = int(hf.get("head_dim") or hidden // num_heads)
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
            # transformers >= 5 folds rope_theta and rope_scaling into rope_parameters.
            rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
            attention_bias = bool(hf.get("attention_bias", False))
            use_sliding = hf.get("use_sliding_window", family in ("mistral", "mixtral"))
            num_layers = int(hf["num_hidden_layers"])
            return cls(
                architecture=arch,
                family=family,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(
                    hf["intermediate_size_mlp" if family == "llama4" else "intermediate_size"]
                ),
                num_layers=num_layers,
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
                qkv_bias=family == "qwen2" or (family in _ATTENTION_BIAS and attention_bias),
                o_bias=family in _ATTENTION_BIAS and attention_bias,
                mlp_bias=family == "llama" and bool(hf.get("mlp_bias", False)),
                qk_norm=family in ("qwen3", "qwen3_moe"),
                sliding_window=hf.get("sliding_window") if use_sliding else None,
                dtype=resolve_dtype(
                    hf.get("torch_dtype", hf.get("dtype")) if dtype in (None, "auto") else dtype
                ),
                eos_token_ids=eos_ids,
                weight_prefix=prefix,
                **_moe_fields(family, hf, num_layers),
                **_llama4_fields(family, hf, num_layers),
            )
        except KeyError as e:
            raise ModelLoadError(f"config.json is missing required field {e}") from None

    @classmethod
    def from_folder(cls, path: str | Path, dtype: str | torch.dtype | None = None) -> ModelConfig:
        config_file = Path(path) / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"no config.json in model folder {path}")
        return cls.from_hf(json.loads(config_file.read_text()), dtype)

    def uses_rope(self, layer: int) -> bool:
        return not self.rope_layers or self.rope_layers[layer]

    def uses_chunked_attention(self, layer: int) -> bool:
        return self.attention_chunk_size is not None and self.uses_rope(layer)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


# Families whose reference reads `attention_bias` for q/k/v and o.
_ATTENTION_BIAS = ("llama", "qwen3", "qwen3_moe", "llama4")


def _moe_fields(family: str, hf: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Expert counts, widths, routing and which layers are sparse, as each reference reads them."""
    if family == "mixtral":
        return dict(
            num_experts=int(hf["num_local_experts"]),
            num_experts_per_tok=int(hf["num_experts_per_tok"]),
            moe_intermediate_size=int(hf["intermediate_size"]),
            moe_layers=tuple(range(num_layers)),
            norm_topk_prob=True,
        )
    if family == "qwen3_moe":
        num_experts = int(hf.get("num_experts") or hf.get("num_local_experts") or 0)
        step = int(hf.get("decoder_sparse_step", 1))
        dense = set(hf.get("mlp_only_layers") or ())
        sparse = [i for i in range(num_layers) if i not in dense and (i + 1) % step == 0]
        return dict(
            num_experts=num_experts,
            num_experts_per_tok=int(hf["num_experts_per_tok"]),
            moe_intermediate_size=int(hf["moe_intermediate_size"]),
            moe_layers=tuple(sparse) if num_experts else (),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        )
    if family == "llama4":
        step = int(hf.get("interleave_moe_layer_step", 1))
        moe_layers = hf.get("moe_layers")
        if moe_layers is None:
            moe_layers = range(step - 1, num_layers, step)
        return dict(
            num_experts=int(hf["num_local_experts"]),
            num_experts_per_tok=int(hf.get("num_experts_per_tok", 1)),
            moe_intermediate_size=int(hf["intermediate_size"]),
            moe_layers=tuple(int(i) for i in moe_layers),
            router="sigmoid",
            shared_expert_intermediate_size=int(hf["intermediate_size"]),
        )
    return {}


def _llama4_fields(family: str, hf: dict[str, Any], num_layers: int) -> dict[str, Any]:
    if family != "llama4":
        return {}
    rope_layers = hf.get("no_rope_layers")  # named for the NoPE layers, but 1 = uses RoPE
    if not rope_layers:
        interval = int(hf.get("no_rope_layer_interval", 4))
        rope_layers = [(i + 1) % interval != 0 for i in range(num_layers)]
    if len(rope_layers) != num_layers:
        raise ModelLoadError(
            f"no_rope_layers has {len(rope_layers)} entries for {num_layers} layers"
        )
    chunk = hf.get("attention_chunk_size")
    return dict(
        rope_layers=tuple(bool(r) for r in rope_layers),
        rope_interleaved=True,
        attention_chunk_size=int(chunk) if chunk else None,
        qk_l2_norm=bool(hf.get("use_qk_norm", True)),
        attn_temperature_tuning=bool(hf.get("attn_temperature_tuning", True)),
        floor_scale=float(hf.get("floor_scale", 8192)),
        attn_scale=float(hf.get("attn_scale", 0.1)),
    )


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]
