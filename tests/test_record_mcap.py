"""The MCAP recorder: what goes in comes back byte for byte; damaged files read up to the damage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from sensorium.pipeline import codec
from sensorium.pipeline.messages import AudioChunk, BudgetViolation, Say, Transcript, VideoFrame, WakeDetected, Word
from sensorium.pipeline.recorder import RAW_ENCODING, Recorder, RecordingError, read, read_all, record

ROOT = Path(__file__).resolve().parent.parent


def _audio(i: int, t: float) -> AudioChunk:
    pcm = (np.sin(np.arange(1280) * (i + 1) / 50) * 8000).astype("<i2").tobytes()
    return AudioChunk(seq=i, time=t, room="kitchen", source="pi", data=pcm)


def _mixed(t0: float = 1_700_000_000.0) -> list:
    msgs: list = [_audio(i, t0 + i * 0.08) for i in range(50)]
    msgs.append(VideoFrame(seq=0, time=t0 + 0.5, room="kitchen", source="cam", width=4, height=3, data=b"\xff\xd8jpeg"))
    msgs.append(WakeDetected(seq=1, time=t0 + 1.0, room="kitchen", source="gpu0", word="hey_jarvis", score=0.93))
    msgs.append(
        Transcript(
            seq=2,
            time=t0 + 1.0,
            room="kitchen",
            source="gpu0",
            final=True,
            text="turn on the lights",
            words=[Word("turn", 0.0, 0.2)],
            t0=t0 + 1.0,
            t1=t0 + 2.5,
            speaker="joe",
        )
    )
    msgs.append(BudgetViolation(seq=3, time=t0 + 1.1, stage="stt", budget_ms=300.0, actual_ms=412.5, action="none"))
    msgs.append(Say(seq=4, time=t0 + 3.0, room="kitchen", source="agent", text="Lights on.", answer_id="a1"))
    return msgs


def test_round_trip_keeps_frames_and_times(tmp_path: Path) -> None:
    path = tmp_path / "rec.mcap"
    msgs = _mixed()
    with Recorder(path) as rec:
        for m in msgs:
            rec.write(codec.encode(m), m.time + 0.01)
    back = list(read(path))
    assert len(back) == len(msgs)
    by_topic: dict[str, list] = {}
    for r in back:
        by_topic.setdefault(r.topic, []).append(r)
    assert set(by_topic) == {m.topic() for m in msgs}
    audio = by_topic["audio/kitchen/pi"]
    # raw frames come back byte for byte: PCM never re-encoded
    for orig, got in zip(msgs[:50], audio, strict=True):
        assert got.frames == codec.encode(orig)
        assert got.msg == orig
        assert got.log_time == pytest.approx(orig.time, abs=1e-6)
        assert got.publish_time == pytest.approx(orig.time + 0.01, abs=1e-6)
    wake = by_topic["wake/kitchen/gpu0"][0].msg
    assert isinstance(wake, WakeDetected) and wake.word == "hey_jarvis" and wake.score == 0.93
    tr = by_topic["transcript/kitchen/gpu0"][0].msg
    assert tr == msgs[52]
    assert isinstance(by_topic["say/kitchen/agent"][0].msg, Say)


def test_channels_and_schemas_are_foxglove_readable(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    path = tmp_path / "rec.mcap"
    with Recorder(path) as rec:
        for m in _mixed():
            rec.write_message(m)
    with open(path, "rb") as fp:
        summary = make_reader(fp).get_summary()
    assert summary is not None
    enc = {c.topic: c.message_encoding for c in summary.channels.values()}
    assert enc["audio/kitchen/pi"] == RAW_ENCODING
    assert enc["wake/kitchen/gpu0"] == "json"
    assert enc["budget_violation/-/-"] == "json"
    names = {s.name: s for s in summary.schemas.values()}
    schema = json.loads(names["sensorium.WakeDetected"].data)
    assert names["sensorium.WakeDetected"].encoding == "jsonschema"
    # Foxglove needs an object at the top level, with the fields right there
    assert schema["type"] == "object" and schema["properties"]["score"]["type"] == "number"
    tr = json.loads(names["sensorium.Transcript"].data)
    assert tr["properties"]["words"]["items"]["$ref"] == "#/$defs/Word" and "Word" in tr["$defs"]
    assert summary.statistics is not None and summary.statistics.message_count == len(_mixed())


def test_rotation_by_size_splits_into_complete_files(tmp_path: Path) -> None:
    path = tmp_path / "rec.mcap"
    msgs = [_audio(i, 1000.0 + i * 0.08) for i in range(400)]
    with Recorder(path, rotate_bytes=200_000, chunk_size=32 * 1024) as rec:
        for m in msgs:
            rec.write_message(m)
    assert len(rec.paths) >= 3
    assert rec.paths[0] == path and rec.paths[1].name == "rec.1.mcap"
    items, res = read_all(rec.paths)
    assert not res.damage
    assert [r.msg.seq for r in items] == list(range(400))
    # replay finds the later parts by itself when given the first
    from sensorium.evaluation.replay import load

    assert load(path).paths == rec.paths and len(load(path).items) == 400


def test_rotation_by_time(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "t.mcap", rotate_seconds=0.05)
    rec.write_message(_audio(0, 1.0))
    import time

    time.sleep(0.06)  # sync test: the recorder rotates on its own monotonic clock
    rec.write_message(_audio(1, 2.0))
    rec.close()
    assert len(rec.paths) == 2


def test_truncated_file_reads_up_to_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rec.mcap"
    msgs = [_audio(i, 1000.0 + i * 0.08) for i in range(300)]
    with Recorder(path, chunk_size=16 * 1024) as rec:
        for m in msgs:
            rec.write_message(m)
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    items, res = read_all([cut])
    assert res.damage and "cut.mcap" in res.damage and "damaged at byte" in res.damage
    assert 50 < len(items) < 300
    # what was read is exactly the start of the recording
    assert [r.msg.seq for r in items] == list(range(len(items)))
    assert "damaged" in caplog.text


def test_corrupt_chunk_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "rec.mcap"
    with Recorder(path, chunk_size=16 * 1024) as rec:
        for i in range(300):
            rec.write_message(_audio(i, 1000.0 + i * 0.08))
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))
    items, res = read_all([bad])
    assert res.damage
    assert 0 < len(items) < 300


def test_not_mcap_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "notes.mcap"
    p.write_text("hello, I am a text file")
    with pytest.raises(RecordingError, match="not an MCAP file"):
        list(read(p))
    with pytest.raises(RecordingError, match="file not found"):
        list(read(tmp_path / "missing.mcap"))


def test_bad_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    with Recorder(tmp_path / "r.mcap") as rec:
        rec.write([b"audio/x/y", b"\x09garbage", b""])
        rec.write_message(_audio(0, 5.0))
    assert rec.errors == 1
    assert [r.msg.seq for r in read(tmp_path / "r.mcap")] == [0]


class _Queue:
    """A real asyncio queue standing in for a bus subscriber's raw-frames API."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[list[bytes]] = asyncio.Queue()

    async def recv_frames(self) -> list[bytes]:
        return await self.q.get()


