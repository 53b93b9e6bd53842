"""AsyncEngine: the synchronous LLMEngine behind an asyncio front, for the server.

The LLMEngine is not thread-safe, so exactly one background thread owns it: it takes commands
(add, abort, stop) from a queue, runs `step()` while there is work, and hands every step's
outputs to the event loop in one `call_soon_threadsafe`. Each request's outputs land in an
asyncio.Queue the caller owns. Admission errors (ValueError for bad input, QueueFullError when
the waiting queue is full) travel back through a concurrent future, so the HTTP handler sees
them before it starts a response.

    engine = AsyncEngine.from_model("/path/to/hf-folder", dtype="float32")
    engine.start(asyncio.get_running_loop())
    queue: asyncio.Queue[RequestOutput] = asyncio.Queue()
    await engine.add_request("r1", [1, 2, 3], SamplingParams(max_tokens=8), queue)
    while not (out := await queue.get()).finished: ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import queue as thread_queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from intaglio.engine.engine import LLMEngine
from intaglio.engine.outputs import RequestOutput
from intaglio.errors import RequestError
from intaglio.sampling.params import SamplingParams
from intaglio.search.runner import Budget, Program, ProgramResult, ProgramRunner, ProgramState
from intaglio.spec import SpecStats
from intaglio.structured.compile_worker import CompileWorker

logger = logging.getLogger(__name__)


class EngineUnavailableError(RuntimeError):
    """The engine is shutting down (or its loop died) and admits no new requests."""


@dataclass(frozen=True)
class EngineStats:
    """A snapshot the engine thread publishes after every iteration (safe to read anywhere)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0
    num_preemptions: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens found
    spec: SpecStats = field(default_factory=SpecStats)  # speculative decoding so far


@dataclass
class _Stream:
    queue: asyncio.Queue[RequestOutput]
    abandoned: bool = False  # aborted by the caller: outputs are dropped, the final one counted


@dataclass
class _Add:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    priority: int
    cache_salt: str | None
    future: concurrent.futures.Future[None]


@dataclass
class _Abort:
    request_id: str


@dataclass
class _Compiled:
    """The compile worker finished an add's grammar: an automaton, or why it failed."""

    add: _Add
    automaton: Any
    error: str | None


@dataclass
class _RunProgram:
    """A search program to run on the engine thread, beside the plain requests."""

    program: Program[Any]
    budget: Budget | None
    future: concurrent.futures.Future[ProgramResult[Any]]


_STOP = object()


