"""Compile a StructuredOutput for one vocabulary, with a cache and a time limit.

The spec names its backend (backends/: ours, or xgrammar); every backend has the small
interface of backends/base.py, and every matcher the TokenMatcher protocol.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from intaglio.structured.backends.base import Backend, CompiledGrammar
from intaglio.structured.backends.intaglio_backend import IntaglioBackend
from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import StructuredOutput

logger = logging.getLogger(__name__)


class StructuredOutputError(ValueError):
    """A constraint that cannot be compiled (malformed, unsupported, or too slow)."""


def compile_error(spec: StructuredOutput, e: BaseException) -> str:
    """The message a client sees: what could not be compiled, never internal exception text."""
    kind = spec.kind.replace("_", " ")
    if isinstance(e, (GrammarError, TimeoutError)):
        return f"cannot compile the {kind} constraint: {e}"
    if isinstance(e, RecursionError):
        return f"cannot compile the {kind} constraint: it is nested too deeply"
    return f"cannot compile the {kind} constraint: it is malformed or uses an unsupported form"


class GrammarCompiler:
    """Front door: picks the backend a spec asks for and caches compiled grammars (LRU)."""

    def __init__(
        self, vocab: TokenizerInfo, timeout_s: float | None = 10.0, cache_size: int = 128
    ) -> None:
        self.vocab = vocab
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self._cache: OrderedDict[StructuredOutput, CompiledGrammar] = OrderedDict()
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            if name == "xgrammar":
                from intaglio.structured.backends.xgrammar_backend import XGrammarBackend

                self._backends[name] = XGrammarBackend(self.vocab)
            else:
                self._backends[name] = IntaglioBackend(self.vocab, self.timeout_s)
        return self._backends[name]

    def is_cached(self, spec: StructuredOutput) -> bool:
        return spec in self._cache

    def compile(self, spec: StructuredOutput) -> CompiledGrammar:
        got = self._cache.get(spec)
        if got is not None:
            self._cache.move_to_end(spec)
            return got
        t0 = time.perf_counter()
        try:
            compiled = self.backend(spec.backend).compile(spec)
        except Exception as e:  # malformed specs can trip any part of the front ends
            if not isinstance(e, (GrammarError, TimeoutError, RecursionError)):
                logger.warning("compiling a %s constraint failed", spec.kind, exc_info=True)
            raise StructuredOutputError(compile_error(spec, e)) from e
        logger.debug(
            "compiled %s constraint in %.1f ms", spec.kind, 1e3 * (time.perf_counter() - t0)
        )
        self._remember(spec, compiled)
        return compiled

    def add_automaton(self, spec: StructuredOutput, automaton: Automaton) -> None:
        """Cache a grammar of our backend whose automaton was built elsewhere (in the
        compile worker's process): only the runtime over this vocabulary is made here."""
        if spec not in self._cache:
            backend = self.backend(spec.backend)
            assert isinstance(backend, IntaglioBackend)
            self._remember(spec, backend.wrap(automaton))

    def _remember(self, spec: StructuredOutput, compiled: CompiledGrammar) -> None:
        self._cache[spec] = compiled
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
