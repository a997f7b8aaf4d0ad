"""The server's Prometheus metrics, in a registry of its own (never the process-global one), so
two apps in one process (tests) never share or collide.

Every metric here is updated by app.py; the KV and prefix-cache figures are read from the
engine when /metrics is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ponder_requests", "Requests by route, strategy and HTTP status",
            ["route", "strategy", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "ponder_request_latency_seconds", "Request latency", ["strategy"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "ponder_time_to_first_token_seconds", "Time to the first streamed content",
            ["strategy"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.generated = Counter(
            "ponder_generated_tokens", "Tokens generated (all branches)", ["strategy"], registry=r
        )
        self.prompt = Counter("ponder_prompt_tokens", "Prompt tokens", registry=r)
        self.cached = Counter(
            "ponder_cached_prompt_tokens", "Prompt tokens served from the prefix cache", registry=r
        )
        self.verifier_calls = Counter(
            "ponder_verifier_calls", "Candidates scored by verifiers", ["strategy"], registry=r
        )
        self.queue_depth = Gauge("ponder_queue_depth", "Requests waiting to run", registry=r)
        self.running = Gauge("ponder_running_requests", "Requests running", ["kind"], registry=r)
        self.kv_used = Gauge("ponder_kv_blocks_used", "KV blocks in use", registry=r)
        self.kv_total = Gauge("ponder_kv_blocks_total", "KV blocks in the pool", registry=r)
        self.hit_rate = Gauge(
            "ponder_prefix_cache_hit_rate", "Cached / all prompt tokens since start", registry=r
        )
        self._prompt_total = 0
        self._cached_total = 0

    def record_usage(self, strategy: str, stats: dict) -> None:
        self.generated.labels(strategy).inc(stats.get("generated_tokens", 0))
        self.verifier_calls.labels(strategy).inc(stats.get("verifier_calls", 0))
        self.prompt.inc(stats.get("prompt_tokens", 0))
        self.cached.inc(stats.get("cached_prompt_tokens", 0))
        self._prompt_total += stats.get("prompt_tokens", 0)
        self._cached_total += stats.get("cached_prompt_tokens", 0)

    def render(self, kv_stats) -> bytes:
        self.kv_used.set(kv_stats.used)
        self.kv_total.set(kv_stats.total)
        if self._prompt_total:
            self.hit_rate.set(self._cached_total / self._prompt_total)
        return generate_latest(self.registry)
