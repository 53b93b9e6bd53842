"""`intaglio serve` (the OpenAI-compatible server) and `intaglio bench serve` (its load test).

Heavy imports (FastAPI, uvicorn, the model) happen only when a command runs, so building the
parser for `intaglio generate` stays cheap.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from intaglio.cli.args import add_engine_flags, engine_args
from intaglio.sampling.pooling import POOLING_TYPES
from intaglio.server.names import LOOPBACK, default_model_name

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add `serve` to the `intaglio` subcommands."""
    p = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models, "
        "/tokenize, /detokenize, /health and /metrics. Every EngineConfig field is a flag.",
    )
    add_server_flags(p)
    add_engine_flags(p)
    p.set_defaults(func=run_serve)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    g.add_argument(
        "--api-key",
        default=os.environ.get("INTAGLIO_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every route but /health (default: "
        "$INTAGLIO_API_KEY; prefer it: a flag shows in the process list)",
    )
    g.add_argument(
        "--open-metrics",
        action="store_true",
        help="with an API key, still serve /metrics without it (to a Prometheus scraper)",
    )
    g.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a request body may take to arrive before a 408 closes it (default 30)",
    )
    g.add_argument(
        "--pooling",
        default="last",
        choices=POOLING_TYPES,
        help="how /v1/embeddings pools the model's final hidden states: the last token's "
        "(default, as vLLM serves decoder models) or their mean; vectors are unit length "
        "unless a request sets normalize: false",
    )
    g.add_argument(
        "--served-model-name",
        default=None,
        help="the model name clients send and /v1/models lists (default: the --model value)",
    )
    g.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds in-flight requests may take to finish (default 30)",
    )
    g.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (debug also logs every request)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from intaglio.api.async_engine import AsyncEngine
    from intaglio.server.app import build_app
    from intaglio.server.launch import serve

    if args.host not in LOOPBACK and not args.api_key:
        logger.warning(
            "serving on %s without --api-key: anyone who can reach it may use it", args.host
        )
    try:
        engine = AsyncEngine.from_model(args.model, **engine_args(args))
    except ValueError as e:  # bad flags or a model folder that cannot be loaded
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = args.served_model_name or default_model_name(args.model)
    app = build_app(
        engine,
        name,
        api_key=args.api_key,
        open_metrics=args.open_metrics,
        body_timeout_s=args.body_timeout,
        pooling=args.pooling,
    )
    serve(app, engine, args.host, args.port, args.graceful_timeout, args.log_level)
    return 0


def register_bench(bench_subparsers: Any) -> None:
    """Add `serve` to the `intaglio bench` subcommands."""
    from intaglio.bench.serve import add_serve_bench_flags

    p = bench_subparsers.add_parser(
        "serve",
        help="online serving benchmark: TTFT, TPOT, ITL, throughput, goodput",
        description="Load a server with streaming completions (Poisson arrivals or a fixed "
        "concurrency). Targets --base-url on loopback, or starts a server in-process for "
        "--model (engine flags apply then).",
    )
    add_serve_bench_flags(p)
    add_engine_flags(p)
    p.set_defaults(func=run_bench_serve)


def run_bench_serve(args: argparse.Namespace) -> int:
    from intaglio.bench.serve import run_serve_benchmark

    try:
        run_serve_benchmark(args, engine_args(args))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
