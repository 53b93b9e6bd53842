"""Read a GGUF checkpoint (llama.cpp's format): its config, its tensors under HF names, dequantized.

The `gguf` package (llama.cpp's own reader) parses the file and dequantizes blocks; what is ours
is the mapping to the Hugging Face layout the loader already knows: metadata keys to a
config.json dict, tensor names to HF names, and undoing llama.cpp's row permutation of the
rotary Q/K weights of `llama` files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intaglio.model.config import ModelLoadError

logger = logging.getLogger(__name__)

# GGUF architecture -> the HF architecture our config reads.
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",  # Llama 2/3, Mistral, SmolLM
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

# Tensor types we dequantize (every type llama.cpp's converters commonly write).
SUPPORTED_TENSOR_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip

# Per-layer GGUF tensor names -> HF module names under model.layers.N.
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Which metadata fields set each tensor's shape, named in a shape error.
_SHAPE_FIELDS = {
    "attn_q": ("embedding_length", "attention.head_count", "attention.key_length"),
    "attn_k": ("embedding_length", "attention.head_count_kv", "attention.key_length"),
    "attn_v": ("embedding_length", "attention.head_count_kv", "attention.key_length"),
    "attn_output": ("embedding_length", "attention.head_count", "attention.key_length"),
    "attn_q_norm": ("attention.key_length",),
    "attn_k_norm": ("attention.key_length",),
    "ffn_gate": ("embedding_length", "feed_forward_length"),
    "ffn_up": ("embedding_length", "feed_forward_length"),
    "ffn_down": ("embedding_length", "feed_forward_length"),
    "token_embd": ("embedding_length", "vocab_size"),
    "output": ("embedding_length", "vocab_size"),
}
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# A loader's view of one tensor: where it came from (for errors), its HF name, how to read it.
TensorSource = tuple[str, str, Callable[[], torch.Tensor]]


def find_gguf(path: Path) -> Path | None:
    """The GGUF file a model path names: the file itself, or the only *.gguf in a folder."""
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    if (path / "config.json").is_file():
        return None  # a Hugging Face folder
    files = sorted(path.glob("*.gguf"))
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise ModelLoadError(f"{path} holds several GGUF files ({names}); name one of them")
    return files[0] if files else None


class GGUFCheckpoint:
    def __init__(self, path: str | Path) -> None:
        from gguf import GGUFReader

        self.path = Path(path)
        try:
            self.reader = GGUFReader(str(self.path))
        except Exception as e:  # the reader raises ValueError, struct errors, IndexError...
            raise ModelLoadError(f"{self.path} is not a readable GGUF file: {e}") from e
        self.arch = str(self.field("general.architecture"))
        if self.arch not in GGUF_ARCHITECTURES:
            raise ModelLoadError(
                f"{self.path.name}: unsupported GGUF architecture {self.arch!r} "
                f"(general.architecture); supported: {sorted(GGUF_ARCHITECTURES)}"
            )

    def field(self, key: str, default: Any = ...) -> Any:
        f = self.reader.get_field(key)
        if f is None:
            if default is ...:
                raise ModelLoadError(f"{self.path.name}: GGUF metadata has no field {key!r}")
            return default
        return f.contents()

    def _arch_field(self, key: str, default: Any = ...) -> Any:
        return self.field(f"{self.arch}.{key}", default)

    @cached_property
    def tensor_types(self) -> set[str]:
        return {t.tensor_type.name for t in self.reader.tensors}

    @cached_property
    def _by_name(self) -> dict[str, Any]:
        return {t.name: t for t in self.reader.tensors}

    def hf_config(self) -> dict[str, Any]:
        """The config.json a Hugging Face folder of the same model would hold."""
        heads = int(self._arch_field("attention.head_count"))
        hidden = int(self._arch_field("embedding_length"))
        tokens = self.reader.get_field("tokenizer.ggml.tokens")
        vocab = self._arch_field("vocab_size", len(tokens.data) if tokens is not None else None)
        if vocab is None:
            raise ModelLoadError(f"{self.path.name}: GGUF metadata gives no vocabulary size")
        config: dict[str, Any] = {
            "architectures": [GGUF_ARCHITECTURES[self.arch]],
            "vocab_size": int(vocab),
            "hidden_size": hidden,
            "intermediate_size": int(self._arch_field("feed_forward_length")),
            "num_hidden_layers": int(self._arch_field("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(self._arch_field("attention.head_count_kv", heads)),
            "head_dim": int(self._arch_field("attention.key_length", hidden // heads)),
            "rms_norm_eps": float(self._arch_field("attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": float(self._arch_field("rope.freq_base", 10000.0)),
            "max_position_embeddings": int(self._arch_field("context_length", 2048)),
            "tie_word_embeddings": "output.weight" not in self._by_name,
            "torch_dtype": self.natural_dtype(),
            "use_sliding_window": False,
        }
        eos = self.field("tokenizer.ggml.eos_token_id", None)
        eot = self.field("tokenizer.ggml.eot_token_id", None)
        config["eos_token_id"] = [int(t) for t in dict.fromkeys((eos, eot)) if t is not None]
        rope = self._rope_scaling()
        if rope is not None:
            config["rope_scaling"] = rope
        return config

    def natural_dtype(self) -> str:
        """The dtype `auto` picks: the file's own float type, bfloat16 for quantized files."""
        weights = self.tensor_types - {"F32"}
        if not weights:
            return "float32"
        return "float16" if weights == {"F16"} else "bfloat16"

    def _rope_scaling(self) -> dict[str, Any] | None:
        kind = self._arch_field("rope.scaling.type", None)
        freqs = self._by_name.get("rope_freqs.weight")
        if freqs is not None:
            # Llama 3.1+: llama.cpp stores the 'llama3' rescaling as per-frequency divisors.
            factors = self._dequantize(freqs)
            return {"rope_type": "freq_factors", "factors": factors.flatten().tolist()}
        if kind in (None, "none"):
            return None
        if kind == "linear":
            return {"rope_type": "linear", "factor": float(self._arch_field("rope.scaling.factor"))}
        raise ModelLoadError(
            f"{self.path.name}: unsupported rope scaling {kind!r} ({self.arch}.rope.scaling.type); "
            "supported: linear and llama3 frequency factors"
        )

    def _dequantize(self, t: Any) -> np.ndarray:
        from gguf.quants import dequantize

        kind = t.tensor_type.name
        if kind not in SUPPORTED_TENSOR_TYPES:
            raise ModelLoadError(
                f"{self.path.name}: tensor {t.name!r} has type {kind}, which we cannot "
                f"dequantize; supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
            )
        # GGUF lists dimensions innermost first; numpy (and HF) the other way round.
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        try:
            values = dequantize(t.data, t.tensor_type)
            return np.array(values, dtype=np.float32).reshape(shape)  # writable: torch shares it
        except (ValueError, AssertionError) as e:
            raise ModelLoadError(
                f"{self.path.name}: tensor {t.name!r} ({kind}) does not hold shape {shape}: {e}"
            ) from e

    def tensors(self) -> Iterator[TensorSource]:
        """Every weight under its HF name, read and dequantized only when asked for."""
        heads = int(self._arch_field("attention.head_count"))
        kv_heads = int(self._arch_field("attention.head_count_kv", heads))
        for t in self.reader.tensors:
            if t.name == "rope_freqs.weight":
                continue  # folded into the config's rope scaling
            hf_name = _hf_name(t.name)
            if hf_name is None:
                raise ModelLoadError(f"{self.path.name}: unexpected GGUF tensor {t.name!r}")
            # llama.cpp permutes llama's Q/K rows for its rotary layout; undo it.
            groups = None
            if self.arch == "llama" and ".q_proj." in hf_name:
                groups = heads
            elif self.arch == "llama" and ".k_proj." in hf_name:
                groups = kv_heads

            def load(t: Any = t, groups: int | None = groups) -> torch.Tensor:
                w = torch.from_numpy(self._dequantize(t))
                return w if groups is None else _unpermute_rotary_rows(w, groups)

            role = t.name.split(".")[-2]
            fields = _SHAPE_FIELDS.get(role, ("embedding_length",))
            shaped_by = ", ".join(f"{self.arch}.{f}" for f in fields)
            yield f"{self.path.name} ({t.name}, shaped by {shaped_by})", hf_name, load


def _hf_name(gguf_name: str) -> str | None:
    stem, _, kind = gguf_name.rpartition(".")  # kind: weight or bias
    if stem in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[stem]}.{kind}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_TENSORS:
        return f"model.layers.{parts[1]}.{_LAYER_TENSORS[parts[2]]}.{kind}"
    return None


def _unpermute_rotary_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of llama.cpp's permute: per head, rows (0, 2, 4, .., 1, 3, ..) back to halves."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)
