"""Light constants the serve CLI and the serving benchmark share (no FastAPI import here)."""

from __future__ import annotations

# Hosts that only this machine can reach: serving there without an API key is fine, and the
# serving benchmark only ever targets them.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_model_name(model: str | None) -> str:
    """The name a server for --model serves under when --served-model-name is not given."""
    return model if model is not None else "intaglio-default"
