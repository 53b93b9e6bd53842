"""Small GGUF files written as llama.cpp's converter writes them, from tiny HF checkpoints.

`write_gguf` takes a folder built by checkpoints.build_checkpoint and writes its config, its
byte-level BPE tokenizer and its weights in one tensor type: the types gguf can quantize are
quantized from the HF weights; for the K-quants (which gguf can only dequantize) the blocks
are random bytes with their scales set so the weights come out about as wide as the HF ones.
Either way HF `transformers` loading the same file is the oracle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
QUANTIZABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# Byte offsets of the fp16 scale fields (d, and dmin where the type has one) in each K block.
_K_SCALE_OFFSETS = {
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}

_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(hf_name: str) -> str:
    stem, _, kind = hf_name.rpartition(".")
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{kind}"
    _, _, layer, module = stem.split(".", 3)
    return f"blk.{layer}.{_LAYER[module]}.{kind}"


def permute_rotary_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's permute of llama's Q/K rows (convert_hf_to_gguf.py)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_gguf(
    family: str,
    hf_folder: Path,
    out: Path,
    tensor_type: str = "F32",
    seed: int = 0,
    arch: str | None = None,
    metadata: dict[str, int] | None = None,
) -> Path:
    """`arch` and `metadata` (`{arch}.key` overrides) write deliberately wrong files."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((hf_folder / "config.json").read_text())
    arch = arch or ARCH[family]
    w = gguf.GGUFWriter(str(out), arch)
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rope = cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(float(cfg.get("rope_theta") or rope.get("rope_theta", 10000.0)))
    if cfg.get("head_dim"):
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_vocab_size(cfg["vocab_size"])
    for key, value in (metadata or {}).items():
        w.add_uint32(f"{arch}.{key}", value)
    _add_tokenizer(w, hf_folder)

    weights = load_file(str(hf_folder / "model.safetensors"))
    rng = np.random.default_rng(seed)
    for name, tensor in weights.items():
        data = tensor.float().numpy()
        if arch == "llama" and ".q_proj." in name:
            data = permute_rotary_rows(data, heads)
        elif arch == "llama" and ".k_proj." in name:
            data = permute_rotary_rows(data, kv_heads)
        kind = tensor_type if data.ndim == 2 else "F32"  # llama.cpp keeps norms in F32
        _add_tensor(w, gguf_name(name), data, kind, rng)
    scaling = cfg.get("rope_scaling") or rope
    if scaling.get("rope_type") == "llama3":  # as llama.cpp writes Llama 3.1
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        theta = float(cfg.get("rope_theta") or rope["rope_theta"])
        factors = llama3_freq_factors(head_dim, theta, scaling)
        w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _add_tensor(w, name: str, data: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    import gguf
    from gguf.quants import quantize

    qtype = gguf.GGMLQuantizationType[kind]
    if kind not in QUANTIZABLE + K_QUANTS:  # a type we do not read: any bytes will do
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        size = (data.shape[0], data.shape[1] // block_elems * block_bytes)
        w.add_tensor(name, rng.integers(0, 256, size=size, dtype=np.uint8), raw_dtype=qtype)
    elif kind == "F32":
        w.add_tensor(name, data.astype(np.float32))
    elif kind == "F16":
        w.add_tensor(name, data.astype(np.float16))
    elif kind in K_QUANTS:
        w.add_tensor(
            name, random_k_blocks(data.shape, kind, float(data.std()), rng), raw_dtype=qtype
        )
    else:
        w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)


def llama3_freq_factors(head_dim: int, theta: float, scaling: dict) -> list[float]:
    """llama.cpp's rope_freqs for a 'llama3' rope (the formula of its converter)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def random_k_blocks(
    shape: tuple[int, ...], kind: str, std: float, rng: np.random.Generator
) -> np.ndarray:
    """Random K-quant blocks whose dequantized values have about standard deviation `std`."""
    import gguf
    from gguf.quants import dequantize

    qtype = gguf.GGMLQuantizationType[kind]
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)

    def set_scales(value: float) -> None:
        half = np.array([value], dtype=np.float16).view(np.uint8)
        for off in _K_SCALE_OFFSETS[kind]:
            blocks[..., off : off + 2] = half

    set_scales(1.0)
    unit = dequantize(blocks.reshape(rows, -1), qtype).std()
    set_scales(std / unit)
    return blocks.reshape(rows, -1)


def _add_tokenizer(w, hf_folder: Path) -> None:
    """The folder's byte-level BPE tokenizer as llama.cpp's 'gpt2' vocabulary."""
    tok = json.loads((hf_folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab.update(special)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<s>"])
    w.add_eos_token_id(special["</s>"])
    w.add_unk_token_id(special["<unk>"])
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}"
    )


def hf_gguf_model(path: Path) -> torch.nn.Module:
    """transformers' own reading of a GGUF file, dequantized to fp32: the oracle."""
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
