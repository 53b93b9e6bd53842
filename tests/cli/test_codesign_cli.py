"""`intaglio codesign` end to end: tables, plots, reports, sweeps and clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from intaglio.cli.main import main


def test_ops_writes_csv_report_and_plots(tmp_path, capsys):
    out = tmp_path / "ops"
    rc = main(
        [
            "codesign",
            "ops",
            "--model",
            "llama-3.2-1b",
            "--hardware",
            "h100-sxm",
            "--passes",
            "fuse",
            "--batch",
            "decode:8@512+prefill:128",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "time by kind" in text and "mfu=" in text
    rows = list(csv.DictReader((out / "ops.csv").open()))
    assert any(r["kind"] == "attention" for r in rows)
    for name in ("report.md", "roofline.png", "roofline.svg", "breakdown.png"):
        assert (out / name).stat().st_size > 0


def test_step_sweep_over_batch_size(tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = main(
        [
            "codesign",
            "sweep",
            "--model",
            "llama-3-8b",
            "--hardware",
            "h100-sxm",
            "--param",
            "batch=1,16,256,1024",
            "--context",
            "16",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    tok_s = [float(r["tokens_per_s"]) for r in rows]
    assert tok_s == sorted(tok_s)  # batching raises decode throughput
    assert rows[0]["bound"] == "memory" and rows[-1]["bound"] == "compute"
    assert (out / "sweep.svg").exists() and "| batch | chips |" in (out / "report.md").read_text()


def test_serving_sweep_over_tensor_parallelism(tmp_path, capsys):
    rc = main(
        [
            "codesign",
            "sweep",
            "--model",
            "llama-3-70b",
            "--hardware",
            "h100-sxm",
            "--serve",
            "--param",
            "tp=4,8",
            "--num-requests",
            "60",
            "--rate",
            "4",
            "--input-len",
            "fixed:512",
            "--output-len",
            "fixed:64",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert "tpot_p50_ms" in lines[0] and len(lines) == 3


def test_simulate_writes_timeline(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(
        [
            "codesign",
            "simulate",
            "--model",
            "qwen3-0.6b",
            "--hardware",
            "mi300x",
            "--num-requests",
            "50",
            "--rate",
            "10",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "TTFT" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "requests.csv").open()))) == 50
    assert (out / "timeline.png").exists()


BAD = [
    ("ops --model nope --hardware h100-sxm", "unknown model 'nope'"),
    ("ops --model llama-3-8b --hardware h100-sxm --batch decode:x", "bad batch part"),
    (
        "ops --model llama-3-8b --hardware h100-sxm --set memory.1.bandwidth_gbs=-5",
        "bandwidth_gbs must be a positive number",
    ),
    ("simulate --model llama-3-405b --hardware h100-sxm --num-requests 2", "does not fit"),
    ("memory --model llama-3-8b --hardware h100-sxm --passes tp=8,warp", "unknown pass 'warp'"),
    ("sweep --model llama-3-8b --hardware h100-sxm --param speed=1,2", "unknown sweep parameter"),
]


def test_user_errors_are_one_line(capsys):
    for command, message in BAD:
        assert main(["codesign", *command.split()]) == 2, command
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (command, err)


def test_lower_writes_the_instruction_trace_and_timeline(tmp_path, capsys):
    out = tmp_path / "lower"
    argv = "lower --model llama-3-8b --hardware transformer-asic --passes tp=2,fuse"
    assert main(["codesign", *argv.split(), "--batch", "decode:16@512", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step_ms=" in text and "resident" in text
    trace = list(csv.DictReader((out / "trace.csv").open()))
    assert {r["instruction"] for r in trace} == {"load", "compute", "collective"}
    assert {r["layer"] for r in trace} == {"0"}
    for r in trace:
        assert float(r["end_us"]) >= float(r["start_us"])
    ops = list(csv.DictReader((out / "ops.csv").open()))
    assert any(r["tile"] for r in ops) and all(0 <= float(r["dma_busy"]) <= 1.0001 for r in ops)
    assert (out / "timeline.png").stat().st_size > 0
    assert main(["codesign", "lower", "--model", "llama-3-8b", "--hardware", "h100-sxm"]) == 2
    assert "no on_chip section" in capsys.readouterr().err


def test_solve_reports_the_required_value_and_what_binds(tmp_path, capsys):
    out = tmp_path / "solve"
    argv = "solve --model llama-3.2-1b --hardware h100-sxm --batch decode:8@512"
    argv += " --target tpot_ms=0.5 --param hw.memory.1.bandwidth_gbs,hw.matmul_tflops.bfloat16"
    assert main(["codesign", *argv.split(), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "solve.csv").open()))
    bandwidth, flops = rows
    assert float(bandwidth["required"]) > 3350 and bandwidth["binding"] in ("memory", "overhead")
    assert flops["required"] == "out of reach" and flops["binding"] != "compute"
    assert "target tpot_ms = 0.5" in capsys.readouterr().out


def test_serving_sweep_over_the_arrival_rate(capsys):
    argv = "sweep --model llama-3.2-1b --hardware h100-sxm --serve --param rate=2,50"
    argv += " --num-requests 40 --input-len fixed:256 --output-len fixed:32"
    assert main(["codesign", *argv.split()]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    slow, fast = (dict(zip(header, line.split())) for line in lines[1:3])
    assert float(fast["output_tok_s"]) > 5 * float(slow["output_tok_s"])


# Guardrails: what cannot be costed honestly is refused; a closed pipe is quiet.

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
    column = lines[0].split().index("fits")
    fits = [line.split()[column] for line in lines[1:]]
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


# Speculative decoding in the simulator.


def test_simulate_reports_speculation_against_plain_decoding(tmp_path, capsys):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"acceptance": [0.9, 0.8, 0.7, 0.6]}))
    argv = "simulate --model llama-3.2-1b --hardware h100-sxm --num-requests 4 --max-num-seqs 1"
    argv += " --input-len fixed:128 --output-len fixed:300 --speculative-method ngram"
    argv += f" --spec-profile {profile} --out {tmp_path / 'sim'}"
    assert main(["codesign", *argv.split()]) == 0
    out = capsys.readouterr().out
    assert "speculation:" in out and "per position 0.9" in out
    speedup = float(out.split("with it x")[1].split()[0])
    assert speedup > 2.0  # 1 + .9 + .72 + .504 + .302 = 3.4 tokens per step at batch 1
    report = (tmp_path / "sim" / "report.md").read_text()
    assert "speculation.mean_acceptance_length" in report and "speculation.speedup" in report


def test_sweep_speculation_against_none(capsys):
    argv = "sweep --model llama-3.2-1b --hardware h100-sxm --serve --param speculative_method="
    argv += "none,ngram,eagle --spec-alpha 0.7 --num-requests 8 --max-num-seqs 2"
    argv += " --input-len fixed:128 --output-len fixed:100"
    assert main(["codesign", *argv.split()]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    rows = [dict(zip(header, line.split())) for line in lines[1:4]]
    assert rows[0]["accept_len"] == "-" and float(rows[1]["accept_len"]) > 2
    tok_s = [float(r["output_tok_s"]) for r in rows]
    assert tok_s[1] > tok_s[2] > tok_s[0]  # the head's own steps cost what lookups do not


SPEC_REFUSED = [
    ("--speculative-method ngram", "needs an acceptance profile"),
    ("--speculative-method ngram --spec-alpha 0.5 --spec-acceptance 0.5", "give one of"),
    ("--spec-alpha 0.5", "speculative_method is not set"),
    ("--speculative-method draft_model --spec-alpha 0.5", "needs draft_model"),
]


@pytest.mark.parametrize("flags,message", SPEC_REFUSED)
def test_speculation_settings_are_refused_with_a_reason(flags, message, capsys):
    argv = "simulate --model llama-3.2-1b --hardware h100-sxm --num-requests 2 " + flags
    assert main(["codesign", *argv.split()]) == 2
    assert message in capsys.readouterr().err


def test_sweep_grid_of_pass_lists_and_batch(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["codesign", "sweep", "--model", "llama-3-70b", "--hardware", "h100-sxm"]
    argv += ["--param", "passes=tp=4;tp=8,fuse_allreduce", "--param", "batch=1,64,256"]
    assert main([*argv, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["passes", "batch", "chips"] and "tokens_per_s_per_chip" in header
    rows = [dict(zip(header, line.split())) for line in lines[1:7]]
    assert lines[7].startswith("wrote") and [(r["passes"], r["batch"]) for r in rows] == [
        (p, b) for p in ("tp=4", "tp=8,fuse_allreduce") for b in ("1", "64", "256")
    ]
    assert len(list(csv.DictReader((out / "sweep.csv").open()))) == 6
    assert (out / "sweep.png").exists() and "# Sweep of passes x batch" in (
        out / "report.md"
    ).read_text()


def test_simulate_with_the_sharegpt_length_preset(capsys):
    argv = "simulate --model llama-3.2-1b --hardware h100-sxm --num-requests 20 --rate 50"
    assert main(["codesign", *argv.split(), "--length-preset", "sharegpt"]) == 0
    assert "requests 20" in capsys.readouterr().out
    assert main(["codesign", *argv.split(), "--length-preset", "alpaca"]) == 2
    assert "unknown length preset 'alpaca'" in capsys.readouterr().err
