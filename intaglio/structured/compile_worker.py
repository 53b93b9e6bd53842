"""Compiling grammars in a child process, beside the engine, with a wall-time limit.

Compiling a big JSON Schema is CPU-bound Python: on the engine's thread it would stop every
step, and on another thread it would still hold the GIL most of the time. A child process runs
it instead, one spec at a time. The time limit is kept by the clock, not by checks inside the
compiler: a compile still running at the limit is abandoned by killing the child (which frees
all it held), its requests fail, and a fresh child takes the next spec.

The child sends back the automaton after computing the first mask (which fills the DFA rows
the first step needs); the caller wraps it in a runtime over its own vocabulary
(`GrammarCompiler.add_automaton`), so mask caches stay in the engine's process.

    worker = CompileWorker(vocab, timeout_s=10.0)
    worker.submit(spec, lambda automaton, error: ...)  # called on the worker's thread
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from intaglio.structured.backends.intaglio_backend import build_grammar
from intaglio.structured.compiler import compile_error
from intaglio.structured.grammar.automaton import Automaton
from intaglio.structured.grammar.ir import GrammarError
from intaglio.structured.runtime.matcher import GrammarRuntime
from intaglio.structured.runtime.vocab import TokenizerInfo
from intaglio.structured.spec import StructuredOutput

logger = logging.getLogger(__name__)

Done = Callable[[Automaton | None, str | None], None]  # (automaton, error): exactly one set
_STARTUP_S = 120.0  # a child imports numpy and builds the vocabulary's trie before its first job


def compile_automaton(spec: StructuredOutput, vocab: TokenizerInfo) -> Automaton:
    """What the child does per spec: the automaton, with the rows of its first mask built."""
    automaton = Automaton(build_grammar(spec))
    runtime = GrammarRuntime(automaton, vocab)
    runtime.mask(runtime.initial)
    return automaton


def _child(conn: Connection, token_bytes: list[bytes | None], eos: tuple[int, ...]) -> None:
    vocab = TokenizerInfo(token_bytes, eos)
    vocab.trie  # noqa: B018 (built once, before the first job's clock starts)
    conn.send("ready")
    while True:
        spec = conn.recv()
        if spec is None:
            return
        try:
            conn.send((compile_automaton(spec, vocab), None))
        except Exception as e:  # every compile failure is this request's, not the child's
            if not isinstance(e, (GrammarError, RecursionError)):
                logger.warning("compiling a %s constraint failed", spec.kind, exc_info=True)
            conn.send((None, compile_error(spec, e)))


class CompileWorker:
    def __init__(self, vocab: TokenizerInfo, timeout_s: float | None = 10.0) -> None:
        self.vocab = vocab
        self.timeout_s = timeout_s
        self._jobs: queue.Queue[StructuredOutput | None] = queue.Queue()
        self._waiters: dict[StructuredOutput, list[Done]] = {}  # one compile per spec
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None
        self._thread: threading.Thread | None = None
        self.num_abandoned = 0  # compiles killed at the time limit

    def submit(self, spec: StructuredOutput, done: Done) -> None:
        """Compile `spec`; `done(automaton, None)` or `done(None, message)` follows on the
        worker's thread. Specs already waiting share one compile."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="intaglio-grammar", daemon=True
                )
                self._thread.start()
            waiting = self._waiters.setdefault(spec, [])
            waiting.append(done)
            if len(waiting) == 1:
                self._jobs.put(spec)

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5.0)
        self._stop_child()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while (spec := self._jobs.get()) is not None:
            automaton, error = self._compile(spec)
            with self._lock:
                waiting = self._waiters.pop(spec, [])
            for done in waiting:
                try:
                    done(automaton, error)
                except Exception:  # a caller's bug must not stop the compiles behind it
                    logger.exception("grammar compile callback failed")

    def _compile(self, spec: StructuredOutput) -> tuple[Automaton | None, str | None]:
        try:
            conn = self._child_conn()
        except (OSError, EOFError, RuntimeError) as e:
            logger.error("the grammar compile worker could not start: %s", e)
            self._stop_child()
            return None, "grammar compilation is unavailable on this server"
        t0 = time.monotonic()
        try:
            conn.send(spec)
            if conn.poll(self.timeout_s):
                automaton, error = conn.recv()
                logger.debug("compiled %s in %.1f ms", spec.kind, 1e3 * (time.monotonic() - t0))
                return automaton, error
        except (OSError, EOFError) as e:  # the child died (out of memory, killed)
            logger.error("the grammar compile worker died: %s", e)
            self._stop_child()
            return None, compile_error(spec, RuntimeError())
        self.num_abandoned += 1
        self._stop_child()  # abandon it: killing the child frees whatever it held
        return None, compile_error(spec, TimeoutError(f"compilation exceeded {self.timeout_s} s"))

    def _child_conn(self) -> Connection:
        if self._conn is not None and self._process.is_alive():
            return self._conn
        self._stop_child()
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
        parent, child = ctx.Pipe()
        args = (child, self.vocab.token_bytes, self.vocab.eos_token_ids)
        process = ctx.Process(target=_child, args=args, name="intaglio-grammar", daemon=True)
        process.start()
        child.close()
        self._process, self._conn = process, parent
        if not parent.poll(_STARTUP_S) or parent.recv() != "ready":
            raise RuntimeError("no ready message from the child")
        return parent

    def _stop_child(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5.0)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None