class AsyncEngine:
    def __init__(
        self,
        engine: LLMEngine,
        tokenizer: Any,
        default_sampling_params: SamplingParams,
        model_path: Path | None = None,
    ) -> None:
        self.engine = engine
        # The server's own tokenizer: the engine thread detokenizes with engine.tokenizer, and
        # HF fast tokenizers are not safe to share between threads.
        self.tokenizer = tokenizer
        self.default_sampling_params = default_sampling_params
        self.model_path = model_path
        self.max_model_len: int = engine.max_model_len
        self.vocab_size: int = engine.executor.vocab_size
        # Most sequences (each of a request's n samples counts) that may wait to be scheduled.
        self.max_num_waiting: int = engine.config.max_num_waiting
        # A reasoning model's (start, end) think markers; chat responses split on them.
        self.thinking_markers = engine.config.thinking_markers
        self.stats = EngineStats()
        # Called on the event loop with every request's final output (metrics hook).
        self.on_finished: list[Callable[[RequestOutput], None]] = []
        self._commands: thread_queue.Queue[Any] = thread_queue.Queue()
        # Orders "enqueue an add" against "the engine thread closes its queue", so that no add
        # can slip in after the thread's final drain and wait forever.
        self._commands_lock = threading.Lock()
        self._closed = False  # the engine thread has exited and reads no more commands
        self._streams: dict[str, _Stream] = {}
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._live: set[str] = set()  # engine thread only: ids admitted and not yet finished
        # Engine thread only: adds held outside the engine until their grammar is compiled.
        self._compiling: dict[str, _Add] = {}
        self._compile_worker: CompileWorker | None = None
        # Engine thread only: search programs, resumed between steps.
        self._programs = ProgramRunner(engine)
        self._program_futures: dict[int, concurrent.futures.Future[ProgramResult[Any]]] = {}

    @classmethod
    def from_model(cls, model: str | None = None, **engine_args: Any) -> AsyncEngine:
        """Load the model as the offline LLM does, and keep a second tokenizer for the server
        (a tokenizer is not safe to share between the engine thread and the event loop)."""
        from intaglio.api.llm import LLM

        llm = LLM(model, **engine_args)
        tokenizer = copy.deepcopy(llm.tokenizer)
        return cls(llm.engine, tokenizer, llm.default_sampling_params, llm.model_path)

    # ------------------------------------------------------------ lifecycle (event loop)
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None:
            raise RuntimeError("AsyncEngine.start() was already called")
        self._loop = loop
        self._idle = asyncio.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="intaglio-engine", daemon=True)
        self._thread.start()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def accepting(self) -> bool:
        return self._accepting and self.is_running

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def begin_shutdown(self) -> None:
        """Stop admitting; requests already in flight carry on."""
        self._accepting = False

    async def shutdown(self, drain_timeout: float = 0.0) -> None:
        """Stop admitting, let in-flight requests finish for up to drain_timeout, fail the rest."""
        self.begin_shutdown()
        if self._thread is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=drain_timeout)
        except asyncio.TimeoutError:
            pass
        for request_id in list(self._streams):
            self._fail_stream(request_id, "the server is shutting down")
            self._commands.put(_Abort(request_id))
        self._commands.put(_STOP)
        await asyncio.to_thread(self._thread.join, 30.0)

    # ------------------------------------------------------------ requests (event loop)
    async def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams,
        queue: asyncio.Queue[RequestOutput],
        priority: int = 0,
        cache_salt: str | None = None,
    ) -> None:
        """Admit a request whose outputs go to `queue` (several requests may share one).

        Raises ValueError (bad input), QueueFullError, or EngineUnavailableError.
        """
        if not self.accepting:
            raise EngineUnavailableError("the server is shutting down; not accepting requests")
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._commands_lock:
            if self._closed:
                raise EngineUnavailableError("the engine has stopped; not accepting requests")
            # Registered before the engine can produce anything for it.
            self._streams[request_id] = _Stream(queue)
            self._idle.clear()
            self._commands.put(_Add(request_id, prompt, params, priority, cache_salt, future))
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.abort(request_id)  # the caller went away while we were admitting
            raise
        except BaseException:
            self._drop_stream(request_id)
            raise

    async def run_program(
        self, program: Program[Any], budget: Budget | None = None
    ) -> ProgramResult[Any]:
        """Run a search program (intaglio.search) on the engine's shared batches."""
        if not self.accepting:
            raise EngineUnavailableError("the server is shutting down; not accepting requests")
        future: concurrent.futures.Future[ProgramResult[Any]] = concurrent.futures.Future()
        with self._commands_lock:
            if self._closed:
                raise EngineUnavailableError("the engine has stopped; not accepting requests")
            self._commands.put(_RunProgram(program, budget, future))
        return await asyncio.wrap_future(future)

    def abort(self, request_id: str) -> None:
        """Abort a request; its KV blocks are freed on the engine thread's next iteration."""
        stream = self._streams.get(request_id)
        if stream is None or stream.abandoned:
            return
        stream.abandoned = True
        self._commands.put(_Abort(request_id))

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if not stream.abandoned:
                stream.queue.put_nowait(out)
            if out.finished:
                self._drop_stream(out.request_id)
                for hook in self.on_finished:
                    try:
                        hook(out)
                    except Exception:  # a metrics bug must not break delivery
                        logger.exception("on_finished hook failed")

    def _drop_stream(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        if not self._streams:
            self._idle.set()

    def _fail_stream(self, request_id: str, message: str) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        self._dispatch([RequestOutput.failed(request_id, message)])

    def _fail_all(self, message: str) -> None:
        for request_id in list(self._streams):
            self._fail_stream(request_id, message)

    # ------------------------------------------------------------ engine thread
    def _run(self) -> None:
        needs_step = False  # an abort's final output appears on the next step
        commands: deque[Any] = deque()  # taken off the queue, not yet fully applied
        try:
            while True:
                busy = self.engine.has_unfinished() or self._programs.has_work()
                block = not needs_step and not busy
                commands.extend(self._next_commands(block))
                while commands:
                    if commands[0] is _STOP:
                        commands.popleft()
                        self._abort_everything()
                        return
                    needs_step |= self._apply(commands[0])
                    commands.popleft()
                self._programs.before_step()
                if needs_step or self.engine.has_unfinished():
                    needs_step = False
                    self._step()
                self._finish_programs()
                # Let the event loop have the GIL between steps: with small models a step is
                # mostly Python, and without this the HTTP side would wait for the 5 ms switch.
                time.sleep(0)
        except Exception:
            logger.exception("the engine loop died")
            self._accepting = False
            self._post(self._fail_all, "the engine stopped unexpectedly")
        finally:
            self._close(commands)

    def _close(self, leftover: deque[Any]) -> None:
        """The thread is exiting: refuse every add it will never apply, so no caller hangs."""
        with self._commands_lock:
            self._closed = True
            self._accepting = False
            leftover.extend(self._next_commands(block=False))
        if self._compile_worker is not None:
            self._compile_worker.close()
        error = EngineUnavailableError("the engine stopped before admitting this request")
        adds = [c for c in leftover if isinstance(c, _Add)]
        adds += [c.add for c in leftover if isinstance(c, _Compiled)]
        for command in [*adds, *self._compiling.values()]:
            _refuse(command.future, error)
            self._post(self._drop_stream, command.request_id)
        self._compiling.clear()
        self._finish_programs()
        for command in leftover:
            if isinstance(command, _RunProgram):
                _refuse(command.future, error)  # type: ignore[arg-type]

    def _next_commands(self, block: bool) -> list[Any]:
        commands = [self._commands.get()] if block else []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except thread_queue.Empty:
                return commands

    def _apply(self, command: _Add | _Abort | _Compiled | _RunProgram) -> bool:
        """Apply one command; True when the engine must step to emit an abort."""
        if isinstance(command, _RunProgram):
            if command.future.set_running_or_notify_cancel():
                state = self._programs.start(command.program, command.budget)
                self._program_futures[id(state)] = command.future
            return False
        if isinstance(command, _Abort):
            held = self._compiling.pop(command.request_id, None)
            if held is not None:  # its caller left while the grammar compiled
                _fail(held.future, EngineUnavailableError("aborted"))
                self._post(self._drop_stream, held.request_id)
            if command.request_id in self._live:
                self.engine.abort(command.request_id)
                return True
            return False
        if isinstance(command, _Compiled):
            self._grammar_compiled(command)
            return False
        if not command.future.set_running_or_notify_cancel():
            self._post(self._drop_stream, command.request_id)  # its caller left before this
            return False
        if self._needs_compile(command):
            return False
        self._admit(command)
        return False

    def _needs_compile(self, command: _Add) -> bool:
        """Send a grammar not compiled yet to the worker process, holding the add until it
        returns: the engine keeps stepping meanwhile. (xgrammar compiles in C++, inline.)"""
        spec = command.params.structured
        if spec is None or spec.backend != "intaglio":
            return False
        try:
            compiler = self.engine.core.grammar_compiler
        except RequestError:
            return False  # no tokenizer: the engine refuses the request itself
        if compiler.is_cached(spec):
            return False
        if self._compile_worker is None:
            self._compile_worker = CompileWorker(compiler.vocab, compiler.timeout_s)
        self._compiling[command.request_id] = command
        self._compile_worker.submit(
            spec, lambda automaton, error: self._commands.put(_Compiled(command, automaton, error))
        )
        return True

    def _grammar_compiled(self, done: _Compiled) -> None:
        command = self._compiling.pop(done.add.request_id, None)
        if command is None:
            return  # aborted while compiling
        spec = command.params.structured
        if done.error is not None:
            _fail(command.future, RequestError(done.error, "structured"))
            self._post(self._drop_stream, command.request_id)
            return
        try:
            self.engine.core.grammar_compiler.add_automaton(spec, done.automaton)
        except Exception as e:
            logger.exception("a compiled grammar could not be used")
            _fail(command.future, e)
            self._post(self._drop_stream, command.request_id)
            return
        self._admit(command)

    def _admit(self, command: _Add) -> None:
        try:
            self.engine.add_request(
                command.request_id,
                command.prompt,
                command.params,
                command.priority,
                command.cache_salt,
            )
        except BaseException as e:  # every admission error goes back to the caller
            command.future.set_exception(e)
            self._post(self._drop_stream, command.request_id)  # even if the caller has left
        else:
            self._live.add(command.request_id)
            self._publish_stats()  # so a scrape right after admission already counts it
            command.future.set_result(None)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:
            logger.exception("engine step failed; failing %d in-flight requests", len(self._live))
            self._recover(f"the engine failed while running this request: {e}")
            return
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        self._programs.feed(outputs)
        self._publish_stats()  # before the outputs: a client that got them sees fresh metrics
        if outputs:
            self._post(self._dispatch, outputs)

    def _finish_programs(self) -> None:
        finished: list[ProgramState] = self._programs.take_finished()
        for state in finished:
            future = self._program_futures.pop(id(state))
            assert state.result is not None
            future.set_result(state.result)

    def _recover(self, message: str) -> None:
        """After a failed step: abort everything, flush the aborts, fail the callers."""
        failed = list(self._live)
        self._abort_everything()
        self._publish_stats()
        self._post(self._dispatch, [RequestOutput.failed(rid, message) for rid in failed])

    def _abort_everything(self) -> None:
        for request_id in self._live:
            self.engine.abort(request_id)
        self._live.clear()
        self._programs.fail_all("the engine stopped while running this program")
        try:
            self.engine.step()  # emits (and forgets) the aborted requests, freeing their blocks
        except Exception:
            logger.exception("the engine could not flush aborted requests")

    def _publish_stats(self) -> None:
        scheduler = self.engine.scheduler
        self.stats = EngineStats(
            num_running=len(scheduler.running),
            num_waiting=len(scheduler.waiting),
            kv_cache_usage=self.engine.block_manager.usage,
            num_preemptions=scheduler.num_preemptions,
            prefix_cache_queries=self.engine.block_manager.num_queried_tokens,
            prefix_cache_hits=self.engine.block_manager.num_hit_tokens,
            spec=replace(
                scheduler.spec_stats,
                accepted_per_position=list(scheduler.spec_stats.accepted_per_position),
            ),
        )

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            logger.debug("event loop closed; dropping %s", getattr(fn, "__name__", fn))


def _fail(future: concurrent.futures.Future[None], error: BaseException) -> None:
    """Fail a running admission future (one this thread marked running)."""
    try:
        future.set_exception(error)
    except (RuntimeError, concurrent.futures.InvalidStateError):
        pass


def _refuse(future: concurrent.futures.Future[None], error: BaseException) -> None:
    """Fail an admission future unless it is already done (or its caller cancelled it)."""
    try:
        if future.running() or future.set_running_or_notify_cancel():
            future.set_exception(error)
    except (RuntimeError, concurrent.futures.InvalidStateError):
        pass  # resolved meanwhile: its caller already has an answer
