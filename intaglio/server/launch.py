"""Running the app under uvicorn: in the foreground (the CLI) or on a background thread.

On SIGTERM or Ctrl-C the engine stops admitting at once: the server keeps listening while
in-flight requests finish, for up to `graceful_timeout` seconds, and answers new ones 503 with
Retry-After (a load balancer retries them elsewhere; a closed port would look like a crash).
Then uvicorn stops listening and lets open responses end; whatever is still running then is
cancelled, aborted and failed, and the engine thread exits. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from intaglio.api.async_engine import AsyncEngine

logger = logging.getLogger(__name__)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: AsyncEngine) -> None:
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.engine.begin_shutdown()  # only sets a flag: safe inside a signal handler
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain while still listening (new requests get 503), then uvicorn's shutdown."""
        deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 0)
        while self.engine.num_in_flight and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await super().shutdown(sockets)


def _config(app: FastAPI, graceful_timeout: float, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=int(graceful_timeout),
        access_log=log_level == "debug",
    )


def serve(
    app: FastAPI,
    engine: AsyncEngine,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout: float = 30.0,
    log_level: str = "info",
) -> None:
    """Serve until SIGTERM / Ctrl-C (blocking; signals are handled on the main thread)."""
    config = _config(app, graceful_timeout, log_level)
    config.host, config.port = host, port
    GracefulServer(config, engine).run()


@contextmanager
def background_server(
    app: FastAPI,
    engine: AsyncEngine,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_timeout: float = 5.0,
    log_level: str = "warning",
    startup_timeout: float = 60.0,
) -> Iterator[tuple[str, GracefulServer]]:
    """Run the app on a thread; yield (base URL, server). Port 0 picks a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = GracefulServer(_config(app, graceful_timeout, log_level), engine)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="intaglio-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start; see the log above")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=graceful_timeout + 30.0)
        sock.close()
