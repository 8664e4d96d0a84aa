"""The chaos run's verdict on a client's stream: duplicates, gaps, changed events and honest ``events_lost``."""

from __future__ import annotations

from typing import Any

from benchmarks.chaos import check_stream, percentile


def ev(seq: int, t: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "wake", "seq": seq, "time": float(seq) if t is None else t, "room": "kitchen", **extra}


def lost(first: int, last: int) -> dict[str, Any]:
    return {"type": "events_lost", "seq": last, "first_seq": first, "last_seq": last, "time": 0.0}


def test_every_number_once_in_order_is_clean() -> None:
    got = [ev(s) for s in range(1, 11)]
    r = check_stream(got, {}, {e["seq"]: e for e in got}, capacity=5)
    assert (r["duplicates"], r["gaps"], r["differ_from_log"], r["lost"]) == (0, 0, [], [])
    assert r["last_seq"] == 10


def test_duplicates_gaps_and_changed_events_are_counted() -> None:
    got = [ev(1), ev(2), ev(2), ev(5), ev(6, word="other")]
    logged = {s: ev(s) for s in range(1, 7)}
    r = check_stream(got, {}, logged, capacity=5)
    assert r["duplicates"] == 1 and r["gaps"] == 2 and r["differ_from_log"] == [6]


def test_events_lost_counts_only_where_the_log_really_rolled_over() -> None:
    # 100 events in a log of 10: the client held 1..3 and came back after 30 was numbered.
    logged = {s: ev(s, t=float(s)) for s in range(1, 101)}
    got = [ev(1), ev(2), ev(3), lost(4, 20), *(ev(s) for s in range(21, 101))]
    told = {20: 30.5}  # when the client wrote the events_lost item (30 = 20 + capacity was made at t=30)
    r = check_stream(got, told, logged, capacity=10)
    assert r["gaps"] == 0 and r["duplicates"] == 0
    assert r["lost"] == [{"first_seq": 4, "last_seq": 20, "contiguous": True, "rolled_over": True}]
    assert r["false_lost"] == 0
    # The same claim made at t=25, before the hub held ten events after 20: it dropped events it still had.
    r = check_stream(got, {20: 25.0}, logged, capacity=10)
    assert r["false_lost"] == 1 and not r["lost"][0]["rolled_over"]
    # A range that does not start where the client was: a silent gap before it.
    r = check_stream([ev(1), lost(5, 20), *(ev(s) for s in range(21, 31))], told, logged, capacity=10)
    assert r["false_lost"] == 1 and not r["lost"][0]["contiguous"]


def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 21)]
    assert percentile(xs, 50) == 10.0 and percentile(xs, 95) == 19.0 and percentile([], 50) is None
