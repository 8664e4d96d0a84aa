"""Replay: sessions published as their edge nodes did, into real stages; same session, same events; damage tolerated."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorium.evaluation import media
from sensorium.evaluation.replay import (
    ReplayError,
    ReplayOptions,
    default_deployment,
    load,
    replay,
    replay_embedded,
    replay_hub,
)
from sensorium.evaluation.report import make_report, signatures
from sensorium.evaluation.session import build, parse_spec
from sensorium.pipeline.recorder import Recorder, RecordingError, recording

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "sample"


def wake_session(folder: Path, utterances: list[tuple[str, str, str, str]] | None = None, video: bool = False) -> Path:
    """A small labelled session of real synthesized speech: two commands in two rooms and one plain sentence."""
    utterances = utterances or [
        ("kitchen", "joe", "hey jarvis, turn on the kitchen lights", "turn on the kitchen lights"),
        ("hall", "sara", "hey jarvis, play some jazz music", "play some jazz music"),
        ("kitchen", "rob", "the soup needs more salt", ""),
    ]
    voices = {"joe": "piper:joe", "sara": "flite:slt", "rob": "flite:rms"}
    audio = []
    t = 0.5
    for k, (room, who, said, command) in enumerate(utterances):
        wav = media.write_wav(folder / f"u{k}.wav", media.speech(said, voices[who], CACHE))
        audio.append(
            {
                "room": room,
                "file": str(wav),
                "at": t,
                "wake": "hey_jarvis" if command else "",
                "text": command or said,
                "speaker": who,
            }
        )
        t = round(t + len(media.read_wav(wav)) / 16000 + 1.5, 2)
    rooms = sorted({u[0] for u in utterances})
    spec: dict = {
        "session": {"name": "wake-test", "duration": t + 1.0},
        "rooms": {r: {"nodes": [f"{r}-pi"]} for r in rooms},
        "audio": audio,
    }
    if video:
        spec["rooms"]["kitchen"]["cameras"] = ["kitchen-cam"]
        spec["rooms"]["hall"]["cameras"] = ["hall-cam"]
        spec["video"] = [
            {"room": "kitchen", "file": "package:zidane", "at": 0.0, "duration": t / 2, "fps": 0.5, "persons": 2},
            {
                "room": "hall",
                "file": "package:tom_hanks",
                "at": 1.0,
                "duration": t / 2,
                "fps": 0.5,
                "persons": 1,
                "people": ["tom_hanks"],
            },
        ]
    out = folder / "session.mcap"
    build(parse_spec(spec, "test"), out, base_dir=folder, where="test")
    return out


# ------------------------------------------------------------------------------------------ errors


def test_not_mcap_unknown_room_and_empty(tmp_path: Path) -> None:
    text = tmp_path / "notes.mcap"
    text.write_text("just text")
    with pytest.raises(RecordingError, match="not an MCAP file"):
        load(text)
    with pytest.raises(RecordingError, match="file not found"):
        load(tmp_path / "nope.mcap")
    session = wake_session(tmp_path)
    with pytest.raises(ReplayError, match=r"room 'garage' is not in the session \(rooms: hall, kitchen\)"):
        load(session, ["garage"])
    assert {r.msg.room for r in load(session, ["hall"]).items} == {"hall"}
    empty = tmp_path / "empty.mcap"
    Recorder(empty).close()
    with pytest.raises(ReplayError, match="no audio, video or commands to replay"):
        load(empty)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.mcap"
    text.write_text("just text")
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "replay", str(text), "--speed", "max"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and "not an MCAP file" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "replay", str(text), "--speed", "fast"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and "expected a number or 'max'" in r.stderr
    session = wake_session(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "replay", str(session), "--stages", "wake,wak", "--rooms", "kitchen"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    from sensorium.registry import STAGES  # every stage of nodes/, in the registry's order

    assert r.returncode == 2 and f"unknown stage 'wak' (available: {', '.join(STAGES)})" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "replay", str(session), "--rooms", "garage"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and "room 'garage' is not in the session (rooms: hall, kitchen)" in r.stderr


# ----------------------------------------------------------------------------------- real stages


@pytest.mark.slow
def test_truncated_session_replays_up_to_the_damage(tmp_path: Path) -> None:
    session = wake_session(tmp_path)
    whole = load(session)
    data = session.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    s = load(cut)
    assert s.damage and "cut.mcap: damaged at byte" in s.damage
    assert 0 < len(s.items) < len(whole.items)
    assert len(s.labels) == len(whole.labels)  # labels are written first: the ground truth survives
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sensorium",
            "replay",
            str(cut),
            "--speed",
            "max",
            "--stages",
            "wake",
            "--data-dir",
            str(tmp_path / "d"),
            "--settle",
            "0.5",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "damaged at byte" in r.stderr
    # the first command (kitchen, before the damage) is heard; the hall command was in the lost part
    assert "wake: 1/2 hits" in r.stdout, r.stdout


def _enroll_voices(data_dir: Path) -> None:
    import numpy as np

    from sensorium.evaluation.session import SAMPLE_ENROLL_TEXT, SAMPLE_VOICES
    from sensorium.models.gallery import Gallery
    from sensorium.models.speaker import load_encoder

    enc = load_encoder("resemblyzer", "cpu")
    data_dir.mkdir(parents=True, exist_ok=True)
    with Gallery(data_dir / "gallery.db") as g:
        for person, voice in SAMPLE_VOICES.items():
            for text in SAMPLE_ENROLL_TEXT[:2]:
                g.add(
                    person, "voice", enc.model_id, enc.embed(media.speech(text, voice, CACHE).astype(np.int16), 16000)
                )


@pytest.mark.slow
async def test_same_session_twice_at_max_gives_same_events(tmp_path: Path) -> None:
    from sensorium.embedded import embedded

    session = load(wake_session(tmp_path, video=True))
    _enroll_voices(tmp_path / "data")
    # face and presence are left out: they keep per-track and per-room state across runs, and presence
    # times absences on the wall clock, so their events depend on how fast the replay went
    dep = default_deployment(session, tmp_path / "data", ["wake", "stt", "speaker", "detect"])
    opts = ReplayOptions(speed=0, settle=3.0)
    async with embedded(dep) as env:
        first = await replay_embedded(session, opts, env)
        second = await replay_embedded(session, opts, env)
    a, b = signatures(m for _, m in first.events), signatures(m for _, m in second.events)
    assert a == b
    frames = sum(1 for r in session.items if r.topic.startswith("video/"))
    assert sum(1 for s in a if s[0] == "detections") == frames  # every frame answered, none dropped
    assert [s for s in a if s[0] == "wake"] == [("wake", "hall", "hey_jarvis"), ("wake", "kitchen", "hey_jarvis")]
    texts = {s[1]: s[2] for s in a if s[0] == "transcript"}
    assert "jazz" in texts["hall"] and "kitchen lights" in texts["kitchen"]
    rep = make_report(first, session.labels)
    assert rep["accuracy"]["wake"]["hits"] == 2 and rep["accuracy"]["wake"]["false_alarms"] == 0
    assert rep["accuracy"]["speaker"]["correct"] == 2
    # max speed really is faster than the session
    assert first.info["wall_s"] < session.duration


@pytest.mark.slow
async def test_speed_one_keeps_timing_and_reports_runtime_latency(tmp_path: Path) -> None:
    from sensorium.embedded import embedded

    session = load(wake_session(tmp_path, [("kitchen", "joe", "hey jarvis, what time is it", "what time is it")]))
    dep = default_deployment(session, tmp_path / "data", ["wake"])
    async with embedded(dep) as env:
        res = await replay_embedded(session, ReplayOptions(speed=1.0, settle=0.5), env)
        # the same session against the hub's address, as a remote client would (clock synced by NodeLink)
        remote = await replay_hub(session, ReplayOptions(speed=2.0, settle=0.5), env.address)
    assert session.duration - 0.2 <= res.info["wall_s"] <= session.duration + 3.0
    rep = make_report(res, session.labels)
    wake = rep["stages"]["wake"]
    chunks = sum(1 for r in session.items if r.topic.startswith("audio/"))
    assert wake["count"] == chunks and wake["source"] == "runtime"
    assert 0 < wake["p50_ms"] < wake["budget_ms"]
    assert rep["accuracy"]["wake"]["hits"] == 1
    # the detection lands within the spoken wake phrase, on the session's own timeline
    ev = next(e for e in rep["events"]["list"] if e["type"] == "wake")
    assert 0.5 < ev["t"] - (session.labels[0].t0 - session.start) + 0.5 < 2.5
    assert remote.info["wall_s"] < session.duration * 0.75
    assert make_report(remote, session.labels)["accuracy"]["wake"]["hits"] == 1


def _padded(pcm: np.ndarray, lead: float, tail: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * 16000), np.int16), pcm, np.zeros(int(tail * 16000), np.int16)])


@pytest.mark.slow
async def test_live_recording_replays_to_the_same_events(tmp_path: Path) -> None:
    """Edge agents play WAVs live while the recorder records the bus; replaying the recording gives the same events."""
    from sensorium.deployment import deployment_from_dict
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded

    kitchen = media.write_wav(
        tmp_path / "k.wav",
        _padded(media.speech("hey jarvis, turn off the oven", "piper:joe", CACHE), 0.5, 1.5),
    )
    hall = media.write_wav(
        tmp_path / "h.wav",
        _padded(media.speech("hey jarvis, open the blinds", "flite:slt", CACHE), 1.0, 1.5),
    )
    dep = deployment_from_dict(
        {
            "hub": {"address": "inproc://live-rec"},
            "rooms": {"kitchen": {}, "hall": {}},
            "edges": {
                "kitchen-pi": {"room": "kitchen", "microphone": {"file": str(kitchen)}},
                "hall-pi": {"room": "hall", "microphone": {"file": str(hall)}},
            },
            "workers": {"cpu": {"stages": ["wake", "stt"]}},
            "data_dir": str(tmp_path / "data"),
        }
    )
    rec_path = tmp_path / "live.mcap"
    async with embedded(dep) as env:
        async with recording(env.endpoints, rec_path, clock=env.clock):
            agents = [EdgeAgent(dep, n, hub_address=env.address, clock=env.clock) for n in ("kitchen-pi", "hall-pi")]
            await asyncio.gather(*(a.run(once=True) for a in agents))
            await env.drain(60)
            await asyncio.sleep(3.0)  # the last final transcript

        session = load(rec_path)
        assert {r.topic for r in session.items} == {"audio/kitchen/kitchen-pi", "audio/hall/hall-pi"}
        live = signatures(session.recorded_events)
        replayed = await replay_embedded(session, ReplayOptions(speed=0, settle=3.0), env)
    assert live == signatures(m for _, m in replayed.events)
    assert ("wake", "kitchen", "hey_jarvis") in live and ("wake", "hall", "hey_jarvis") in live
    texts = " ".join(s[2] for s in live if s[0] == "transcript")
    assert "oven" in texts and "blinds" in texts


@pytest.mark.slow
async def test_labelled_session_every_stage_latency_and_accuracy(tmp_path: Path) -> None:
    """Five commands from three enrolled voices, two cameras with people: a report with latency and accuracy."""
    from benchmarks.replay import enroll_sample

    utterances = [
        ("kitchen", "joe", "hey jarvis, turn on the kitchen lights", "turn on the kitchen lights"),
        ("hall", "sara", "hey jarvis, what is the weather tomorrow", "what is the weather tomorrow"),
        ("kitchen", "rob", "hey jarvis, set a timer for ten minutes", "set a timer for ten minutes"),
        ("hall", "joe", "hey jarvis, play some jazz music", "play some jazz music"),
        ("kitchen", "sara", "hey jarvis, add milk to the shopping list", "add milk to the shopping list"),
    ]
    session = load(wake_session(tmp_path, utterances, video=True))
    enroll_sample(tmp_path / "data", CACHE)
    dep = default_deployment(session, tmp_path / "data", ["wake", "stt", "speaker", "detect", "face", "presence"])
    res = await replay(session, ReplayOptions(speed=0, settle=2.0), dep)
    rep = make_report(res, session.labels)
    for stage in ("wake", "stt", "speaker", "detect"):
        s = rep["stages"][stage]
        assert s["count"] > 0 and s["p50_ms"] > 0 and s["p99_ms"] >= s["p95_ms"] >= s["p50_ms"], (stage, s)
    from test_report import negative_latencies

    assert {"wake", "transcript", "speaker", "detections", "presence"} <= set(rep["answers"]), rep["answers"]
    assert not negative_latencies(rep), negative_latencies(rep)
    acc = rep["accuracy"]
    assert acc["wake"]["hits"] >= 4 and acc["wake"]["false_alarms"] == 0, acc["wake"]
    assert acc["transcripts"]["wer"] < 0.25, acc["transcripts"]
    assert acc["speaker"]["labelled"] == 5 and acc["speaker"]["correct"] >= 4, acc["speaker"]
    assert acc["detections"]["frames"] > 0 and acc["detections"]["count_exact"] >= 0.8, acc["detections"]
    # presence: the speakers of each room (voice) and tom_hanks in the hall (face)
    for room in ("kitchen", "hall"):
        p = acc["presence"][room]
        assert p["recall"] >= 0.66 and p["precision"] >= 0.66, (room, p)
    assert 0 < rep["events"]["counts"]["face"]


@pytest.mark.slow
async def test_recorded_commands_are_replayed_to_tts(tmp_path: Path) -> None:
    """Recorded Say commands are published again (talk-back is part of the replay); --no-commands leaves them out."""
    from sensorium.embedded import embedded
    from sensorium.pipeline.messages import AudioChunk, Say, TtsAudio

    path = tmp_path / "say.mcap"
    with Recorder(path) as rec:
        for k in range(25):
            rec.write_message(
                AudioChunk(seq=k + 1, time=100.0 + k * 0.08, room="kitchen", source="pi", data=bytes(2560))
            )
        rec.write_message(
            Say(seq=1, time=101.0, room="kitchen", source="agent", answer_id="a1", text="The lights are on.")
        )
    session = load(path)
    dep = default_deployment(session, tmp_path / "data", ["tts"], {"tts": {"backend": "flite"}})
    async with embedded(dep) as env:
        spoken = await replay_embedded(session, ReplayOptions(speed=0, settle=1.5), env)
        silent = await replay_embedded(session, ReplayOptions(speed=0, settle=1.5, commands=False), env)
    tts = [m for _, m in spoken.events if isinstance(m, TtsAudio)]
    assert tts and tts[-1].final and tts[0].answer_id == "a1" and tts[0].room == "kitchen"
    assert "lights are on" in " ".join(m.text for m in tts).lower()
    assert sum(len(m.data) for m in tts) > 16000  # real synthesized audio, not a placeholder
    assert not [m for _, m in silent.events if isinstance(m, TtsAudio)]
    rep = make_report(spoken)
    assert rep["stages"]["tts"]["count"] >= 1 and rep["events"]["counts"]["tts_audio"] == len(tts)
