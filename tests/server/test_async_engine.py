"""AsyncEngine without HTTP: admission errors arrive synchronously, outputs on the right queue."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from serverkit import ENGINE_ARGS

from intaglio import SamplingParams
from intaglio.api.async_engine import AsyncEngine, EngineUnavailableError
from intaglio.engine.engine import QueueFullError
from intaglio.engine.outputs import RequestOutput


async def final(queue: asyncio.Queue[RequestOutput]) -> RequestOutput:
    while not (out := await asyncio.wait_for(queue.get(), timeout=30)).finished:
        pass
    return out


def test_async_engine_lifecycle(model_path: str) -> None:
    engine = AsyncEngine.from_model(model_path, max_num_seqs=1, max_num_waiting=1, **ENGINE_ARGS)

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
        q: asyncio.Queue[RequestOutput] = asyncio.Queue()
        await engine.add_request("a", [5, 6, 7], params, q)
        with pytest.raises(ValueError, match="max_model_len"):
            await engine.add_request("long", [5] * engine.max_model_len, params, asyncio.Queue())
        with pytest.raises(ValueError, match="already in use"):
            await engine.add_request("a", [5], params, asyncio.Queue())
        await asyncio.wait_for(q.get(), timeout=30)  # "a" runs; the waiting queue is empty
        q_b: asyncio.Queue[RequestOutput] = asyncio.Queue()
        await engine.add_request("b", [5, 6], params, q_b)  # takes the one waiting slot
        with pytest.raises(QueueFullError):
            await engine.add_request("c", [5], params, asyncio.Queue())
        engine.abort("a")
        out_b = await final(q_b)
        assert out_b.request_id == "b" and len(out_b.outputs[0].token_ids) == 200
        # an aborted request's final output is not delivered: its caller has gone
        assert not any(q.get_nowait().finished for _ in range(q.qsize()))
        engine.begin_shutdown()
        with pytest.raises(EngineUnavailableError):
            await engine.add_request("d", [5], params, asyncio.Queue())
        await engine.shutdown()
        assert not engine.is_running
        assert engine.stats.num_running == engine.stats.num_waiting == 0
        assert engine.stats.kv_cache_usage == 0.0

    asyncio.run(scenario())


def test_caller_cancelled_during_admission_leaves_nothing_behind(model_path: str) -> None:
    engine = AsyncEngine.from_model(model_path, **ENGINE_ARGS)
    entered, release = threading.Event(), threading.Event()
    add = engine.engine.add_request

    def blocking_add(*args: Any) -> None:
        entered.set()
        assert release.wait(10)
        add(*args)

    engine.engine.add_request = blocking_add  # type: ignore[method-assign]
    params = SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True)

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        # "inside": cancelled while the engine thread is adding it (admitted, then aborted);
        # "queued": cancelled while still queued behind it (never admitted at all).
        inside = asyncio.ensure_future(engine.add_request("inside", [5], params, asyncio.Queue()))
        assert await asyncio.to_thread(entered.wait, 10)
        queued = asyncio.ensure_future(engine.add_request("queued", [5], params, asyncio.Queue()))
        await asyncio.sleep(0)  # let it enqueue its command
        inside.cancel()
        queued.cancel()
        release.set()
        for task in (inside, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        deadline = time.monotonic() + 10
        while engine.num_in_flight or engine.engine.has_unfinished():
            assert time.monotonic() < deadline, "a cancelled request stayed in flight"
            await asyncio.sleep(0.01)
        await engine.shutdown()

    asyncio.run(scenario())
    assert engine.stats.kv_cache_usage == 0.0


def test_engine_thread_death_fails_pending_adds(model_path: str) -> None:
    """An add in progress and one still queued both get an answer when the thread dies."""
    engine = AsyncEngine.from_model(model_path, **ENGINE_ARGS)
    entered, release = threading.Event(), threading.Event()
    add = engine.engine.add_request

    def blocking_add(*args: Any) -> None:
        entered.set()
        assert release.wait(10)
        add(*args)

    def boom() -> None:
        raise RuntimeError("injected engine-loop failure")

    engine.engine.add_request = blocking_add  # type: ignore[method-assign]
    params = SamplingParams(temperature=0.0, max_tokens=5)

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        inside = asyncio.ensure_future(engine.add_request("inside", [5], params, asyncio.Queue()))
        assert await asyncio.to_thread(entered.wait, 10)
        queued = asyncio.ensure_future(engine.add_request("queued", [5], params, asyncio.Queue()))
        await asyncio.sleep(0)  # let it enqueue its command behind "inside"
        # The loop dies (outside any step) right after admitting "inside".
        engine._publish_stats = boom  # type: ignore[method-assign]
        release.set()
        for task in (inside, queued):
            with pytest.raises(EngineUnavailableError):
                await asyncio.wait_for(task, timeout=10)
        assert not engine.accepting
        with pytest.raises(EngineUnavailableError):
            await asyncio.wait_for(engine.add_request("late", [5], params, asyncio.Queue()), 10)
        await asyncio.wait_for(engine.shutdown(), timeout=10)
        assert engine.num_in_flight == 0

    asyncio.run(scenario())
