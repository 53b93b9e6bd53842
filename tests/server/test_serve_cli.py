"""`intaglio serve` as a real process (SIGTERM drains it), and `intaglio bench serve` end to end."""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from intaglio.cli.serve import register, register_bench

# Until cli/main.py wires these in, build the same parser shape here.
RUNNER = (
    "import argparse, sys; from intaglio.cli.serve import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers(dest='command')); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


def _lines(stream, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def test_serve_process_drains_on_sigterm(model_path: str) -> None:
    cmd = [sys.executable, "-c", RUNNER, "serve", "--model", model_path, "--port", "0"]
    cmd += ["--dtype", "float32", "--num-threads", "1", "--served-model-name", "m"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if m := re.search(r"running on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        body = {"model": "m", "prompt": "a", "max_tokens": 500, "ignore_eos": True, "stream": True}
        with (
            httpx.Client(base_url=url, timeout=30) as c,
            c.stream("POST", "/v1/completions", json=body) as r,
        ):
            it = r.iter_lines()
            next(x for x in it if x.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            rest = [x for x in it if x.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        last = json.loads(rest[-2][len("data: ") :])
        assert last["choices"][0]["finish_reason"] == "length"  # drained, not cut off
        # uvicorn re-raises the signal once drained, so the exit status says "terminated"
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bench_serve_smoke(model_path: str, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    bench = parser.add_subparsers().add_parser("bench").add_subparsers()
    register_bench(bench)
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            *"bench serve --dtype float32 --num-threads 1 --num-prompts 12".split(),
            *"--request-rate 200 --input-len 16 --output-len 8 --dataset shared-prefix".split(),
            *"--prefix-len 8 --num-prefixes 2 --slo-ttft-ms 60000 --slo-tpot-ms 60000".split(),
            "--model",
            model_path,
            "--json-out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["num_completed"] == 12 and result["num_failed"] == 0
    assert result["output_tok_s"] > 0 and result["goodput"] == result["request_throughput"]
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert 0 < result[key]["p50"] <= result[key]["p99"]
    assert "TTFT" in capsys.readouterr().out


def test_bench_refuses_non_loopback(capsys) -> None:
    parser = argparse.ArgumentParser()
    register_bench(parser.add_subparsers())
    args = parser.parse_args(["serve", "--base-url", "http://192.0.2.1:8000"])
    assert args.func(args) == 2
    assert "loopback" in capsys.readouterr().err


def test_serve_rejects_a_missing_model(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", str(tmp_path / "nope")])
    assert args.func(args) == 2
    assert "not found" in capsys.readouterr().err
