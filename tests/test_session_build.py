"""The session builder: a TOML spec of real media becomes a labelled MCAP session; bad specs say what and where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorium.evaluation import media
from sensorium.evaluation.replay import load
from sensorium.evaluation.session import PeopleLabel, SessionError, SpeechLabel, build, build_sample, load_spec
from sensorium.pipeline.messages import AudioChunk, VideoFrame
from sensorium.pipeline.recorder import read_all

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "sample"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two spoken WAVs (flite, real synthesis) in a folder with a spec next to them."""
    d = tmp_path_factory.mktemp("spec")
    media.write_wav(d / "lights.wav", media.speech("hey jarvis, turn on the lights", "flite:slt", CACHE))
    media.write_wav(d / "salt.wav", media.speech("pass me the salt", "flite:rms", CACHE))
    return d


SPEC = """
[session]
name = "two rooms"
duration = "8s"
noise_dbfs = -130

[rooms.kitchen]
nodes = ["kitchen-pi"]
cameras = ["kitchen-cam"]
idle_fps = 1.0

[rooms.hall]
nodes = ["hall-pi"]

[[audio]]
room = "kitchen"
file = "lights.wav"
at = "1s"
wake = "hey_jarvis"
text = "turn on the lights"
speaker = "sara"

[[audio]]
room = "hall"
file = "salt.wav"
at = "2.5s"
text = "pass me the salt"
speaker = "rob"

[[video]]
room = "kitchen"
file = "package:zidane"
at = "2s"
duration = "3s"
fps = 2
persons = 2
"""


def _write(d: Path, text: str, name: str = "spec.toml") -> Path:
    p = d / name
    p.write_text(text)
    return p


