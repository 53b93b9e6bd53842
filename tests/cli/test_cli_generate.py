"""`intaglio generate` end to end through the real argument parser."""

from __future__ import annotations

import json

from intaglio import LLM, SamplingParams
from intaglio.cli.main import main


def test_generate_json_matches_offline_api(checkpoint, tmp_path, capsys):
    model = str(checkpoint("qwen2"))
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("import os\n\nclass A:\n")
    code = main(
        [
            "generate",
            "--model",
            model,
            "--dtype",
            "float32",
            "--max-tokens",
            "5",
            "--temperature",
            "0",
            "--ignore-eos",
            "--logprobs",
            "1",
            "--json",
            "--prompts-file",
            str(prompts_file),
            "def f():",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in records] == ["def f():", "import os", "class A:"]
    expected = LLM(model, dtype="float32").generate(
        ["def f():", "import os", "class A:"],
        SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True),
    )
    for record, out in zip(records, expected):
        completion = record["completions"][0]
        assert completion["token_ids"] == out.outputs[0].token_ids
        assert completion["finish_reason"] == "length"
        assert len(completion["logprobs"]) == 5
        assert record["time_to_first_token"] > 0


def test_generate_reports_bad_values(checkpoint, capsys):
    code = main(["generate", "--model", str(checkpoint("qwen2")), "--top-p", "2", "hi"])
    assert code == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", "--model", "/nonexistent/model", "hi"]) == 2
    assert "not found" in capsys.readouterr().err
