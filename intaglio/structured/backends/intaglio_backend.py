"""Our backend: a spec lowered by the front ends to grammar IR, built into an automaton, and
matched by the runtime (vocabulary walks, mask caches) shared by every matcher of the grammar.
"""

from __future__ import annotations

import logging
import threading
import time

from intaglio.structured.frontends.ebnf import ebnf_to_grammar
from intaglio.structured.frontends.regex import regex_to_ir
from intaglio.structured.frontends.tagged import tagged_json_grammar
from intaglio.structured.grammar.automaton import Automaton, Deadline
from intaglio.structured.grammar.ir import Grammar, alt, literal
from intaglio.structured.json_schema.compiler import JsonSchemaCompiler
from intaglio.structured.runtime.matcher import GrammarMatcher, GrammarRuntime
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import StructuredOutput

logger = logging.getLogger(__name__)


def build_grammar(spec: StructuredOutput) -> Grammar:
    """The spec as grammar IR (raises GrammarError naming what is unsupported)."""
    if spec.regex is not None:
        return Grammar({"root": regex_to_ir(spec.regex)})
    if spec.choice is not None:
        return Grammar({"root": alt(*(literal(c) for c in spec.choice))})
    if spec.grammar is not None:
        return ebnf_to_grammar(spec.grammar)
    if spec.tagged_json is not None:
        return tagged_json_grammar(spec.tagged_json, spec.whitespace)
    schema = spec.schema if spec.json_schema is not None else {"type": "object"}
    compiler = JsonSchemaCompiler(schema, spec.whitespace)
    if spec.json_object:
        compiler.root = {"type": "object", "additionalProperties": True}
    return compiler.compile()


class IntaglioGrammar:
    """Our compiled grammar: the shared runtime (automaton + mask caches) for one spec."""

    def __init__(self, runtime: GrammarRuntime) -> None:
        self.runtime = runtime

    def matcher(self) -> GrammarMatcher:
        return GrammarMatcher(self.runtime)


# Grammars and a prefix into one of their strings: the walks every JSON schema with strings
# shares. A free string (a DFA loop, runtime/loops.py), the first character of one that may
# not be empty, an object's free key, and a bounded string (a chain, runtime/chains.py); and
# just before a string value or key opens, where tokens like ` "ab` enter those loops
# mid-token.
_STRINGS = {"a": {"type": "string"}, "b": {"type": "string", "minLength": 1}}
_WARM = (
    ({"type": "string"}, b'"'),
    ({"type": "string", "minLength": 1}, b'"'),
    ({"type": "object", "additionalProperties": True}, b'{"'),
    ({"type": "string", "maxLength": 64}, b'"'),
    ({"type": "object", "properties": _STRINGS, "required": ["a", "b"]}, b'{"a":'),
    ({"type": "object", "properties": _STRINGS, "required": ["b", "a"]}, b'{"b":'),
    ({"type": "object", "additionalProperties": True}, b"{"),
)


class IntaglioBackend:
    def __init__(self, vocab: TokenizerInfo, timeout_s: float | None = 10.0) -> None:
        self.vocab = vocab
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # the lazy DFA is shared; compile one at a time
        self._warm()

    def _warm(self) -> None:
        """Walk the vocabulary through a JSON string body once, up front, so that no
        request's first mask inside a string pays for it (the walks are cached on the
        vocabulary's token trie and shared by every grammar)."""
        t0 = time.perf_counter()
        for schema, prefix in _WARM:
            grammar = build_grammar(StructuredOutput(json_schema=schema))
            runtime = GrammarRuntime(Automaton(grammar), self.vocab)
            runtime.mask(runtime.advance_bytes(runtime.initial, prefix))
        logger.debug("vocabulary walks warmed in %.1f ms", 1e3 * (time.perf_counter() - t0))

    def compile(self, spec: StructuredOutput) -> IntaglioGrammar:
        deadline = Deadline(self.timeout_s)
        with self._lock:
            automaton = Automaton(build_grammar(spec), deadline)
            runtime = GrammarRuntime(automaton, self.vocab)
            runtime.mask(runtime.initial)  # the first mask is part of compiling
            automaton.deadline = Deadline(None)
        return IntaglioGrammar(runtime)

    def wrap(self, automaton: Automaton) -> IntaglioGrammar:
        """A grammar over this vocabulary for an automaton compiled elsewhere."""
        with self._lock:
            runtime = GrammarRuntime(automaton, self.vocab)
            runtime.mask(runtime.initial)
        return IntaglioGrammar(runtime)
