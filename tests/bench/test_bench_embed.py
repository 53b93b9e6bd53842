"""`intaglio bench embed` runs end to end, and its transformers side embeds the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intaglio.cli.main import main


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_bench_embed_agrees_with_transformers(checkpoint, tmp_path: Path, pooling: str) -> None:
    out = tmp_path / "embed.json"
    argv = ["bench", "embed", "--model", str(checkpoint("llama")), "--dtype", "float32"]
    argv += ["--num-inputs", "6", "--repeats", "1", "--hf", "--pooling", pooling]
    assert main([*argv, "--num-threads", "1", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_inputs"] == 6 and result["intaglio_embeddings_per_s"] > 0
    # Right padding and the pooling over it give transformers the same vectors as ours.
    assert result["min_cosine_vs_hf"] > 0.99999
