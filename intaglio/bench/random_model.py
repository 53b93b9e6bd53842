"""Random-weight Llama checkpoints for benchmarks, saved in the exact on-disk format of HF.

The engine needs a loadable tokenizer even when it never detokenizes (for the EOS id), so the
folder gets the embedded default model's tokenizer files when they exist, otherwise a trivial
word-level tokenizer with <unk>, <s>, </s> at ids 0, 1, 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from intaglio.model.checkpoint import EMBEDDED_MODEL

RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    # GPT-2-small sized Llama: ~124M parameters, 12 x 64-dim heads, GQA with 4 KV heads.
    "120m": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        intermediate_size=2048,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
    # A Llama 4 Scout in miniature (the `llama4_text` family): every layer a 16-expert top-1
    # MoE with a shared expert, every 4th layer NoPE, 128-token attention chunks on the others;
    # ~250M parameters in all, ~33M of them active per token besides the embeddings.
    "llama4-mini": dict(
        model_type="llama4_text",
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=1024,
        intermediate_size_mlp=2048,
        num_local_experts=16,
        num_experts_per_tok=1,
        interleave_moe_layer_step=1,
        attention_chunk_size=128,
        vocab_size=32000,
        max_position_embeddings=4096,
    ),
    # For smoke tests: loads and runs in well under a second.
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
        max_position_embeddings=1024,
    ),
}

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


def build_random_llama(name: str, folder: Path, seed: int = 0) -> Path:
    """Save a random `name` Llama or Llama 4 (see RANDOM_CONFIGS) and a tokenizer to `folder`."""
    import transformers as tf

    if name not in RANDOM_CONFIGS:
        raise ValueError(f"unknown random config {name!r}; choose one of {sorted(RANDOM_CONFIGS)}")
    kwargs = dict(RANDOM_CONFIGS[name])
    llama4 = kwargs.pop("model_type", "llama") == "llama4_text"
    kwargs.update(tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    # HF's own init: normal(0, 0.02), unit norms.
    model: tf.PreTrainedModel = (
        tf.Llama4ForCausalLM(tf.Llama4TextConfig(**kwargs))
        if llama4
        else tf.LlamaForCausalLM(tf.LlamaConfig(**kwargs))
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    copy_tokenizer(folder)
    return folder


def copy_tokenizer(folder: Path) -> None:
    files = [EMBEDDED_MODEL / f for f in _TOKENIZER_FILES if (EMBEDDED_MODEL / f).is_file()]
    if files:
        for f in files:
            shutil.copy(f, folder / f.name)
    else:
        build_trivial_tokenizer(folder)


def build_trivial_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(str(folder))