def test_build_places_clips_and_labels(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.mcap"
    res = build(_write(clips, SPEC), out)
    assert out.exists() and res.duration == 8.0
    # every microphone streams the whole session in 80 ms chunks
    assert res.audio_chunks == 2 * 100
    # 3 s of zidane at 2 fps, plus 1 fps idle frames where no clip covers the camera (0,1,5,6,7 s)
    assert res.video_frames == 6 + 5
    items, info = read_all([out])
    assert not info.damage
    meta = info.metadata["sensorium.session"]
    assert meta["name"] == "two rooms" and "kitchen" in meta["rooms"]
    kitchen = [r.msg for r in items if isinstance(r.msg, AudioChunk) and r.msg.room == "kitchen"]
    pcm = np.concatenate([np.frombuffer(m.data, "<i2") for m in kitchen])
    clip = media.read_wav(clips / "lights.wav")
    # the clip sits exactly at 1 s, bit for bit (noise floor off), and silence around it
    assert np.array_equal(pcm[16000 : 16000 + len(clip)], clip)
    assert not pcm[:16000].any()
    times = [m.time for m in kitchen]
    assert np.allclose(np.diff(times), 0.08)
    frames = [r.msg for r in items if isinstance(r.msg, VideoFrame)]
    assert {f.width for f in frames} == {640}
    zidane = [f for f in frames if 2.0 <= f.time - times[0] < 5.0]
    assert len(zidane) == 6 and zidane[0].data[:2] == b"\xff\xd8"
    labels = {type(lb): lb for lb in res.labels}
    speech = [lb for lb in res.labels if isinstance(lb, SpeechLabel)]
    assert [(lb.room, lb.wake, lb.text, lb.speaker) for lb in speech] == [
        ("kitchen", "hey_jarvis", "turn on the lights", "sara"),
        ("hall", "", "pass me the salt", "rob"),
    ]
    assert speech[0].t1 - speech[0].t0 == pytest.approx(len(clip) / 16000)
    assert labels[PeopleLabel].persons == 2 and labels[PeopleLabel].camera == "kitchen-cam"
    # the labels come back through the replay loader too
    s = load(out)
    assert s.rooms == ["kitchen", "hall"] and len(s.labels) == 3


def test_build_is_reproducible(clips: Path, tmp_path: Path) -> None:
    spec = _write(clips, SPEC)
    build(spec, tmp_path / "a.mcap")
    build(spec, tmp_path / "b.mcap")
    assert (tmp_path / "a.mcap").read_bytes() == (tmp_path / "b.mcap").read_bytes()


def test_missing_media_file_names_file_and_entry(clips: Path, tmp_path: Path) -> None:
    spec = _write(clips, SPEC.replace('file = "salt.wav"', 'file = "pepper.wav"'), "bad.toml")
    with pytest.raises(SessionError) as err:
        build(spec, tmp_path / "x.mcap")
    text = str(err.value)
    assert "bad.toml" in text and "[[audio]] #2" in text and "'pepper.wav' not found" in text
    assert not (tmp_path / "x.mcap").exists()


def test_unknown_room_names_room_entry_and_known_rooms(clips: Path, tmp_path: Path) -> None:
    spec = _write(clips, SPEC.replace('room = "kitchen"\nfile = "package:zidane"', 'room = "garage"\nfile = "x"'))
    with pytest.raises(SessionError, match=r"\[\[video\]\] #1: unknown room 'garage' \(known: kitchen, hall\)"):
        build(spec, tmp_path / "x.mcap")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('at = "1s"', 'at = "soon"'), r"\[\[audio\]\] #1 at: expected a duration"),
        (('duration = "3s"\n', ""), r"\[\[video\]\] #1: an image needs a duration"),
        (('speaker = "sara"', 'speaker = "sara"\nvolume = 3'), r"audio\]\] #1: Object contains unknown field `volume`"),
        (('nodes = ["hall-pi"]', "nodes = []"), r"\[\[audio\]\] #2: room 'hall' has no microphone nodes"),
        (('duration = "8s"', 'duration = "2s"'), r"\[\[audio\]\] #1 \(lights.wav\) ends after the session's duration"),
        (('file = "package:zidane"', 'file = "package:cat"'), r"\[\[video\]\] #1: unknown package image 'cat'"),
    ],
)
def test_spec_errors_say_where(clips: Path, tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in SPEC
    spec = _write(clips, SPEC.replace(*change, 1), "e.toml")
    with pytest.raises(SessionError, match=message):
        build(spec, tmp_path / "x.mcap")


def test_not_a_wav_and_not_toml(clips: Path, tmp_path: Path) -> None:
    (clips / "fake.wav").write_text("not audio")
    spec = _write(clips, SPEC.replace('file = "salt.wav"', 'file = "fake.wav"'), "f.toml")
    with pytest.raises(SessionError, match=r"#2: .*fake.wav: not a readable WAV"):
        build(spec, tmp_path / "x.mcap")
    with pytest.raises(SessionError, match="not valid TOML"):
        load_spec(_write(clips, "[session\n", "broken.toml"))


def test_cli_build_and_error_exit_codes(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mcap"
    ok = subprocess.run(
        [sys.executable, "-m", "sensorium", "session", "build", str(_write(clips, SPEC)), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 utterances (1 with a wake word) from 2 speakers" in ok.stdout
    bad = _write(clips, SPEC.replace('room = "hall"\nfile', 'room = "attic"\nfile'), "cli-bad.toml")
    err = subprocess.run(
        [sys.executable, "-m", "sensorium", "session", "build", str(bad), "-o", str(tmp_path / "y.mcap")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert err.returncode == 2
    assert "unknown room 'attic'" in err.stderr and "Traceback" not in err.stderr


@pytest.mark.slow
def test_sample_session_has_what_the_demo_needs(tmp_path: Path) -> None:
    res = build_sample(tmp_path / "sample.mcap", CACHE)
    speech = [lb for lb in res.labels if isinstance(lb, SpeechLabel)]
    people = [lb for lb in res.labels if isinstance(lb, PeopleLabel)]
    commands = [lb for lb in speech if lb.wake == "hey_jarvis"]
    assert len(commands) >= 5
    assert len({lb.speaker for lb in commands}) >= 2
    assert any(lb.wake == "" for lb in speech)  # a sentence without the wake word
    assert max(lb.persons for lb in people) >= 2
    assert {lb.room for lb in res.labels} == {"kitchen", "living_room"}
    s = load(res.path)
    assert s.rooms == ["kitchen", "living_room"]
    assert {r.topic for r in s.items} == {
        "audio/kitchen/kitchen-pi",
        "audio/living_room/living-pi",
        "video/kitchen/kitchen-cam",
        "video/living_room/living-cam",
    }


def test_video_file_is_sampled_at_the_given_fps(clips: Path, tmp_path: Path) -> None:
    import cv2

    # a 2 s, 10 fps clip made from a real photo drifting sideways (MJPEG in AVI: no codec packs needed)
    img = cv2.imread(str(media.package_image("bus")))
    path = tmp_path / "walk.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for k in range(20):
        w.write(cv2.resize(img[:, k * 5 : k * 5 + 700], (640, 480)))
    w.release()
    spec = f"""
[session]
duration = "4s"
[rooms.hall]
cameras = ["cam"]
[[video]]
room = "hall"
file = "{path}"
at = "1s"
fps = 4
persons = 4
"""
    res = build(_write(tmp_path, spec), tmp_path / "v.mcap")
    assert res.video_frames == 8  # 2 s of video at 4 fps
    frames = [r.msg for r in read_all([tmp_path / "v.mcap"])[0] if isinstance(r.msg, VideoFrame)]
    times = [f.time - res.labels[0].t0 for f in frames]
    assert times == pytest.approx([k * 0.25 for k in range(8)])
    assert len({f.data for f in frames}) == 8  # really different frames of the clip
    assert res.labels[0].t1 - res.labels[0].t0 == pytest.approx(2.0)
