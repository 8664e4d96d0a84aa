"""`sensorium demo` end to end, as a user runs it: the real CLI, real models, real media.

Voice: "hey jarvis, <command>" → a wake event, partial transcripts, a final transcript within 20 % WER.
Vision: an enrolled person walks into view and out again → presence entered, then left after the
configured delay.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import images
import jiwer
import media
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
COMMAND = "turn on the lights in the kitchen and set them to fifty percent"


def _demo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "demo", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_demo_voice_wake_partials_and_final_transcript(tmp_path: Path) -> None:
    wav = media.speech_wav(f"hey jarvis, {COMMAND}", "piper:joe", lead=1.0, tail=2.5)
    out = tmp_path / "events.jsonl"
    r = _demo(
        "--audio",
        f"kitchen={wav}",
        "--events-json",
        str(out),
        "--out",
        str(tmp_path / "d"),
        "--gallery",
        str(tmp_path / "gallery.db"),
        "--no-agent",
    )
    assert f"demo: gallery {tmp_path / 'gallery.db'}: nobody enrolled (enrol: sensorium enroll NAME" in r.stdout
    events = _events(out)
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 1 and wakes[0]["room"] == "kitchen" and wakes[0]["word"] == "hey_jarvis"
    transcripts = [e for e in events if e["type"] == "transcript"]
    partials = [e for e in transcripts if not e["final"]]
    finals = [e for e in transcripts if e["final"]]
    assert partials, "no partial transcript while the person was speaking"
    assert len(finals) == 1
    final = finals[0]
    assert all(p["seq"] < final["seq"] for p in partials)
    error = jiwer.wer(COMMAND, final["text"].lower().replace(",", "").replace(".", "").replace("50", "fifty"))
    assert error <= 0.2, f"WER {error:.0%}: {final['text']!r}"
    assert final["words"] and final["t1"] > final["t0"]
    assert wakes[0]["seq"] < final["seq"]
    assert "Stage latency" in r.stdout  # the latency table printed at the end


def test_demo_video_enrolled_person_enters_then_leaves(tmp_path: Path) -> None:
    import cv2

    person = cv2.imread(str(images.ASTRONAUT))
    frames = images.visit_frames(person, before=3, during=20, after=3)  # 5 fps: 4 s in view
    folder = tmp_path / "frames"
    images.write_frames(folder, frames)
    out = tmp_path / "events.jsonl"
    _demo(
        "--video",
        f"living_room={folder}",
        "--enroll",
        f"eileen={images.ASTRONAUT}",
        "--events-json",
        str(out),
        "--out",
        str(tmp_path / "d"),
        "--gallery",
        str(tmp_path / "gallery.db"),
        "--no-agent",
    )
    events = _events(out)
    presence = [e for e in events if e["type"] == "presence" and e["person"] == "eileen"]
    states = [e["state"] for e in presence]
    assert "entered" in states and "left" in states, states
    entered = next(e for e in presence if e["state"] == "entered")
    left = next(e for e in presence if e["state"] == "left")
    assert entered["room"] == left["room"] == "living_room"
    assert entered["seq"] < left["seq"]
    assert "face" in entered["sources"]
    faces = [e for e in events if e["type"] == "face" and e["person"] == "eileen"]
    assert faces and faces[0]["score"] >= 0.6
    # `left` is decided from capture times: the last frame with her plus the demo's left_after (5 s)
    dets = [e for e in events if e["type"] == "detections" and e["persons"] > 0]
    last_seen = max(e["time"] for e in dets)
    assert 4.0 <= left["time"] - last_seen <= 7.5, left["time"] - last_seen


def test_demo_without_arguments_runs_the_whole_loop(tmp_path: Path) -> None:
    from test_report import negative_latencies
    from test_terminal import ours_only

    out = tmp_path / "events.jsonl"
    summary = tmp_path / "summary.json"
    r = _demo("--out", str(tmp_path / "d"), "--events-json", str(out), "--summary-json", str(summary), timeout=600)
    events = _events(out)
    # every table the demo prints (stages, voice-to-voice, the replay report's answers): no latency below 0
    numbers = json.loads(summary.read_text())
    assert {"wake", "transcript", "speaker", "presence"} <= set(numbers["answers"]), numbers["answers"]
    assert numbers["report"]["events"]["list"] and not negative_latencies(numbers), negative_latencies(numbers)
    assert not re.search(r"p\d\d +-\d", r.stdout), r.stdout  # nor in the printed tables
    # quiet by default: only our lines on the terminal (no banners of the model libraries)
    assert ours_only(r.stdout, r.stderr) == [], ours_only(r.stdout, r.stderr)
    kinds = {e["type"] for e in events}
    assert {"wake", "transcript", "speaker", "presence", "playback"} <= kinds, kinds
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert len(finals) >= 5
    assert sum(e["speaker"] not in (None, "unknown") for e in finals) >= 4  # the sample's enrolled voices
    started = [e for e in events if e["type"] == "playback" and e["state"] == "started"]
    assert len(started) >= 5  # the built-in agent answered and the rooms' players spoke
    wavs = list((tmp_path / "d" / "tts").glob("*.wav"))
    assert len(wavs) >= 5
    assert "Voice-to-voice breakdown" in r.stdout and "TTS first audio" in r.stdout
    assert "speaker: " in r.stdout and "WER" in r.stdout  # accuracy against the session's labels
