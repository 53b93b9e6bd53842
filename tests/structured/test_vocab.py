"""Token bytes from real tokenizer files, and masks over a real vocabulary vs byte-level walks."""

from __future__ import annotations

import numpy as np
import pytest

from intaglio.structured import GrammarCompiler, StructuredOutput, TokenizerInfo
from tests.structured.helpers import DATA

TOK = DATA / "tokenizers"


@pytest.mark.skipif(not (TOK / "phi3-mini").is_dir(), reason="tokenizer data not available")
def test_sentencepiece_byte_fallback_and_space() -> None:
    import json

    data = json.loads((TOK / "phi3-mini" / "tokenizer.json").read_text())
    info = TokenizerInfo.from_tokenizer_json(data)
    vocab = data["model"]["vocab"]
    assert info.token_bytes[vocab["<0x0A>"]] == b"\n"
    assert info.token_bytes[vocab["\u2581the"]] == b" the"
    assert info.token_bytes[vocab["<s>"]] is None


@pytest.mark.skipif(not (TOK / "gpt2").is_dir(), reason="tokenizer data not available")
def test_byte_level_bpe_matches_the_tokenizers_library() -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK / "gpt2" / "tokenizer.json"))
    info = TokenizerInfo.from_hf_tokenizer(tok)
    text = 'Hello, wörld!\n  {"a": 1}'
    ids = tok.encode(text).ids
    assert b"".join(info.token_bytes[i] for i in ids) == text.encode()


@pytest.mark.skipif(not (TOK / "llama3").is_dir(), reason="tokenizer data not available")
def test_masks_on_llama3_vocab_equal_bytewise_walks() -> None:
    info = TokenizerInfo.from_tiktoken(
        TOK / "llama3" / "tokenizer.model", num_special=256, eos_token_ids=(128001,)
    )
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 5}, "b": {"$ref": "#"}},
        "required": ["a"],
    }
    compiled = GrammarCompiler(info).compile(StructuredOutput(json_schema=schema))
    rng = np.random.default_rng(0)
    # A sample of token ids checked against a direct byte-by-byte walk at each step.
    sample = rng.choice(info.vocab_size - 256, 3000, replace=False)
    m = compiled.matcher()
    for _ in range(12):
        allowed = set(m.allowed_token_ids().tolist())
        for t in sample.tolist():
            data = info.token_bytes[t]
            assert (t in allowed) == bool(data and m.runtime.advance_bytes(m.state, data)), t
        assert (128001 in allowed) == m.can_end
        tok = int(rng.choice(sorted(allowed)))
        assert m.accept_token(tok)
        if m.is_terminated():
            break
