"""The one place that owns excise's Prometheus registry.

Metric and label names are module constants so deployment files (alerts,
dashboards, autoscaler rules) can be checked against the code. vLLM's own
engine metrics are re-exported from the same `/metrics` endpoint: vLLM
registers them in prometheus_client's global registry and unregisters the
previous engine's collectors whenever another engine starts, so the collectors
of each engine are captured after it starts and merged per metric family here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import Metric

# `*_created` series double the exposition for no use here (vLLM's included).
disable_created_metrics()

PREFIX = "excise_"
LABELS = ("variant", "experiment", "endpoint", "status")
NO_EXPERIMENT = ""

# Latencies on CPU reach tens of seconds; on GPUs a few ms matter.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)
TOXICITY_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(PREFIX + "requests", "Finished API requests.", LABELS, registry=r)
        self.latency = Histogram(
            PREFIX + "request_latency_seconds", "End-to-end request latency.", LABELS, buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time from request arrival to the first generated token.",
            LABELS[:3],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens processed.", LABELS[:3], registry=r)
        self.output_tokens = Counter(PREFIX + "output_tokens", "Tokens generated.", LABELS[:3], registry=r)
        self.in_flight = Gauge(PREFIX + "requests_in_flight", "Generation requests being served.", ("endpoint",), registry=r)
        self.rejected = Counter(
            PREFIX + "requests_rejected", "Requests refused before generation (auth, limits, overload).",
            ("endpoint", "status"), registry=r,
        )
        self.toxicity = Histogram(
            PREFIX + "output_toxicity", "Toxicity score of generated outputs (alt-profanity-check).",
            ("variant", "experiment"), buckets=TOXICITY_BUCKETS, registry=r,
        )
        self.toxic_outputs = Counter(
            PREFIX + "toxic_outputs", "Outputs scored at or above the toxicity threshold.", ("variant", "experiment"), registry=r
        )
        self.toxicity_skipped = Counter(
            PREFIX + "toxicity_skipped", "Outputs not scored because the scoring queue was full.", registry=r
        )
        self.engines_ready = Gauge(PREFIX + "engines_ready", "1 once every engine has loaded.", registry=r)
        self.vllm = VllmCollector()
        r.register(self.vllm)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def metric_names(self) -> list[str]:
        """Exposed family names (without _total/_bucket suffixes), for deploy checks."""
        return sorted(m.name for m in self.registry.collect() if m.name.startswith(PREFIX))


class VllmCollector:
    """Merges the `vllm:` metric families of every engine started in this process."""

    def __init__(self) -> None:
        self._collectors: list[object] = []
        self._lock = threading.Lock()

    def capture(self) -> int:
        """Take over the vLLM collectors the most recently started engine registered."""
        found = [c for c in list(GLOBAL_REGISTRY._collector_to_names) if getattr(c, "_name", "").startswith("vllm:")]
        with self._lock:
            known = {id(c) for c in self._collectors}
            self._collectors.extend(c for c in found if id(c) not in known)
        return len(found)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        with self._lock:
            collectors = list(self._collectors)
        for collector in collectors:
            for metric in collector.collect():
                merged = families.get(metric.name)
                if merged is None:
                    families[metric.name] = merged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                merged.samples.extend(metric.samples)
        return families.values()
