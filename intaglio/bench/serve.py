"""`intaglio bench serve`: online serving benchmark over the OpenAI completions API.

Requests stream from a client that issues them with Poisson arrivals at --request-rate (or all
at once), optionally capped at --max-concurrency in flight, until --num-prompts have been sent
or --duration has passed. Prompts are token ids cut from random English-like text the server
tokenizes once (exact input lengths), either all different (`random`) or sharing one of a few
prefixes (`shared-prefix`). EOS is ignored so every request produces its output length.

Reported: request and token throughput; TTFT, TPOT (per request, after the first token), ITL
(between streamed chunks) and end-to-end latency at mean/p50/p90/p99; goodput, the rate of
requests that met every SLO given (--slo-ttft-ms, --slo-tpot-ms).

    intaglio bench serve --model /path/to/hf-folder --num-prompts 200 --request-rate 8
    intaglio serve --model M &  intaglio bench serve --base-url http://127.0.0.1:8000 \
        --dataset shared-prefix --max-concurrency 32 --slo-ttft-ms 500 --slo-tpot-ms 50

Without --base-url the server runs in this process on a background thread, which shares the
GIL with the client: fine for smoke tests, but measure against a separate `intaglio serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from intaglio.server.names import LOOPBACK, default_model_name

logger = logging.getLogger(__name__)

_WORDS = (
    "the of and to in is it that for on with as was at by be this from or have not are but "
    "model token cache block batch request server engine stream layer value key query head "
    "time data file line code list read write open close start stop run test build make "
    "red blue green small large fast slow early late first last new old good long short"
).split()


def add_serve_bench_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("serving benchmark")
    g.add_argument("--base-url", help="a running server on loopback (default: start one here)")
    g.add_argument("--dataset", choices=["random", "shared-prefix"], default="random")
    g.add_argument("--num-prompts", type=int, default=100, help="requests to send (default 100)")
    g.add_argument("--duration", type=float, help="stop sending new requests after S seconds")
    g.add_argument(
        "--request-rate",
        type=float,
        default=math.inf,
        help="mean requests per second, Poisson arrivals (default inf: all at once)",
    )
    g.add_argument("--max-concurrency", type=int, help="most requests in flight at once")
    g.add_argument(
        "--input-len",
        type=int,
        default=128,
        help="prompt tokens, after the shared prefix if any (default 128)",
    )
    g.add_argument("--output-len", type=int, default=128, help="output tokens (default 128)")
    g.add_argument(
        "--range-ratio",
        type=float,
        default=0.0,
        help="draw lengths uniformly in [L*(1-r), L*(1+r)] (default 0: fixed)",
    )
    g.add_argument("--prefix-len", type=int, default=64, help="shared-prefix: prefix tokens")
    g.add_argument("--num-prefixes", type=int, default=4, help="shared-prefix: distinct prefixes")
    g.add_argument("--slo-ttft-ms", type=float, help="goodput SLO on time to first token")
    g.add_argument("--slo-tpot-ms", type=float, help="goodput SLO on time per output token")
    g.add_argument("--json-out", help="also write the results as JSON here")


@dataclass
class BenchRequest:
    prompt_token_ids: list[int]
    output_len: int


@dataclass
class RequestResult:
    ok: bool
    prompt_len: int
    output_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


# ---------------------------------------------------------------- workload
def _lengths(mean: int, ratio: float, n: int, rng: np.random.Generator) -> list[int]:
    lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
    return [int(x) for x in rng.integers(lo, hi + 1, size=n)]


def build_workload(
    corpus_ids: list[int], args: argparse.Namespace, rng: np.random.Generator
) -> list[BenchRequest]:
    """Prompts as slices of one tokenized random text, so input lengths are exact."""
    n = args.num_prompts

    def piece(length: int) -> list[int]:
        start = int(rng.integers(0, len(corpus_ids)))
        doubled = corpus_ids + corpus_ids  # wrap around instead of running off the end
        return doubled[start : start + length]

    inputs = _lengths(args.input_len, args.range_ratio, n, rng)
    outputs = _lengths(args.output_len, args.range_ratio, n, rng)
    prefixes: list[list[int]] = []
    if args.dataset == "shared-prefix":
        prefixes = [piece(args.prefix_len) for _ in range(args.num_prefixes)]
    return [
        BenchRequest(
            (prefixes[i % len(prefixes)] if prefixes else []) + piece(inputs[i]), outputs[i]
        )
        for i in range(n)
    ]


def random_text(num_words: int, rng: np.random.Generator) -> str:
    return " ".join(rng.choice(_WORDS, size=num_words).tolist())


# ---------------------------------------------------------------- client
async def send_one(
    client: httpx.AsyncClient, model: str, req: BenchRequest, temperature: float
) -> RequestResult:
    body = {
        "model": model,
        "prompt": req.prompt_token_ids,
        "max_tokens": req.output_len,
        "ignore_eos": True,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = RequestResult(ok=False, prompt_len=len(req.prompt_token_ids))
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                result.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "error")
                    return result
                now = time.perf_counter()
                if chunk.get("choices"):
                    if result.ttft_s is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
                if chunk.get("usage"):
                    result.output_tokens = int(chunk["usage"]["completion_tokens"])
        result.e2e_s = time.perf_counter() - start
        result.ok = result.ttft_s is not None
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def run_load(
    base_url: str,
    model: str,
    workload: list[BenchRequest],
    args: argparse.Namespace,
    temperature: float = 0.0,
) -> tuple[list[RequestResult], float]:
    rng = np.random.default_rng(_seed(args) + 1)
    limit = asyncio.Semaphore(args.max_concurrency or len(workload) or 1)
    timeout = httpx.Timeout(None, connect=30.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def limited(req: BenchRequest) -> RequestResult:
            async with limit:
                return await send_one(client, model, req, temperature)

        # One short request first, so connection setup and first-call costs stay out.
        await send_one(client, model, BenchRequest(workload[0].prompt_token_ids[:8], 4), 0.0)
        start = time.perf_counter()
        tasks = []
        for req in workload:
            if args.duration is not None and time.perf_counter() - start >= args.duration:
                break
            tasks.append(asyncio.create_task(limited(req)))
            if math.isfinite(args.request_rate):
                await asyncio.sleep(float(rng.exponential(1.0 / args.request_rate)))
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - start


# ---------------------------------------------------------------- report
def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(values) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(
    results: list[RequestResult], elapsed_s: float, args: argparse.Namespace
) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_len for r in ok)

    def meets_slo(r: RequestResult) -> bool:
        ttft_ok = args.slo_ttft_ms is None or (r.ttft_s or 0) * 1000 <= args.slo_ttft_ms
        tpot = r.tpot_s
        tpot_ok = args.slo_tpot_ms is None or tpot is None or tpot * 1000 <= args.slo_tpot_ms
        return ttft_ok and tpot_ok

    errors = [r.error for r in results if not r.ok]
    return {
        "num_sent": len(results),
        "num_completed": len(ok),
        "num_failed": len(errors),
        "first_errors": errors[:3],
        "elapsed_s": elapsed_s,
        "request_throughput": len(ok) / elapsed_s if elapsed_s else 0.0,
        "output_tok_s": out_tokens / elapsed_s if elapsed_s else 0.0,
        "total_tok_s": (in_tokens + out_tokens) / elapsed_s if elapsed_s else 0.0,
        "goodput": sum(map(meets_slo, ok)) / elapsed_s if elapsed_s else 0.0,
        "slo": {"ttft_ms": args.slo_ttft_ms, "tpot_ms": args.slo_tpot_ms},
        "ttft_ms": _dist([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": _dist([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": _dist([x for r in ok for x in r.itl_s]),
        "e2e_ms": _dist([r.e2e_s for r in ok if r.e2e_s is not None]),
    }


def format_report(s: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    lines = [
        f"requests: {s['num_completed']} completed, {s['num_failed']} failed, "
        f"in {s['elapsed_s']:.2f} s",
        f"request throughput   {s['request_throughput']:.2f} req/s",
        f"output throughput    {s['output_tok_s']:.1f} tok/s",
        f"total throughput     {s['total_tok_s']:.1f} tok/s",
        f"goodput              {s['goodput']:.2f} req/s  (SLO ttft<={f(s['slo']['ttft_ms'])} ms,"
        f" tpot<={f(s['slo']['tpot_ms'])} ms)",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for key, label in (
        ("ttft_ms", "TTFT"),
        ("tpot_ms", "TPOT"),
        ("itl_ms", "ITL"),
        ("e2e_ms", "E2E"),
    ):
        d = s[key]
        lines.append(
            f"{label:<14}" + "".join(f"{f(d[k]):>10}" for k in ("mean", "p50", "p90", "p99"))
        )
    lines += [f"error: {e}" for e in s["first_errors"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- driver
def _seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else 0


@contextmanager
def _target(args: argparse.Namespace, engine_args: dict[str, Any]) -> Iterator[str]:
    """The server's base URL: --base-url, or a server started here for --model with
    `engine_args` (EngineConfig fields)."""
    if args.base_url:
        host = urlparse(args.base_url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"--base-url must be on loopback ({', '.join(LOOPBACK)}), got {host}")
        yield args.base_url.rstrip("/")
        return
    from intaglio.api.async_engine import AsyncEngine
    from intaglio.server.app import build_app
    from intaglio.server.launch import background_server

    engine = AsyncEngine.from_model(args.model, **engine_args)
    app = build_app(engine, default_model_name(args.model))
    with background_server(app, engine) as (url, _):
        yield url


def run_serve_benchmark(
    args: argparse.Namespace, engine_args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the benchmark `args` describe; `engine_args` configure a server started here."""
    if args.num_prompts < 1 or args.num_prefixes < 1:
        raise ValueError("--num-prompts and --num-prefixes must be at least 1")
    rng = np.random.default_rng(_seed(args))
    with _target(args, engine_args or {}) as url:
        with httpx.Client(base_url=url, timeout=60.0) as c:
            card = c.get("/v1/models").raise_for_status().json()["data"][0]
            longest = max(args.input_len, args.prefix_len) * 2 + 64
            corpus = (
                c.post(
                    "/tokenize",
                    json={"prompt": random_text(longest * 2, rng), "add_special_tokens": False},
                )
                .raise_for_status()
                .json()["tokens"]
            )
        workload = build_workload(corpus, args, rng)
        too_long = [
            r for r in workload if len(r.prompt_token_ids) + r.output_len > card["max_model_len"]
        ]
        if too_long:
            raise ValueError(
                f"{len(too_long)} requests exceed max_model_len {card['max_model_len']}; "
                "lower --input-len/--output-len/--prefix-len"
            )
        results, elapsed = asyncio.run(run_load(url, card["id"], workload, args))
    summary = summarize(results, elapsed, args)
    summary["workload"] = {
        k: getattr(args, k)
        for k in ("dataset", "num_prompts", "duration", "request_rate", "max_concurrency",
                  "input_len", "output_len", "range_ratio", "prefix_len", "num_prefixes")
    }  # fmt: skip
    summary["workload"]["request_rate"] = str(args.request_rate)  # inf is not JSON
    summary["model"] = card["id"]
    print(format_report(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    return summary
