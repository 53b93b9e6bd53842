"""`intaglio serve` as a real process (SIGTERM drains it), and `intaglio bench serve` end to end."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

import httpx
from serverkit import serve_process, wait_until

from intaglio.bench.serve import RequestResult, summarize
from intaglio.cli.serve import register, register_bench


def test_serve_process_drains_on_sigterm(model_path: str) -> None:
    with serve_process(model_path) as server:
        # 16 samples of 500 tokens: long enough that the drain outlasts the checks below.
        body = {"prompt": "a", "max_tokens": 500, "n": 16, "ignore_eos": True, "stream": True}
        with (
            httpx.Client(base_url=server.url, timeout=30) as c,
            c.stream("POST", "/v1/completions", json=body) as r,
        ):
            it = r.iter_lines()
            next(x for x in it if x.startswith("data: "))
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: httpx.get(f"{server.url}/health").status_code == 503)
            # Still listening while it drains: a new request is told to go elsewhere.
            late = httpx.post(f"{server.url}/v1/completions", json={"prompt": "b"})
            assert late.status_code == 503 and late.headers["retry-after"] == "1"
            rest = [x for x in it if x.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        last = json.loads(rest[-2][len("data: ") :])
        assert last["choices"][0]["finish_reason"] == "length"  # drained, not cut off
        # uvicorn re-raises the signal once drained, so the exit status says "terminated"
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_bench_serve_smoke(model_path: str, tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    bench = parser.add_subparsers().add_parser("bench").add_subparsers()
    register_bench(bench)
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            *"bench serve --dtype float32 --num-threads 1 --num-prompts 12".split(),
            *"--request-rate 200 --input-len 16 --output-len 8 --dataset shared-prefix".split(),
            # No request over HTTP sees its first token within a microsecond: all miss the SLO.
            *"--prefix-len 8 --num-prefixes 2 --slo-ttft-ms 0.001 --slo-tpot-ms 60000".split(),
            "--model",
            model_path,
            "--json-out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["num_completed"] == 12 and result["num_failed"] == 0
    assert result["output_tok_s"] > 0 and result["request_throughput"] > 0
    assert result["goodput"] == 0.0
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert 0 < result[key]["p50"] <= result[key]["p99"]
    assert "TTFT" in capsys.readouterr().out


def test_goodput_counts_only_requests_meeting_every_slo() -> None:
    def done(ttft_s: float, e2e_s: float, tokens: int = 11) -> RequestResult:
        return RequestResult(True, 4, output_tokens=tokens, ttft_s=ttft_s, e2e_s=e2e_s)

    results = [
        done(0.05, 0.05 + 10 * 0.01),  # meets both: TTFT 50 ms, TPOT 10 ms
        done(0.50, 0.50 + 10 * 0.01),  # TTFT too slow
        done(0.05, 0.05 + 10 * 0.05),  # TPOT too slow
        done(0.05, 0.05, tokens=1),  # one token: no TPOT, so only TTFT counts (met)
        RequestResult(ok=False, prompt_len=4, error="HTTP 500"),  # failed: never good
    ]
    slo = argparse.Namespace(slo_ttft_ms=100.0, slo_tpot_ms=20.0)
    s = summarize(results, 2.0, slo)
    assert s["request_throughput"] == 4 / 2.0 and s["goodput"] == 2 / 2.0
    no_slo = summarize(results, 2.0, argparse.Namespace(slo_ttft_ms=None, slo_tpot_ms=None))
    assert no_slo["goodput"] == no_slo["request_throughput"]


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
