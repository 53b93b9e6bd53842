"""A real uvicorn server on a free loopback port, over a tiny random Llama checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from serverkit import ENGINE_ARGS, RunningServer, run_server

from intaglio import LLM


@pytest.fixture(scope="session")
def model_path(checkpoint) -> str:
    return str(checkpoint("llama"))


@pytest.fixture(scope="session", autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    # The engines below run single-threaded (far faster on a busy 2-core box); put it back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def server(model_path: str) -> Iterator[RunningServer]:
    with run_server(model_path) as s:
        yield s


@pytest.fixture(scope="session")
def offline(model_path: str) -> LLM:
    """The offline API over the same checkpoint: the reference the server must match."""
    return LLM(model_path, **ENGINE_ARGS)
