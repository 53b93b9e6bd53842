"""The optional xgrammar backend: its compiler and matchers behind our Backend interface.

`StructuredOutput(..., backend="xgrammar")` uses it when the `xgrammar` package is installed
(`pip install xgrammar`), so users can compare engines on their own schemas and models.
Masks come back in our packed layout (bit t of byte t // 8 is token t), which is xgrammar's
int32 bitmask read as little-endian bytes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import StructuredOutput


class XGrammarMatcher:
    def __init__(self, xg: Any, compiled: Any, vocab_size: int) -> None:
        self._matcher = xg.GrammarMatcher(compiled)
        self._bitmask = xg.allocate_token_bitmask(1, vocab_size)

    def accept_token(self, token_id: int) -> bool:
        return bool(self._matcher.accept_token(token_id))

    def fill_next_token_bitmask(self, out: np.ndarray) -> None:
        if self._matcher.is_terminated():  # EOS accepted: nothing may follow
            out[:] = 0
            return
        self._matcher.fill_next_token_bitmask(self._bitmask)
        out[:] = self._bitmask[0].numpy().view(np.uint8)[: out.size]

    def is_terminated(self) -> bool:
        return bool(self._matcher.is_terminated())

    def rollback(self, num_tokens: int) -> None:
        if num_tokens:
            self._matcher.rollback(num_tokens)


class XGrammarCompiled:
    def __init__(self, xg: Any, compiled: Any, vocab_size: int) -> None:
        self._xg, self._compiled, self._vocab_size = xg, compiled, vocab_size

    def matcher(self) -> XGrammarMatcher:
        return XGrammarMatcher(self._xg, self._compiled, self._vocab_size)


class XGrammarBackend:
    def __init__(self, vocab: TokenizerInfo) -> None:
        try:
            import xgrammar as xg
        except ImportError as e:
            raise GrammarError(
                "the xgrammar backend needs the xgrammar package: pip install xgrammar"
            ) from e
        self._xg = xg
        self._vocab_size = vocab.vocab_size
        info = xg.TokenizerInfo(
            [b or b"" for b in vocab.token_bytes],  # raw bytes: no tokenizer-specific decoding
            vocab_type=xg.VocabType.RAW,
            vocab_size=vocab.vocab_size,
            stop_token_ids=list(vocab.eos_token_ids),
        )
        self._compiler = xg.GrammarCompiler(info, max_threads=1)

    def compile(self, spec: StructuredOutput) -> XGrammarCompiled:
        c = self._compiler
        if spec.tagged_json is not None:
            raise GrammarError("the xgrammar backend does not take tagged_json constraints")
        try:
            if spec.json_schema is not None:
                compiled = c.compile_json_schema(spec.json_schema, any_whitespace=False)
            elif spec.json_object:
                compiled = c.compile_builtin_json_grammar()
            elif spec.regex is not None:
                compiled = c.compile_regex(spec.regex)
            elif spec.choice is not None:
                compiled = c.compile_regex("|".join(re.escape(s) for s in spec.choice))
            else:
                compiled = c.compile_grammar(spec.grammar)
        except Exception as e:  # xgrammar raises its own types (and RuntimeError) for bad input
            raise GrammarError(f"xgrammar: {e}") from e
        return XGrammarCompiled(self._xg, compiled, self._vocab_size)
