"""The compile worker: grammars built in a child process, abandoned by the clock at the limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from intaglio.structured import GrammarCompiler, StructuredOutput
from intaglio.structured.compile_worker import CompileWorker
from intaglio.structured.grammar.automaton import Automaton

from .helpers import byte_vocab

# Several seconds to build (a length bound times a word-count pattern: a product automaton).
SLOW = StructuredOutput(
    json_schema={"type": "string", "maxLength": 400, "pattern": "^(?:\\S+\\s+){0,49}\\S+$"}
)


class Result:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.automaton: Automaton | None = None
        self.error: str | None = None
        self.at = 0.0

    def __call__(self, automaton: Automaton | None, error: str | None) -> None:
        self.automaton, self.error, self.at = automaton, error, time.monotonic()
        self.done.set()

    def wait(self, timeout: float = 120.0) -> Result:
        assert self.done.wait(timeout), "the worker never answered"
        return self


@pytest.fixture(scope="module")
def worker() -> Iterator[CompileWorker]:
    w = CompileWorker(byte_vocab(), timeout_s=1.5)
    yield w
    w.close()


def test_compiled_automaton_serves_a_matcher(worker: CompileWorker) -> None:
    spec = StructuredOutput(regex="ab+c")
    result = Result()
    worker.submit(spec, result)
    assert result.wait().error is None and result.automaton is not None
    compiler = GrammarCompiler(worker.vocab)
    compiler.add_automaton(spec, result.automaton)
    assert compiler.is_cached(spec)
    m = compiler.compile(spec).matcher()
    assert all(m.accept_token(1 + b) for b in b"abbc") and m.is_terminated()


def test_a_compile_past_the_limit_is_abandoned_and_the_next_one_runs(
    worker: CompileWorker,
) -> None:
    warm = Result()
    worker.submit(StructuredOutput(regex="x"), warm)  # the child is up before the clock starts
    warm.wait()
    slow, after = Result(), Result()
    t0 = time.monotonic()
    worker.submit(SLOW, slow)
    worker.submit(StructuredOutput(regex="[0-9]+"), after)
    slow.wait()
    assert slow.automaton is None and slow.error is not None and "exceeded 1.5 s" in slow.error
    assert 1.5 <= slow.at - t0 < 2.5  # within a second of the limit, not when it finishes
    assert worker.num_abandoned == 1
    assert after.wait().error is None and after.automaton is not None  # on a fresh child


def test_same_spec_submitted_twice_compiles_once(worker: CompileWorker) -> None:
    spec = StructuredOutput(regex="(ab|cd)*e")
    first, second = Result(), Result()
    worker.submit(spec, first)
    worker.submit(spec, second)
    assert first.wait().automaton is not None
    assert second.wait().automaton is not None


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"type": 5}, "a keyword holds a value of the wrong type"),
        ({"type": "object", "properties": {"a": {"pattern": "("}}}, "cannot compile"),
    ],
)
def test_errors_name_the_constraint_without_internal_text(
    worker: CompileWorker, schema: dict[str, object], words: str
) -> None:
    result = Result()
    worker.submit(StructuredOutput(json_schema=schema), result)
    assert result.wait().automaton is None and result.error is not None
    assert words in result.error and "Error" not in result.error
