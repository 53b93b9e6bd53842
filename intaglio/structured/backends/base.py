"""The Backend interface: `compile(spec) -> CompiledGrammar`, whose matchers accept tokens and
fill bitmasks, so another engine (e.g. xgrammar) can be plugged in beside ours."""

from __future__ import annotations

from typing import Protocol

from intaglio.structured.runtime.token_matcher import TokenMatcher
from intaglio.structured.spec import StructuredOutput


class CompiledGrammar(Protocol):
    def matcher(self) -> TokenMatcher: ...


class Backend(Protocol):
    def compile(self, spec: StructuredOutput) -> CompiledGrammar: ...
