"""In-process latency record: a quiet stage's samples must not make the process creep, and reports stay right."""

from __future__ import annotations

import gc
import tracemalloc
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from sensorium.pipeline.metrics import SAMPLES_KEPT, Metrics, SampleRing, percentile, percentiles, summary


def test_a_stage_observing_for_hours_holds_no_more_memory_than_at_start() -> None:
    # A soak found the worker growing ~50 KB per loop: each latency sample added a float and a deque slot
    # until 20000 were kept, which takes a quiet stage days.
    m = Metrics("worker")
    for name in ("speaker", "face", "presence"):
        m.observe(name, 0.1)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(SAMPLES_KEPT // 2):
            for name in ("speaker", "face", "presence"):
                m.observe(name, 0.1 + i * 1e-6)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"metrics grew by {grown / 1024:.0f} KiB over 30000 samples"
    assert len(m.samples["speaker"]) == SAMPLES_KEPT // 2 + 1


def test_replay_marks_still_count_once_the_ring_is_full() -> None:
    m = Metrics("worker")
    for _ in range(SAMPLES_KEPT + 5):
        m.observe("wake", 0.2)
    mark = m.samples["wake"].total
    for v in (0.01, 0.02, 0.03):
        m.observe("wake", v)
    assert m.samples["wake"].since(mark) == [0.01, 0.02, 0.03]
    assert len(m.samples["wake"]) == SAMPLES_KEPT
    assert m.samples["wake"].last(2) == [0.02, 0.03]


def test_percentiles_of_an_empty_and_a_filled_ring() -> None:
    ring = SampleRing(4)
    assert percentiles(ring) == {} and not ring
    for v in (5.0, 1.0, 3.0, 2.0, 4.0):  # 5.0 falls out
        ring.append(v)
    assert percentiles(ring, (50,)) == {"p50": 2.0, "max": 4.0, "n": 4.0}


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80),
    st.floats(0, 100, allow_nan=False),
)
def test_percentile_is_a_measured_value_with_p_percent_at_or_below(values: list[float], p: float) -> None:
    v = percentile(values, p)
    assert v in values  # never interpolated
    n = len(values)
    at_or_below = sum(x <= v for x in values)
    below = sum(x < v for x in values)
    assert at_or_below >= p / 100 * n - 1e-9  # at least p % at or below it …
    assert below < max(p / 100 * n, 1)  # … and it is the smallest such value


def test_percentile_by_hand_and_the_benchmark_summary() -> None:
    xs = [float(i) for i in range(1, 21)]  # 1..20
    assert percentile(xs, 50) == 10.0 and percentile(xs, 95) == 19.0 and percentile(xs, 100) == 20.0
    assert percentile([4.0, 1.0], 50) == 1.0  # the lower middle, not their mean
    assert percentile([], 50) is None
    assert summary([0.0101, None, 0.0304, 0.02], scale=1000, digits=1, suffix="_ms", extra=("max",)) == {
        "n": 3,
        "p50_ms": 20.0,
        "p95_ms": 30.4,
        "max_ms": 30.4,
    }
    assert summary([]) == {"n": 0, "p50": None, "p95": None}


@given(st.integers(1, 12), st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=60))
def test_ring_keeps_what_a_bounded_deque_keeps(capacity: int, values: list[float]) -> None:
    ring, model = SampleRing(capacity), deque(maxlen=capacity)
    for i, v in enumerate(values):
        ring.append(v)
        model.append(v)
        assert list(ring) == list(model)
        assert ring.total == i + 1
        for n in (0, 1, capacity // 2, capacity, capacity + 3):
            assert ring.last(n) == (list(model)[-n:] if n else [])
        for mark in (0, i - 2, i + 1):
            assert ring.since(mark) == list(model)[len(model) - min(len(model), max(0, i + 1 - mark)) :]
