"""Structured decoding: regex, JSON Schema, choice and CFG constraints as token masks.

Arranged by stage: frontends/ and json_schema/ lower a spec to grammar IR, grammar/ builds
its automaton, runtime/ walks the vocabulary into token masks and matches tokens, and
backends/ puts them behind one interface (ours, or xgrammar); compiler.py is the front door.
"""

from intaglio.structured.backends.intaglio_backend import build_grammar
from intaglio.structured.compiler import GrammarCompiler, StructuredOutputError
from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.runtime.matcher import GrammarMatcher
from intaglio.structured.runtime.token_matcher import TokenMatcher
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import StructuredOutput

__all__ = [
    "GrammarCompiler",
    "GrammarError",
    "GrammarMatcher",
    "StructuredOutput",
    "StructuredOutputError",
    "TokenMatcher",
    "TokenizerInfo",
    "build_grammar",
]