async def test_record_helper_until_stop(tmp_path: Path) -> None:
    sub = _Queue()
    rec = Recorder(tmp_path / "live.mcap")
    stop = asyncio.Event()
    for m in _mixed():
        await sub.q.put(codec.encode(m))
    n = await record(sub, rec, stop, limit=len(_mixed()))
    # a stop while waiting for the next message ends the recording too
    task = asyncio.create_task(record(sub, rec, stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(task, 2) == 0
    rec.close()
    assert n == len(_mixed())
    assert len(list(read(tmp_path / "live.mcap"))) == n


def test_write_after_close_raises(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "c.mcap")
    rec.close()
    with pytest.raises(RuntimeError):
        rec.write_message(_audio(0, 1.0))
    with pytest.raises(RecordingError):
        list(read(tmp_path / "c.mcap.missing"))


async def test_record_command_records_a_running_hub(tmp_path: Path) -> None:
    """`sensorium record` against a real hub: what publishers send ends up in the file, events as JSON."""
    import sys

    from sensorium.pipeline.bus import Publisher
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub

    address = f"ipc://{tmp_path}/hub"
    out = tmp_path / "cli.mcap"
    async with Hub(HubConfig(address=address)) as hub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sensorium",
            "record",
            str(out),
            "--hub",
            address,
            "--duration",
            "6s",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        pub = Publisher(hub.endpoints)
        # publish until the recorder has surely subscribed (it starts in a second or two), then stop
        sent: list = []
        for k in range(40):
            m = _audio(k + 1, hub.clock.now())  # seq k + 1: the publisher keeps non-zero sequence numbers
            await pub.publish(m)
            sent.append(m)
            if k % 10 == 9:
                w = WakeDetected(time=hub.clock.now(), room="kitchen", source="gpu0", word="hey_jarvis", score=0.9)
                await pub.publish(w)
            await asyncio.sleep(0.1)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        pub.close()
    assert proc.returncode == 0, stderr.decode()
    assert "recorded" in stdout.decode()
    got = list(read(out))
    audio = [r for r in got if isinstance(r.msg, AudioChunk)]
    wakes = [r for r in got if isinstance(r.msg, WakeDetected)]
    assert len(audio) >= 10 and wakes, stdout.decode()
    # what was recorded is a contiguous run of what was sent, byte for byte
    first = audio[0].msg.seq
    assert [r.msg.seq for r in audio] == list(range(first, first + len(audio)))
    assert all(r.msg.data == sent[r.msg.seq - 1].data for r in audio)


def test_record_command_bad_arguments() -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "record", "x.mcap", "--rotate-size", "lots"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2 and "expected a size like 500MB" in r.stderr


def test_foxglove_images_are_viewer_copies(tmp_path: Path) -> None:
    import base64

    from mcap.reader import make_reader

    path = tmp_path / "fox.mcap"
    frame = VideoFrame(seq=3, time=1234.5, room="hall", source="cam", width=2, height=2, data=b"\xff\xd8fake-jpeg")
    with Recorder(path, foxglove_images=True) as rec:
        rec.write_message(frame)
        rec.write_message(_audio(1, 1234.6))
    with open(path, "rb") as fp:
        reader = make_reader(fp)
        fox = [(s, c, m) for s, c, m in reader.iter_messages(topics=["foxglove/video/hall/cam"])]
    assert len(fox) == 1
    schema, channel, message = fox[0]
    assert schema.name == "foxglove.CompressedImage" and channel.message_encoding == "json"
    body = json.loads(message.data)
    assert base64.b64decode(body["data"]) == frame.data and body["format"] == "jpeg"
    assert body["timestamp"] == {"sec": 1234, "nsec": 500000000} and body["frame_id"] == "cam"
    # replay reads the frame once, from its own channel
    assert [type(r.msg).__name__ for r in read(path)] == ["VideoFrame", "AudioChunk"]
