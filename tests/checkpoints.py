"""Tiny random-weight Hugging Face checkpoints, built with transformers' own model classes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

FAMILIES = ("llama", "llama3_scaled", "mistral", "qwen2", "qwen3")
MOE_FAMILIES = ("llama4", "llama4_multimodal", "mixtral", "qwen3_moe")

_COMMON = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
)


def build_checkpoint(
    family: str,
    folder: Path,
    seed: int = 0,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
    **overrides: object,
) -> Path:
    """Save a tiny `family` model to `folder`, weights drawn wide so greedy decoding is decisive."""
    import transformers as tf

    kwargs = {**_COMMON, **overrides}
    if family == "llama":
        config, cls = tf.LlamaConfig(**kwargs, tie_word_embeddings=True), tf.LlamaForCausalLM
    elif family == "llama3_scaled":
        scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        config = tf.LlamaConfig(**kwargs, rope_scaling=scaling, rope_theta=500000.0)
        cls = tf.LlamaForCausalLM
    elif family == "mistral":
        config, cls = tf.MistralConfig(**kwargs, sliding_window=None), tf.MistralForCausalLM
    elif family == "qwen2":
        config, cls = tf.Qwen2Config(**kwargs), tf.Qwen2ForCausalLM
    elif family == "qwen3":
        config, cls = tf.Qwen3Config(**{"head_dim": 32, **kwargs}), tf.Qwen3ForCausalLM
    elif family in MOE_FAMILIES:
        config, cls = _moe_config(family, kwargs)
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.08)
    with warnings.catch_warnings():  # Llama 4's vision tower casts a complex buffer
        warnings.filterwarnings("ignore", "Casting complex values", UserWarning)
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    build_tokenizer(folder, kwargs["vocab_size"])
    return folder


def _moe_config(family: str, kwargs: dict) -> tuple[object, type]:
    import transformers as tf

    if family == "mixtral":
        config = tf.MixtralConfig(**kwargs, num_local_experts=4, num_experts_per_tok=2)
        return config, tf.MixtralForCausalLM
    if family == "qwen3_moe":
        # Four layers: sparse ones, and layer 1 a dense MLP (mlp_only_layers).
        config = tf.Qwen3MoeConfig(
            **{**kwargs, "num_hidden_layers": 3},
            head_dim=32,
            num_experts=6,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            mlp_only_layers=[1],
            norm_topk_prob=True,
        )
        return config, tf.Qwen3MoeForCausalLM
    # Llama 4 text: layer 0 RoPE + dense, 1 NoPE + MoE, 2 NoPE + dense, 3 RoPE + MoE; chunks of
    # 8 tokens on the RoPE layers, shorter than most prompts; floor_scale small enough that the
    # NoPE layers' temperature changes within a prompt; llama3 rope scaling.
    text = dict(
        **{**kwargs, "num_hidden_layers": 4},
        head_dim=16,
        intermediate_size_mlp=160,
        num_local_experts=4,
        num_experts_per_tok=1 if family == "llama4" else 2,
        interleave_moe_layer_step=2,
        no_rope_layers=[1, 0, 0, 1],
        attention_chunk_size=8,
        floor_scale=4,
        attn_scale=0.5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    if family == "llama4":
        return tf.Llama4TextConfig(**text), tf.Llama4ForCausalLM
    vision = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
        vision_output_dim=32,
        projector_input_dim=32,
        projector_output_dim=32,
    )
    config = tf.Llama4Config(text_config=text, vision_config=vision)
    return config, tf.Llama4ForConditionalGeneration


_CORPUS = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "The quick brown fox jumps over the lazy dog. Caf\u00e9 na\u00efve \u00fcber \u4e2d\u6587.\n",
    "import os\nimport sys\n\nclass Engine:\n    pass\n",
]


def build_tokenizer(folder: Path, vocab_size: int) -> None:
    """A small byte-level BPE tokenizer; ids 0-2 are <unk>, <s>, </s> as the configs expect."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(str(folder))


# Llama 4 Scout's text config (the full size, for meta-device and planning tests).
LLAMA4_SCOUT_TEXT = dict(
    hidden_size=5120,
    intermediate_size=8192,
    intermediate_size_mlp=16384,
    num_hidden_layers=48,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=202048,
    num_local_experts=16,
    num_experts_per_tok=1,
    interleave_moe_layer_step=1,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 16.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    },
    attention_chunk_size=8192,
    max_position_embeddings=10485760,
    use_qk_norm=True,
)
