"""Helpers for the server tests: start a server, read its metrics, poll with a deadline."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from intaglio.api.async_engine import AsyncEngine
from intaglio.server.app import build_app
from intaglio.server.launch import GracefulServer, background_server

MODEL_NAME = "tiny-llama"
ENGINE_ARGS: dict[str, Any] = {"dtype": "float32", "num_threads": 1}


@dataclass
class RunningServer:
    url: str
    engine: AsyncEngine
    uvicorn: GracefulServer
    app: FastAPI

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)


@contextmanager
def run_server(
    model_path: str, app_args: dict[str, Any] | None = None, **engine_args: Any
) -> Iterator[RunningServer]:
    """`app_args` go to build_app (api_key, open_metrics, body_timeout_s)."""
    engine = AsyncEngine.from_model(model_path, **{**ENGINE_ARGS, **engine_args})
    app = build_app(engine, MODEL_NAME, **(app_args or {}))
    with background_server(app, engine) as (url, uv):
        yield RunningServer(url, engine, uv, app)


# `intaglio serve` through the CLI module alone (the parser shape cli/main.py builds).
RUNNER = (
    "import argparse, sys; from intaglio.cli.serve import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='command')); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]


@contextmanager
def serve_process(model_path: str, *flags: str) -> Iterator[ServerProcess]:
    """`intaglio serve` as its own process on a free port: its event loop and GIL are not the
    test's, so timings the test takes are the server's."""
    cmd = [sys.executable, "-c", RUNNER, "serve", "--model", model_path, "--port", "0"]
    cmd += ["--dtype", "float32", "--num-threads", "1", "--served-model-name", MODEL_NAME]
    proc = subprocess.Popen([*cmd, *flags], stderr=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True).start()
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        yield ServerProcess(url, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pump(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def metrics(url: str) -> dict[str, float]:
    """Every sample as {'name{label="v"}': value} (labels sorted), or just 'name'."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def engine_idle(url: str) -> bool:
    m = metrics(url)
    return (
        m["intaglio_num_requests_running"] == 0
        and m["intaglio_num_requests_waiting"] == 0
        and m["intaglio_kv_cache_usage_ratio"] == 0.0
    )
