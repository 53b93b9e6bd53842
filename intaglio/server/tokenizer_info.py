"""GET /tokenizer_info: what a client needs to tokenize as the server does (vLLM's route).

The fields follow tokenizer_config.json: the class, the special tokens, the chat template, and
the context length the server enforces.
"""

from __future__ import annotations

from typing import Any

_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


def tokenizer_config(tokenizer: Any, max_model_len: int, model_vocab_size: int) -> dict[str, Any]:
    """`vocab_size` counts the tokenizer's tokens (added ones included), which may be fewer
    than the model's logits (`model_vocab_size`)."""
    try:
        vocab_size = len(tokenizer)
    except TypeError:
        vocab_size = model_vocab_size
    info: dict[str, Any] = {
        "tokenizer_class": type(tokenizer).__name__,
        "model_max_length": max_model_len,
        "vocab_size": vocab_size,
        "model_vocab_size": model_vocab_size,
    }
    for name in _SPECIAL:
        token = getattr(tokenizer, name, None)
        info[name] = token if isinstance(token, str) else None
    for name in ("add_bos_token", "add_eos_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, bool):
            info[name] = value
    template = getattr(tokenizer, "chat_template", None)
    info["chat_template"] = template if isinstance(template, (str, dict)) else None
    return info
