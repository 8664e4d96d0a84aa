"""The replay report: latency table, accuracy against labels, plots, and the regression gate's verdicts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.evaluation.replay import TimeMap
from sensorium.evaluation.report import (
    RunResult,
    StageRun,
    compare,
    format_table,
    make_report,
    normalize_text,
    plot,
    wer,
)
from sensorium.evaluation.session import PeopleLabel, SpeechLabel
from sensorium.pipeline.messages import (
    BudgetViolation,
    Detections,
    Presence,
    SpeakerIdentified,
    Transcript,
    WakeDetected,
)


def negative_latencies(report: dict) -> list[str]:
    """Every latency of a report (or the demo's summary) below zero, named by where it is."""
    bad: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and (k.endswith("_ms") or k[:1] == "p"):
                    if k not in ("budget_ms",) and v < 0:
                        bad.append(f"{where}.{k} = {v}")
                else:
                    walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(report, "report")
    return bad


T0 = 1000.0  # session time of the labels; the run's stamps are T0 + SHIFT
SHIFT = 500.0


def _labels() -> list:
    return [
        SpeechLabel(
            room="kitchen", node="k", t0=T0 + 1, t1=T0 + 3, wake="hey_jarvis", text="turn on the lights", speaker="joe"
        ),
        SpeechLabel(
            room="hall", node="h", t0=T0 + 5, t1=T0 + 7, wake="hey_jarvis", text="play some jazz", speaker="sara"
        ),
        SpeechLabel(
            room="kitchen", node="k", t0=T0 + 9, t1=T0 + 11, wake="hey_jarvis", text="set a timer", speaker="rob"
        ),
        SpeechLabel(room="kitchen", node="k", t0=T0 + 13, t1=T0 + 14, wake="", text="the soup is hot", speaker="joe"),
        PeopleLabel(room="hall", camera="cam", t0=T0, t1=T0 + 10, persons=2, people=["tom"]),
    ]


def _run() -> RunResult:
    s = SHIFT + T0
    ev: list = [
        # kitchen command 1: heard, transcribed with a wake prefix, speaker right
        WakeDetected(time=s + 1.6, room="kitchen", word="hey_jarvis", score=0.9),
        Transcript(
            time=s + 3.2,
            room="kitchen",
            final=True,
            text="Hey Jarvis, turn on the lights.",
            t0=s + 1.0,
            t1=s + 3.1,
            utterance_id="u1",
        ),
        SpeakerIdentified(time=s + 3.3, room="kitchen", person="joe", utterance_id="u1", score=0.8),
        # hall command: wake heard, one word wrong, speaker wrong
        WakeDetected(time=s + 5.5, room="hall", word="hey_jarvis", score=0.8),
        Transcript(
            time=s + 7.2, room="hall", final=True, text="play some jess", t0=s + 5.0, t1=s + 7.0, utterance_id="u2"
        ),
        SpeakerIdentified(time=s + 7.3, room="hall", person="unknown", utterance_id="u2", score=0.3),
        # kitchen command 2: missed entirely; the no-wake sentence fires a false alarm
        WakeDetected(time=s + 13.5, room="kitchen", word="hey_jarvis", score=0.6),
        # presence: tom seen in the hall (right), a wrong person in the hall, and a "left" (ignored)
        Presence(time=s + 2.0, room="hall", person="tom", state="entered", confidence=0.9),
        Presence(time=s + 4.0, room="hall", person="joe", state="entered", confidence=0.5),
        Presence(time=s + 20.0, room="hall", person="tom", state="left"),
        Detections(time=s + 1.0, room="hall", camera="cam", persons=2),
        Detections(time=s + 2.0, room="hall", camera="cam", persons=1),
        BudgetViolation(time=s + 3.2, stage="stt", budget_ms=300, actual_ms=450, action="degraded:no-partials"),
    ]
    events = [(m.time + 0.1, m) for m in ev]
    stages = {
        "wake": StageRun(samples_ms=[float(x) for x in range(1, 101)], budget_ms=300.0, device="cpu"),
        "stt": StageRun(
            samples_ms=[200.0, 250.0, 450.0], budget_ms=300.0, violations=1, ladder=["degraded:no-partials"]
        ),
    }
    return RunResult(
        events=events,
        to_session=lambda t: t - SHIFT,
        stages=stages,
        info={"session": "t", "speed": 1.0, "session_start": T0},
    )


def test_text_normalization_and_wer() -> None:
    assert normalize_text("Hey Jarvis, turn ON the lights!") == "turn on the lights"
    assert normalize_text("hey jarvis what's up", strip_wake=False) == "hey jarvis what's up"
    assert normalize_text("Set a timer for 10 minutes, or 45.") == "set a timer for ten minutes or forty five"
    assert wer(["turn on the lights"], ["turn on the lights"]) == 0.0
    assert wer(["play some jazz"], ["play some jess"]) == pytest.approx(1 / 3)
    assert wer(["a b c d"], [""]) == 1.0


def test_stage_table_from_runtime_samples() -> None:
    rep = make_report(_run(), _labels())
    wake = rep["stages"]["wake"]
    assert wake["count"] == 100 and wake["p50_ms"] == 50.0 and wake["p95_ms"] == 95.0 and wake["p99_ms"] == 99.0
    assert wake["max_ms"] == 100.0 and wake["budget_ms"] == 300.0
    stt = rep["stages"]["stt"]
    assert stt["violations"] == 1 and stt["ladder"] == ["degraded:no-partials"] and stt["max_ms"] == 450.0


def test_accuracy_against_labels() -> None:
    acc = make_report(_run(), _labels())["accuracy"]
    assert acc["wake"] == {
        "labelled": 3,
        "hits": 2,
        "misses": 1,
        "false_alarms": 1,
        "hit_rate": pytest.approx(2 / 3, abs=1e-4),
        "missed": ["kitchen @9.0s: 'set a timer' (rob)"],
    }
    # 0 errors + 1 substitution + 3 deletions (the missed command) over 4 + 3 + 3 words
    assert acc["transcripts"]["wer"] == pytest.approx(4 / 10, abs=1e-4)
    assert acc["speaker"] == {"labelled": 3, "correct": 1, "accuracy": pytest.approx(1 / 3, abs=1e-4)}
    # the hall had tom (camera) and sara (she spoke there): tom was found, sara not; joe was not there
    assert acc["presence"]["hall"] == {"events": 2, "labelled": 2, "precision": 0.5, "recall": 0.5}
    # joe and rob gave commands in the kitchen; joe's plain sentence there is not identified, so not counted
    assert acc["presence"]["kitchen"] == {"events": 0, "labelled": 2, "precision": None, "recall": 0.0}
    assert acc["detections"] == {"frames": 2, "count_exact": 0.5, "count_mae": 0.5}


def test_answer_latency_per_event_type() -> None:
    rep = make_report(_run(), _labels())
    # every event was seen 100 ms after its stamp (= its publish time here)
    assert rep["answers"]["wake"] == {"count": 3, "p50_ms": 100.0, "p95_ms": 100.0, "p99_ms": 100.0, "max_ms": 100.0}
    assert rep["answers"]["transcript"]["count"] == 2
    assert "answers (from input capture to the event on the bus):" in format_table(rep)


def test_event_latency_when_runtime_numbers_are_absent() -> None:
    run = _run()
    run.stages = {}
    run.published_at = lambda t, _m=None, _s=None: t - 0.05  # inputs were published 50 ms before their stamps
    rep = make_report(run, _labels())
    assert rep["stages"]["wake"]["count"] == 3
    assert rep["stages"]["wake"]["p50_ms"] == pytest.approx(150.0)
    assert rep["stages"]["stt"]["violations"] == 1  # from the BudgetViolation event
    listed = [e for e in rep["events"]["list"] if e["type"] == "wake"]
    assert [e["t"] for e in listed] == [1.6, 5.5, 13.5]  # session time, whatever the run's clock


def test_table_and_plot(tmp_path: Path) -> None:
    run = _run()
    rep = make_report(run, _labels())
    table = format_table(rep)
    assert "wake" in table and "50.0" in table and "degraded:no-partials" in table
    assert "wake: 2/3 hits, 1 misses, 1 false alarms" in table
    assert "WER 40.0%" in table
    paths = plot(run, tmp_path, rep)
    assert paths and paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_regression_gate() -> None:
    base = make_report(_run(), _labels())
    same = make_report(_run(), _labels())
    assert compare(same, base).ok

    slower = _run()
    slower.stages["wake"].samples_ms = [x * 1.5 for x in slower.stages["wake"].samples_ms]
    cmp = compare(make_report(slower, _labels()), base, tolerance=0.2)
    assert not cmp.ok
    assert cmp.lines[0].startswith("wake: p50 75.0 ms vs 50.0 ms baseline (+50%") and cmp.lines[0].endswith("slower")
    assert compare(make_report(slower, _labels()), base, tolerance=0.6).ok

    worse = _run()
    worse.events = [(t, m) for t, m in worse.events if not isinstance(m, WakeDetected) or m.room != "hall"]
    cmp = compare(make_report(worse, _labels()), base)
    assert not cmp.ok and any(ln.startswith("wake hit rate: 0.333 vs 0.667") for ln in cmp.lines)

    gone = _run()
    del gone.stages["stt"]
    assert any("stt: produced nothing" in ln for ln in compare(make_report(gone, _labels()), base).lines)


@pytest.mark.slow
@pytest.mark.parametrize(("factor", "code"), [(10.0, 0), (0.1, 1)])
def test_replay_cli_gate_exit_codes(tmp_path: Path, factor: float, code: int) -> None:
    """`sensorium replay --baseline` on a real session with the wake stage: 0 within tolerance, 1 past it."""
    from test_replay import wake_session

    session = wake_session(tmp_path)
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "sensorium", "replay", str(session), "--speed", "max", "--stages", "wake"]
    cmd += ["--data-dir", str(tmp_path / "d"), "--settle", "0.5"]
    first = subprocess.run(
        [*cmd, "--report", str(tmp_path / "a.json")], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert first.returncode == 0, first.stderr
    base = json.loads((tmp_path / "a.json").read_text())
    assert base["accuracy"]["wake"]["hits"] == 2
    assert base["answers"]["wake"]["count"] >= 2 and not negative_latencies(base), negative_latencies(base)
    # a baseline 10x slower than this run passes; one 10x faster makes this run a regression
    for key in ("p50_ms", "p95_ms"):
        base["stages"]["wake"][key] *= factor
    (tmp_path / "base.json").write_text(json.dumps(base))
    again = subprocess.run(
        [*cmd, "--report", str(tmp_path / "b.json"), "--baseline", str(tmp_path / "base.json"), "--tolerance", "0.5"],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert again.returncode == code, again.stdout + again.stderr
    assert ("slower" in again.stdout) == (code == 1)
    assert (tmp_path / "b-latency.png").exists()


# ----------------------------------------------------------------------- which capture time an answer is about

CHUNK = 0.08  # a microphone's chunk: captured over 80 ms, published once it is whole


def _timemap(start: float = 100.0, lag: float = 0.0) -> TimeMap:
    """Kitchen: 20 audio chunks of 80 ms and a camera at 5 fps, published as they were captured (+ ``lag``)."""
    tm = TimeMap()
    for k in range(20):
        s = start + k * CHUNK
        tm.add("audio/kitchen/pi", s, s + CHUNK + lag, s + CHUNK)
    for k in range(8):
        s = start + k * 0.2
        tm.add("video/kitchen/cam", s, s + lag)
    return tm


def test_every_answer_type_says_which_capture_time_it_answers() -> None:
    from sensorium.evaluation.report import ANSWERED_FROM, event_stages

    assert set(event_stages()) | {"transcript.partial"} <= set(ANSWERED_FROM)


def test_wake_inside_a_chunk_is_measured_from_that_chunk_not_the_next() -> None:
    """The end of a wake word lies inside the chunk that completed it: its latency counts from that chunk's publish.

    Interpolating between chunk starts put the instant 50 ms after the chunk was published, so a wake
    seen 5 ms after its chunk came out reported -45 ms.
    """
    tm = _timemap()
    wake = WakeDetected(time=100.13, room="kitchen", word="hey_jarvis", node="pi")  # inside [100.08, 100.16]
    assert tm.published_at(wake.time, wake, 100.165) == pytest.approx(100.16)
    run = RunResult(events=[(100.165, wake)], to_session=lambda t: t, published_at=tm.published_at)
    assert make_report(run)["answers"]["wake"]["p50_ms"] == pytest.approx(5.0)


def test_transcript_and_speaker_answer_the_end_of_the_utterance() -> None:
    tm = _timemap()
    t1 = 100.0 + 5 * CHUNK  # the endpoint: the end of chunk 4, the start of chunk 5
    final = Transcript(time=t1, room="kitchen", final=True, text="x", t0=100.0, t1=t1)
    speaker = SpeakerIdentified(time=t1, room="kitchen", person="joe", utterance_id="u")
    for msg in (final, speaker):
        assert tm.published_at(msg.time, msg, t1 + 0.03) == pytest.approx(t1)  # chunk 4, not chunk 5 (80 ms later)


def test_frames_and_presence_answer_their_input() -> None:
    tm = _timemap(lag=0.01)
    det = Detections(time=100.4, room="kitchen", camera="cam", persons=1)
    assert tm.published_at(det.time, det, 100.5) == pytest.approx(100.41)
    # presence from a frame: that frame, although an audio chunk spans the same instant
    seen_face = Presence(time=100.4, room="kitchen", person="tom", state="entered", sources=["face"])
    assert tm.published_at(seen_face.time, seen_face, 100.6) == pytest.approx(100.41)
    # presence from a voice: the end of the utterance
    heard = Presence(time=100.0 + 7 * CHUNK, room="kitchen", person="joe", state="entered", sources=["voice"])
    assert tm.published_at(heard.time, heard, 100.7) == pytest.approx(100.0 + 7 * CHUNK + 0.01)


def test_timer_decisions_and_live_commands_count_from_their_own_time() -> None:
    from sensorium.pipeline.messages import TtsAudio

    tm = _timemap()
    left = Presence(time=105.0, room="kitchen", person="joe", state="left")  # 5 s after the last input
    assert tm.published_at(left.time, left, 105.002) == pytest.approx(105.0)
    spoken = TtsAudio(time=104.0, room="kitchen", answer_id="a")  # a live agent's Say at hub time 104.0
    assert tm.published_at(spoken.time, spoken, 104.3) == pytest.approx(104.0)


def test_stamps_ahead_of_the_clock_fall_back_to_the_newest_earlier_input() -> None:
    """At max speed stamps run ahead of the hub clock: a decision after the inputs counts from the last one."""
    tm = TimeMap()
    for k in range(10):  # stamped 1000 s ahead, published as fast as they went
        tm.add("audio/kitchen/pi", 1100.0 + k * CHUNK, 100.0 + k * 0.001, 1100.0 + (k + 1) * CHUNK)
    left = Presence(time=1106.0, room="kitchen", person="joe", state="left")
    assert tm.published_at(left.time, left, 100.5) == pytest.approx(100.009)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.0, 2.0),
    st.floats(0.0, 0.3),
    st.floats(0.0, 0.05),
    st.sampled_from(["wake", "transcript", "detections", "presence"]),
)
def test_an_answer_seen_after_its_input_never_has_negative_latency(
    at: float, late: float, lag: float, kind: str
) -> None:
    """Whatever instant an answer is about, seen after the input holding it came out, its latency is >= 0."""
    tm = _timemap(lag=lag)
    t = 100.0 + at
    msg: Any = {
        "wake": WakeDetected(time=t, room="kitchen", word="w", node="pi"),
        "transcript": Transcript(time=t, room="kitchen", final=True, text="x"),
        "detections": Detections(time=t, room="kitchen", camera="cam"),
        "presence": Presence(time=t, room="kitchen", person="p", state="present"),
    }[kind]
    # the earliest it can be seen: once the input holding t is out (a frame: the newest frame at or before t)
    if kind == "detections" or (kind == "presence" and round(at / 0.2, 6) % 1 == 0):
        holder = 100.0 + math.floor(at / 0.2 + 1e-9) * 0.2 + lag
    else:
        holder = 100.0 + max(1, math.ceil(at / CHUNK - 1e-9)) * CHUNK + lag
    seen = max(holder, t) + late
    assert seen - tm.published_at(t, msg, seen) >= -1e-9
