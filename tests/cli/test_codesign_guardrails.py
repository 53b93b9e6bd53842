"""`intaglio codesign` refuses what it cannot cost honestly, and survives a closed pipe."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from intaglio.cli.main import main

REFUSED = [
    # 70B in bf16 (131 GiB of weights) on one 80 GB H100.
    (
        "ops --model llama-3-70b --hardware h100-sxm --batch decode:1@128",
        "the step does not fit one device: weights 131.4 GiB",
    ),
    # 1024 sequences of 2048 tokens at TP 8: 2.1M KV tokens; the weights fit, the KV does not.
    (
        "ops --model llama-3-70b --hardware h100-sxm --passes tp=8 --batch decode:1024@2048",
        "KV of 2097152 tokens",
    ),
    (
        "ops --model llama-3-8b --hardware h100-sxm --set memory.1.bandwith_gbs=4000",
        "memory[1]: unknown field(s) ['bandwith_gbs']; known: ['bandwidth_gbs', 'capacity_gib'",
    ),
    (
        "ops --model llama-3-8b --hardware h100-sxm --set interconnect.latncy_us=2",
        "interconnect: unknown field(s) ['latncy_us']",
    ),
    ("ops --model llama-3-8b --hardware h100-sxm --set speed=2", "unknown field(s) ['speed']"),
    (
        "sweep --model llama-3-8b --hardware h100-sxm --param model.num_kv_heads=1,2",
        "model override(s) ['num_kv_heads'] name no field of llama-3-8b's config",
    ),
    (
        "ops --model llama-3-8b --hardware h100-sxm --passes fuse,tp=8",
        "pass 'tp=8' comes after 'fuse'; partitioning must come before fusion, e.g. tp=8,fuse",
    ),
    ("memory --model llama-3-8b --hardware h100-sxm --passes tp=2,tp=4", "pass tp is given twice"),
]


@pytest.mark.parametrize("command,message", REFUSED)
def test_refusals_name_the_problem(command, message, capsys):
    assert main(["codesign", *command.split()]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_overflow_can_be_costed_with_a_warning(tmp_path, capsys):
    out = tmp_path / "ops"
    argv = "ops --model llama-3-70b --hardware h100-sxm --batch decode:1@128 --allow-overflow"
    assert main(["codesign", *argv.split(), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: the step does not fit one device")
    assert "fits=False" in captured.out
    assert "**Warning:** the step does not fit" in (out / "report.md").read_text()


def test_step_sweep_fit_column_counts_the_kv_cache(capsys):
    argv = "sweep --model llama-3-70b --hardware h100-sxm --passes tp=8 --param batch=64,1024"
    assert main(["codesign", *argv.split()]) == 0
    lines = capsys.readouterr().out.splitlines()
    fits = [line.split()[1] for line in lines[1:]]
    assert fits == ["True", "False"]


def test_memory_out_writes_the_plan(tmp_path, capsys):
    out = tmp_path / "mem"
    argv = ["codesign", "memory", "--model", "llama-3-8b", "--hardware", "h100-sxm"]
    assert main([*argv, "--out", str(out)]) == 0
    plan = json.loads((out / "memory.json").read_text())
    assert plan["fits"] and plan["kv_capacity_tokens"] > 0
    assert '"hardware": "h100-sxm"' in (out / "report.md").read_text()


def test_a_closed_pipe_is_quiet_and_out_is_still_written(tmp_path):
    out = tmp_path / "ops"
    cli = [sys.executable, "-m", "intaglio.cli.main", "codesign", "ops"]
    cli += ["--model", "llama-3.2-1b", "--hardware", "h100-sxm", "--top", "200"]
    cli += ["--out", str(out)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # then leave, as `| head -1` does
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and b"step_ms=" in first
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert len(list(csv.DictReader((out / "ops.csv").open()))) > 100
