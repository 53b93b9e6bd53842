"""The embedded default model: the first command works with no model argument."""

from __future__ import annotations

from intaglio import LLM, SamplingParams
from intaglio.api.llm import DEFAULT_MODEL
from intaglio.cli.main import main


def test_default_model_is_embedded_and_small():
    size = sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*") if p.is_file())
    assert (DEFAULT_MODEL / "model.safetensors").is_file()
    assert size < 25 * 2**20
    draft = DEFAULT_MODEL.parent / "default_draft_model"
    assert (draft / "model.safetensors").is_file()


def test_generate_with_no_model_argument(capsys):
    assert main(["generate", "--max-tokens", "24", "--temperature", "0", "def fibonacci(n):"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("def fibonacci(n):")
    assert len(out) > len("def fibonacci(n):") + 10


def test_default_model_writes_python_like_text():
    llm = LLM()
    params = SamplingParams(temperature=0.0, max_tokens=48)
    text = llm.generate(["import os\n\n\ndef "], params)[0].outputs[0].text
    # A model trained on the standard library opens a function signature.
    assert "(" in text and ":" in text
