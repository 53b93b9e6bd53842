"""Structured decoding: regex, JSON Schema, choice and CFG constraints as token masks."""

from intaglio.structured.compiler import (
    GrammarCompiler,
    StructuredOutputError,
    build_grammar,
)
from intaglio.structured.ir import GrammarError
from intaglio.structured.matcher import GrammarMatcher
from intaglio.structured.spec import StructuredOutput
from intaglio.structured.vocab import TokenizerInfo

__all__ = [
    "GrammarCompiler",
    "GrammarError",
    "GrammarMatcher",
    "StructuredOutput",
    "StructuredOutputError",
    "TokenizerInfo",
    "build_grammar",
]
