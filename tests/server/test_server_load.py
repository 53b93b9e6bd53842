"""Concurrency, back-pressure, engine failures and graceful shutdown, on real servers."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serverkit import RunningServer, engine_idle, metrics, run_server, wait_until

from intaglio import LLM, SamplingParams

COMPLETIONS = "/v1/completions"


async def stream_completion(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a streaming completion; return its id(s), text and finish reason."""
    text, ids, finish = "", set(), None
    async with client.stream("POST", COMPLETIONS, json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            ids.add(chunk["id"])
            for c in chunk["choices"]:
                text += c["text"]
                finish = c["finish_reason"] or finish
    return {"ids": ids, "text": text, "finish": finish}


def test_64_simultaneous_streams_complete_unmixed(server: RunningServer, offline: LLM) -> None:
    prompts = [f"{w} {i}" for i, w in enumerate(["import os", "def f():", "a", "class"] * 16)]
    max_tokens = [8 + i % 9 for i in range(len(prompts))]  # different lengths finish apart
    expected = [
        out.outputs[0].text
        for out in offline.generate(
            prompts, [SamplingParams(temperature=0.0, max_tokens=m) for m in max_tokens]
        )
    ]

    async def run_all() -> list[dict[str, Any]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0, limits=limits) as c:
            bodies = [
                {"prompt": p, "max_tokens": m, "temperature": 0}
                for p, m in zip(prompts, max_tokens)
            ]
            return await asyncio.gather(*(stream_completion(c, b) for b in bodies))

    executor = server.engine.engine.executor
    execute = executor.execute
    batch_sizes: list[int] = []

    def spy(sched: Any) -> Any:
        batch_sizes.append(len(sched.scheduled))
        return execute(sched)

    executor.execute = spy  # type: ignore[method-assign]
    try:
        results = asyncio.run(run_all())
    finally:
        executor.execute = execute  # type: ignore[method-assign]
    assert max(batch_sizes) >= 16  # concurrent requests really share engine steps
    assert len(results) == 64
    assert all(len(r["ids"]) == 1 for r in results)
    assert len({next(iter(r["ids"])) for r in results}) == 64  # every stream its own request
    assert [r["text"] for r in results] == expected
    assert all(r["finish"] in ("length", "stop") for r in results)
    wait_until(lambda: engine_idle(server.url), what="an idle engine after the load")


@pytest.fixture
def slow_server(model_path: str) -> Iterator[RunningServer]:
    """One running sequence and one waiting slot, with each step slowed to 20 ms."""
    with run_server(model_path, max_num_seqs=1, max_num_waiting=1) as s:
        executor = s.engine.engine.executor
        execute = executor.execute

        def slow_execute(*args: Any, **kwargs: Any) -> Any:
            time.sleep(0.02)  # widens the window in which the queue is full to seconds
            return execute(*args, **kwargs)

        executor.execute = slow_execute  # type: ignore[method-assign]
        yield s


def test_full_waiting_queue_is_429(slow_server: RunningServer) -> None:
    url = slow_server.url
    long = {"prompt": "a", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=30.0) as a, httpx.Client(base_url=url) as b:
        with a.stream("POST", COMPLETIONS, json=long) as running:
            lines = running.iter_lines()  # keep a reference: a dropped iterator hangs up
            next(line for line in lines if line.startswith("data: "))
            with b.stream("POST", COMPLETIONS, json=long) as waiting:
                assert waiting.status_code == 200  # admitted: it holds the one waiting slot
                assert metrics(url)["intaglio_num_requests_waiting"] == 1
                with httpx.Client(base_url=url) as c:
                    r = c.post(COMPLETIONS, json={"prompt": "b", "max_tokens": 2})
                    assert r.status_code == 429, r.text
                    assert r.json()["error"]["code"] == "queue_full"
                    assert r.headers["retry-after"]
                    n2 = c.post(COMPLETIONS, json={"prompt": "b", "max_tokens": 2, "n": 2})
                    assert n2.status_code == 400  # n beyond the queue can never fit
    wait_until(lambda: engine_idle(url), what="both streams aborted")


def test_engine_step_failure_fails_in_flight_but_server_survives(
    slow_server: RunningServer,
) -> None:
    url = slow_server.url
    executor = slow_server.engine.engine.executor
    execute = executor.execute
    fail = threading.Event()

    def flaky_execute(*args: Any, **kwargs: Any) -> Any:
        if fail.is_set():
            fail.clear()
            raise RuntimeError("simulated device fault")
        return execute(*args, **kwargs)

    executor.execute = flaky_execute  # type: ignore[method-assign]
    body = {"prompt": "a", "max_tokens": 300, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=30.0) as c:
        with c.stream("POST", COMPLETIONS, json=body) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            fail.set()
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][len("data: ") :])["error"]
        assert "simulated device fault" in error["message"]
        wait_until(lambda: engine_idle(url), what="blocks freed after the failure")
        # non-streaming: a clean 500 in OpenAI's shape
        fail.set()
        r2 = c.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 3})
        assert r2.status_code == 500 and "simulated" in r2.json()["error"]["message"]
        # and the server still serves
        ok = c.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
        assert c.get("/health").status_code == 200
    assert metrics(url)['intaglio_requests_total{finish_reason="error"}'] == 2


def test_shutdown_stops_admitting_and_finishes_in_flight(slow_server: RunningServer) -> None:
    url = slow_server.url
    body = {"prompt": "a", "max_tokens": 30, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=url, timeout=30.0) as c, httpx.Client(base_url=url) as other:
        with c.stream("POST", COMPLETIONS, json=body) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            slow_server.engine.begin_shutdown()  # what SIGTERM does first
            refused = other.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 2})
            assert refused.status_code == 503 and refused.json()["error"]["type"]
            assert other.get("/health").status_code == 503
            slow_server.uvicorn.handle_exit(signal.SIGTERM, None)  # then uvicorn drains
            rest = [line for line in lines if line.startswith("data: ")]
    chunks = [json.loads(x[len("data: ") :]) for x in [first, *rest[:-1]]]
    assert rest[-1] == "data: [DONE]"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # finished, not cut off
    # the engine thread stops with the server
    wait_until(lambda: not slow_server.engine.is_running, timeout=20, what="engine stop")
