"""Prometheus metrics every process exposes, and an in-process latency record for reports.

Histograms cover per-stage latency; counters cover inputs, drops, violations, and messages and
bytes per topic family; gauges cover queue depth and degrade level. ``serve(port, host)`` starts
the HTTP exporter, on loopback unless a deployment names another address (it has no
authentication, whatever the hub's CURVE keys); ``sensorium top`` reads the same numbers through
the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("sensorium.metrics")

SAMPLES_KEPT = 20000
"""Latency samples kept per stage for reports and ``sensorium top`` (the most recent)."""

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STALL_S = 0.25
"""A loop lag this long is logged (at most once every 10 s): something held every stage of the process."""
LAG_TICK_S = 0.025
"""How often the loop-lag probe asks to be woken: its lateness is what any ready callback waits."""


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
        self.loop_lag = Histogram(
            "sensorium_loop_lag_seconds",
            "How late the event loop woke a timer: what every callback of the process waited beyond its time",
            ["node"],
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.thread_cpu = Counter(
            "sensorium_thread_cpu_seconds_total",
            "CPU seconds by thread group: a stage's own threads, the event loop, library thread pools",
            ["node", "thread"],
            registry=self.registry,
        )
        # Recent raw samples for reports and `sensorium top` (Prometheus histograms lose them).
        self.samples: defaultdict[str, SampleRing] = defaultdict(SampleRing)
        self.lags = SampleRing(4096)
        """Recent loop-lag samples, seconds."""

    async def watch_loop(self, tick: float = LAG_TICK_S) -> None:
        """Measure the event loop's lag until cancelled: a timer due every ``tick``, and how late it fires.

        Anything that holds the loop (a blocking call on it) or the interpreter lock (library code on
        another thread that keeps it) shows up here, for every stage of the process at once.
        """
        loop = asyncio.get_running_loop()
        warned = -1e9
        while True:
            due = loop.time() + tick
            await asyncio.sleep(tick)
            lag = max(0.0, loop.time() - due)
            self.loop_lag.labels(self.node).observe(lag)
            self.lags.append(lag)
            if lag >= STALL_S and time.monotonic() - warned >= 10.0:
                warned = time.monotonic()
                log.warning("%s: the event loop was held %.2f s (every stage waited)", self.node, lag)

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


class SampleRing:
    """The last ``capacity`` float samples in memory taken up front, so a process's size does not creep.

    A ``deque(maxlen=…)`` of floats grows by a float object and a slot per sample until it is full: at
    a quiet stage's few samples a minute that is days of slow growth, which reads as a leak.
    """

    __slots__ = ("_buf", "_next", "total")

    def __init__(self, capacity: int = SAMPLES_KEPT) -> None:
        if capacity < 1:
            raise ValueError(f"sample ring capacity must be at least 1, got {capacity}")
        self._buf = array("d", bytes(8 * capacity))  # written now: every page is resident from the start
        self._next = 0
        self.total = 0
        """Samples appended since the start (also those no longer kept)."""

    @property
    def capacity(self) -> int:
        """Most samples kept."""
        return len(self._buf)

    def append(self, value: float) -> None:
        """Keep ``value``, forgetting the oldest sample when full."""
        self._buf[self._next] = value
        self._next = (self._next + 1) % len(self._buf)
        self.total += 1

    def last(self, n: int) -> list[float]:
        """The ``n`` most recent samples (fewer if fewer were kept), oldest first."""
        n = min(len(self), max(0, n))
        if n == 0:
            return []
        start = (self._next - n) % len(self._buf)
        if start < self._next:
            return self._buf[start : self._next].tolist()
        return (self._buf[start:] + self._buf[: self._next]).tolist()

    def since(self, mark: int) -> list[float]:
        """The kept samples appended after ``total`` was ``mark``, oldest first."""
        return self.last(self.total - mark)

    def __len__(self) -> int:
        return min(self.total, len(self._buf))

    def __bool__(self) -> bool:
        return self.total > 0

    def __iter__(self) -> Iterator[float]:
        return iter(self.last(len(self)))


class ThreadCpu:
    """CPU time of this process's threads, grouped: each stage's threads (named ``stage-<name>…``), the
    event loop (the thread that made this object), and the rest (library pools: OpenMP, ONNX Runtime,
    OpenVINO, BLAS, and threads of our own without a stage's name). Linux only; elsewhere empty."""

    def __init__(self) -> None:
        self._loop_tid = threading.get_native_id()
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last: dict[int, float] = self._read()
        self._last_t = time.monotonic()

    def _read(self) -> dict[int, float]:
        out = {}
        with contextlib.suppress(OSError):
            for tid in os.listdir("/proc/self/task"):
                with contextlib.suppress(OSError, ValueError):
                    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    out[int(tid)] = (int(fields[11]) + int(fields[12])) / self._tick
        return out

    def group(self, tid: int, names: dict[int, str]) -> str:
        """The group a thread counts in: ``loop``, a stage's name, or ``libraries``."""
        if tid == self._loop_tid:
            return "loop"
        name = names.get(tid, "")
        if name.startswith("stage-"):
            return name[6:].split("-", 1)[0].split("_", 1)[0]
        return "libraries"

    def sample(self) -> tuple[dict[str, float], float]:
        """CPU seconds per group since the last call, and the wall seconds it covers."""
        now, cur = time.monotonic(), self._read()
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        out: dict[str, float] = defaultdict(float)
        for tid, cpu in cur.items():
            out[self.group(tid, names)] += max(0.0, cpu - self._last.get(tid, 0.0))
        wall, self._last, self._last_t = now - self._last_t, cur, now
        return dict(out), wall


def percentile(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th (0–100) percentile of ``values`` by nearest rank; None for no values.

    The one definition every report, benchmark and ``sensorium top`` uses: the smallest value with at
    least ``p`` % of the values at or below it (``sorted(values)[ceil(p/100 · n) − 1]``, the first for
    p = 0). Always a value that was measured, never one interpolated between two: a p95 of 20 samples
    is the 19th smallest, and p50 of an even count is the lower middle, not the mean of the two middles.
    """
    xs = sorted(values)  # linear on an already sorted list
    if not xs:
        return None
    return xs[max(0, min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1))]


def percentiles(values: Iterable[float], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (``percentile``) of ``values`` as ``p50``… with ``max`` and ``n`` (empty → {})."""
    xs = sorted(values)
    if not xs:
        return {}
    out: dict[str, float] = {f"p{p:g}": percentile(xs, p) or 0.0 for p in ps}
    out["max"] = xs[-1]
    out["n"] = float(len(xs))
    return out


def summary(
    values: Iterable[float | None],
    ps: tuple[float, ...] = (50, 95),
    *,
    scale: float = 1.0,
    digits: int | None = None,
    suffix: str = "",
    extra: tuple[str, ...] = (),
) -> dict[str, float | int | None]:
    """``{"n": …, "p50<suffix>": …, "p95<suffix>": …}`` of ``values`` (None entries left out) for benchmark tables.

    Each value is multiplied by ``scale`` (1000: seconds → ms) and rounded to ``digits``; percentiles are
    ``percentile``'s (nearest rank), None when there are no values. ``extra`` adds ``"max"`` and/or ``"mean"``.
    """
    xs = sorted(v * scale for v in values if v is not None)

    def fmt(v: float | None) -> float | None:
        return None if v is None else (round(v, digits) if digits is not None else v)

    out: dict[str, float | int | None] = {"n": len(xs)}
    out |= {f"p{p:g}{suffix}": fmt(percentile(xs, p)) for p in ps}
    if "max" in extra:
        out[f"max{suffix}"] = fmt(xs[-1] if xs else None)
    if "mean" in extra:
        out[f"mean{suffix}"] = fmt(sum(xs) / len(xs) if xs else None)
    return out
