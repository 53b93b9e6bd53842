"""Shared fixtures: tiny random checkpoints per model family, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoints import build_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """checkpoint(family) -> path of a saved tiny HF model of that family (cached)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = build_checkpoint(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return get
