"""No request stalls the others: while one request's slow work runs (a grammar that compiles
for seconds), concurrent streams keep receiving tokens with gaps close to a quiet run's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serverkit import RunningServer, run_server

from intaglio.model.checkpoint import EMBEDDED_MODEL

GRAMMAR_TIMEOUT_S = 3.0
NUM_STREAMS = 4
STREAM = {"prompt": "Once upon a time", "max_tokens": 160, "ignore_eos": True, "temperature": 0}
# Strings under a length bound and a word-count pattern: the product of the two automata is
# built state by state in Python, seconds per string (the shape of a JSONSchemaBench
# Github_hard schema that once took minutes).
SLOW_SCHEMA = {
    "type": "object",
    "properties": {
        f"field{i}": {"type": "string", "maxLength": 300 + i, "pattern": "^(?:\\S+\\s+){0,29}\\S+$"}
        for i in range(4)
    },
    "required": ["field0"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server(str(EMBEDDED_MODEL), grammar_timeout_s=GRAMMAR_TIMEOUT_S) as s:
        yield s


async def _stream_gaps(client: httpx.AsyncClient, running: asyncio.Event) -> list[float]:
    """Seconds between consecutive token chunks of one streamed completion; `running` is set
    once it has had a few."""
    times = []
    body = {**STREAM, "stream": True}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                times.append(time.monotonic())
                if len(times) == 4:
                    running.set()
    return [b - a for a, b in zip(times[1:], times[2:])]  # from the second token: no prefill


async def _streams(client: httpx.AsyncClient, running: asyncio.Event) -> tuple[float, float]:
    """(largest gap, end time) over NUM_STREAMS concurrent streams."""
    gaps = await asyncio.gather(*(_stream_gaps(client, running) for _ in range(NUM_STREAMS)))
    return max(max(g) for g in gaps), time.monotonic()


def _max_quiet_gap(server: RunningServer) -> float:
    async def run() -> float:
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as c:
            return min([(await _streams(c, asyncio.Event()))[0] for _ in range(2)])

    return asyncio.run(run())


def _bound(quiet: float) -> float:
    # A step or two more than a quiet run's worst gap (the machine is shared and noisy), and
    # far below the stall being tested for.
    return min(4 * quiet + 0.15, GRAMMAR_TIMEOUT_S / 3)


def test_slow_grammar_compiles_beside_the_streams(server: RunningServer) -> None:
    quiet = _max_quiet_gap(server)
    with httpx.Client(base_url=server.url, timeout=60.0) as c:  # the compile worker starts
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 4, "guided_regex": "ab"})
        assert r.status_code == 200, r.text

    async def run() -> tuple[httpx.Response, float, float, float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as c:
            running = asyncio.Event()
            streams = asyncio.ensure_future(_streams(c, running))
            await running.wait()
            body: dict[str, Any] = {"prompt": "x", "max_tokens": 8, "guided_json": SLOW_SCHEMA}
            t0 = time.monotonic()
            response = await c.post("/v1/completions", json=body)
            elapsed = time.monotonic() - t0
            worst, streams_done = await streams
            return response, elapsed, worst, streams_done - t0

    response, elapsed, worst, streams_s = asyncio.run(run())
    print(f"quiet max gap {quiet * 1e3:.0f} ms, while compiling {worst * 1e3:.0f} ms")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "exceeded" in error["message"] and error["param"] == "guided_json"
    assert GRAMMAR_TIMEOUT_S <= elapsed < GRAMMAR_TIMEOUT_S + 1.0  # abandoned at the limit
    assert streams_s > 0.5, "the streams must keep running while the grammar compiles"
    assert worst < _bound(quiet)
    # The engine is still whole: the next structured request compiles and runs.
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        body = {"prompt": "a", "max_tokens": 8, "guided_json": {"type": "integer"}}
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        assert set(r.json()["choices"][0]["text"]) <= set("-0123456789")
