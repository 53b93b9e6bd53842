"""The vocabulary as bytes: what each token id appends to the output, decoded once.

Byte-level BPE (GPT-2, Llama 3, Qwen) stores bytes as printable stand-in characters; we invert
that map. SentencePiece models (Llama 2, Phi-3) write a space as `▁` and raw bytes as `<0xNN>`.
Special tokens have no bytes (None) and are never allowed by a grammar, except EOS when the
grammar may end.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from intaglio.structured.runtime.trie import TokenTrie


def gpt2_byte_decoder() -> dict[str, int]:
    """Stand-in character -> byte: printable Latin-1 bytes map to themselves, the rest to 256+."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            out[chr(256 + extra)] = b
            extra += 1
    return out


@dataclass
class TokenizerInfo:
    token_bytes: list[bytes | None]  # index: token id
    eos_token_ids: tuple[int, ...] = ()
    matrix: np.ndarray = field(init=False, repr=False)  # [vocab, max_len] uint8, zero padded
    lengths: np.ndarray = field(init=False, repr=False)  # [vocab] int32, 0 for special tokens

    def __post_init__(self) -> None:
        n = len(self.token_bytes)
        self.lengths = np.array([len(b) if b else 0 for b in self.token_bytes], dtype=np.int32)
        width = int(self.lengths.max(initial=1))
        flat = b"".join(b.ljust(width, b"\0") if b else bytes(width) for b in self.token_bytes)
        self.matrix = np.frombuffer(flat, dtype=np.uint8).reshape(n, width).copy()
        self.eos_token_ids = tuple(int(t) for t in self.eos_token_ids if 0 <= t < n)

    @functools.cached_property
    def trie(self) -> TokenTrie:
        return TokenTrie(self.token_bytes)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_hf_tokenizer(
        cls, tokenizer: Any, eos_token_ids: tuple[int, ...] = ()
    ) -> TokenizerInfo:
        """From a `tokenizers.Tokenizer` or a transformers fast tokenizer."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        info = cls.from_tokenizer_json(json.loads(backend.to_str()), eos_token_ids)
        n = max(len(info.token_bytes), backend.get_vocab_size(with_added_tokens=True))
        if n > len(info.token_bytes):
            info = cls(info.token_bytes + [None] * (n - len(info.token_bytes)), eos_token_ids)
        return info

    @classmethod
    def from_tokenizer_json(
        cls, data: dict[str, Any] | str | Path, eos_token_ids: tuple[int, ...] = ()
    ) -> TokenizerInfo:
        if isinstance(data, dict):
            tokenizer = data
        else:
            tokenizer = json.loads(Path(data).read_text(encoding="utf-8"))
        model = tokenizer["model"]
        vocab = model["vocab"]
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
        decoder = json.dumps(tokenizer.get("decoder") or {})
        byte_level = '"ByteLevel"' in decoder
        n = max([*vocab.values(), *(t["id"] for t in tokenizer.get("added_tokens", []))]) + 1
        out: list[bytes | None] = [None] * n
        if byte_level:
            for piece, i in vocab.items():
                out[i] = _from_byte_level(piece)
        else:
            for piece, i in vocab.items():
                out[i] = _from_sentencepiece(piece)
        for t in tokenizer.get("added_tokens", []):
            out[t["id"]] = None if t.get("special", True) else t["content"].encode()
        return cls(out, eos_token_ids)

    @classmethod
    def from_vocab_json(
        cls,
        path: str | Path,
        special: dict[str, int] | None = None,
        eos_token_ids: tuple[int, ...] = (),
    ) -> TokenizerInfo:
        """Byte-level BPE in the slow `vocab.json` format (GPT-2, Qwen2)."""
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
        ids = [*vocab.values(), *(special or {}).values()]
        out: list[bytes | None] = [None] * (max(ids) + 1)
        for piece, i in vocab.items():
            out[i] = _from_byte_level(piece)
        return cls(out, eos_token_ids)

    @classmethod
    def from_tiktoken(
        cls, path: str | Path, num_special: int = 0, eos_token_ids: tuple[int, ...] = ()
    ) -> TokenizerInfo:
        """tiktoken BPE ranks (`base64-token rank` per line), as Llama 3 ships them."""
        pairs = []
        for line in Path(path).read_text().splitlines():
            if line.strip():
                token, rank_text = line.split()
                pairs.append((int(rank_text), base64.b64decode(token)))
        out: list[bytes | None] = [None] * (max(r for r, _ in pairs) + 1 + num_special)
        for rank, data in pairs:
            out[rank] = data
        return cls(out, eos_token_ids)


_BYTE_DECODER = gpt2_byte_decoder()


def _from_byte_level(piece: str) -> bytes | None:
    try:
        return bytes(_BYTE_DECODER[c] for c in piece)
    except KeyError:  # not a byte-level piece (e.g. a special token stored in the vocab)
        return None


def _from_sentencepiece(piece: str) -> bytes | None:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    if piece in ("<s>", "</s>", "<unk>", "<pad>"):
        return None
    return piece.replace("\u2581", " ").encode()
