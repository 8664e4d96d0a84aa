"""Prometheus metrics every process exposes, and an in-process latency record for reports.

Histograms cover per-stage latency; counters cover inputs, drops, violations, and messages and
bytes per topic family; gauges cover queue depth and degrade level. ``serve(port, host)`` starts
the HTTP exporter, on loopback unless a deployment names another address (it has no
authentication, whatever the hub's CURVE keys); ``sensorium top`` reads the same numbers through
the hub.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class Metrics:
    """One process's metrics (its own registry, so several in-process nodes do not collide)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        labels = ["node", "stage"]
        self.latency = Histogram(
            "sensorium_stage_latency_seconds",
            "Latency from input capture to stage output",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.inputs = Counter("sensorium_stage_inputs_total", "Inputs handled", labels, registry=self.registry)
        self.dropped = Counter(
            "sensorium_stage_dropped_total", "Inputs dropped (late or superseded)", labels, registry=self.registry
        )
        self.violations = Counter(
            "sensorium_stage_budget_violations_total", "Budget violations", labels, registry=self.registry
        )
        self.errors = Counter("sensorium_stage_errors_total", "Inputs rejected", labels, registry=self.registry)
        self.queue = Gauge("sensorium_stage_queue_depth", "Inputs waiting", labels, registry=self.registry)
        self.level = Gauge("sensorium_stage_degrade_level", "Degrade steps applied", labels, registry=self.registry)
        self.messages = Counter(
            "sensorium_bus_messages_total",
            "Messages by topic family",
            ["node", "kind", "direction"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "sensorium_bus_bytes_total", "Bytes by topic family", ["node", "kind", "direction"], registry=self.registry
        )
        # Recent raw samples for reports and `sensorium top` (Prometheus histograms lose them).
        self.samples: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=20000))

    def observe(self, stage: str, seconds: float) -> None:
        """Record one latency sample."""
        self.latency.labels(self.node, stage).observe(seconds)
        self.samples[stage].append(seconds)

    def count_message(self, topic: bytes, size: int, direction: str) -> None:
        """Count a message and its bytes under its topic family."""
        kind = topic.split(b"/", 1)[0].decode(errors="replace")
        self.messages.labels(self.node, kind, direction).inc()
        self.bytes.labels(self.node, kind, direction).inc(size)

    def serve(self, port: int, host: str = "127.0.0.1") -> object | None:
        """Expose the metrics over HTTP on ``host:port`` (port 0 = do nothing); returns the server."""
        if not port:
            return None
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server


def percentiles(values: list[float] | deque[float], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of ``values`` (empty → {})."""
    if not values:
        return {}
    xs = sorted(values)
    out = {}
    for p in ps:
        k = max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))  # nearest rank
        out[f"p{p:g}"] = xs[k]
    out["max"] = xs[-1]
    out["n"] = float(len(xs))
    return out
