"""Prometheus metrics on the server's own registry (so tests and embedders never collide).

Per-request numbers (finish reasons, latencies, token counts) are observed once, when a request
finishes. Engine state (running, waiting, KV usage, preemptions) is read at scrape time from the
snapshot the engine thread publishes, so a scrape never touches the engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from intaglio.api.async_engine import EngineStats
from intaglio.engine.outputs import RequestOutput

_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
)  # fmt: skip
_TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
)  # fmt: skip


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield GaugeMetricFamily(
            "intaglio_num_requests_running", "Sequences running in the engine.", s.num_running
        )
        yield GaugeMetricFamily(
            "intaglio_num_requests_waiting", "Sequences waiting to be scheduled.", s.num_waiting
        )
        yield GaugeMetricFamily(
            "intaglio_kv_cache_usage_ratio", "Fraction of KV cache blocks in use.", s.kv_cache_usage
        )
        yield CounterMetricFamily(
            "intaglio_num_preemptions", "Preemptions since start.", s.num_preemptions
        )
        # Hit rate = hits / queries, in prompt tokens (vLLM's prefix_cache_* counters).
        yield CounterMetricFamily(
            "intaglio_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            s.prefix_cache_queries,
        )
        yield CounterMetricFamily(
            "intaglio_prefix_cache_hits",
            "Prompt tokens found in the prefix cache.",
            s.prefix_cache_hits,
        )
        # Speculative decoding, as vLLM names it: acceptance rate = accepted / draft tokens,
        # mean acceptance length = 1 + accepted / drafts.
        yield CounterMetricFamily(
            "intaglio_spec_decode_num_drafts",
            "Verification steps of one request with at least one draft token.",
            s.spec.num_drafts,
        )
        yield CounterMetricFamily(
            "intaglio_spec_decode_num_draft_tokens",
            "Draft tokens verified.",
            s.spec.num_draft_tokens,
        )
        yield CounterMetricFamily(
            "intaglio_spec_decode_num_accepted_tokens",
            "Draft tokens accepted.",
            s.spec.num_accepted_tokens,
        )
        per_position = CounterMetricFamily(
            "intaglio_spec_decode_num_accepted_tokens_per_pos",
            "Draft tokens accepted, by position in the draft.",
            labels=["position"],
        )
        for position, count in enumerate(s.spec.accepted_per_position):
            per_position.add_metric([str(position)], count)
        yield per_position


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "intaglio_requests",
            "Finished requests by finish reason (n > 1 counts each sample).",
            ["finish_reason"],
            registry=r,
        )
        self.prompt_tokens = Counter("intaglio_prompt_tokens", "Prompt tokens.", registry=r)
        self.generation_tokens = Counter(
            "intaglio_generation_tokens", "Generated tokens.", registry=r
        )
        self.ttft = Histogram(
            "intaglio_time_to_first_token_seconds",
            "Time to first token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "intaglio_time_per_output_token_seconds",
            "Mean time per output token after the first, per request.",
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "intaglio_e2e_request_latency_seconds",
            "End-to-end request latency inside the engine.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def attach_engine(self, stats: Callable[[], EngineStats]) -> None:
        self.registry.register(_EngineCollector(stats))

    def observe_finished(self, out: RequestOutput) -> None:
        for c in out.outputs:
            self.requests.labels(finish_reason=c.finish_reason or "unknown").inc()
        if out.error is not None:
            return
        self.prompt_tokens.inc(len(out.prompt_token_ids))
        num_generated = [len(c.token_ids) for c in out.outputs]
        self.generation_tokens.inc(sum(num_generated))
        m = out.metrics
        if m.time_to_first_token is not None:
            self.ttft.observe(m.time_to_first_token)
        if m.decode_time is not None and max(num_generated) > 1:
            self.tpot.observe(m.decode_time / (max(num_generated) - 1))
        if m.finished_time is not None:
            self.e2e.observe(m.finished_time - m.arrival_time)

    def render(self) -> bytes:
        return generate_latest(self.registry)
