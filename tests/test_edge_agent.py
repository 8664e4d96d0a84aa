"""The edge agent against a real hub on ipc: what it publishes (audio, frames, status), the bounded
buffer across a hub outage, local wake gating end to end, playback of its room's answers, and the
``sensorium edge`` command (help, bad input, and that it imports no torch or model library)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from sensorium.edge.agent import EdgeAgent, Outbox
from sensorium.models.wakeword import WakeWordModel
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import Deployment, HubConfig, from_dict
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, Message, NodeStatus, PlaybackStatus, TtsAudio, VideoFrame

try:  # tests/ is a plain folder on sys.path; works too if it becomes a package
    from images import BUS, ZIDANE
    from media import concat, read_wav, speech, write_wav
except ImportError:
    from tests.images import BUS, ZIDANE
    from tests.media import concat, read_wav, speech, write_wav

REPO = Path(__file__).resolve().parents[1]
NODE = "kitchen-pi"
HEAVY = ("torch", "faster_whisper", "ctranslate2", "ultralytics", "mediapipe", "insightface", "speechbrain",
         "resemblyzer", "piper", "tensorflow", "librosa", "scipy", "sklearn")  # fmt: skip


def deployment(address: str, edge: dict[str, Any], **rooms: dict[str, Any]) -> Deployment:
    raw = {
        "hub": {"address": address, "heartbeat": 0.1, "down_after": 0.5},
        "rooms": {"kitchen": {}, **rooms},
        "edges": {NODE: {"room": "kitchen", **edge}},
    }
    for room in rooms:
        raw["edges"][f"{room}-pi"] = {"room": room}
    return from_dict(raw, {})


def frames_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, src in enumerate((BUS, ZIDANE, BUS)):
        (folder / f"{i:02d}.jpg").write_bytes(Path(src).read_bytes())
    return folder


async def receive(sub: Subscriber, into: list[tuple[float, Message]]) -> None:
    async for msg in sub:
        into.append((time.time(), msg))


def of(got: list[tuple[float, Message]], cls: type) -> list[Any]:
    return [m for _, m in got if isinstance(m, cls)]


async def test_agent_publishes_audio_frames_and_status_on_the_hub_clock(
    hub: Hub, hub_address: str, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "say.wav", concat(0.3, speech("Good morning, kitchen.", "flite:slt"), 0.3))
    samples = read_wav(wav)[0]
    dep = deployment(
        hub_address,
        {
            "microphone": {"file": str(wav)},
            "cameras": {"counter": {"source": str(frames_folder(tmp_path)), "fps": 1}, "door": {"source": 7}},
        },
    )
    sub = Subscriber(hub.endpoints, ["audio/kitchen/", "video/kitchen/", "node_status/kitchen/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    await asyncio.sleep(0.2)
    agent = EdgeAgent(dep, NODE)
    t_start = time.time()
    await asyncio.wait_for(agent.run(once=True), 30)
    await asyncio.sleep(0.3)
    rx.cancel()
    sub.close()

    audio = of(got, AudioChunk)
    assert [c.seq for c in audio] == list(range(1, len(audio) + 1))
    assert {(c.room, c.source, c.rate) for c in audio} == {("kitchen", NODE, 16000)}
    assert np.array_equal(np.frombuffer(b"".join(c.data for c in audio), "<i2"), samples)  # lossless
    times = np.array([c.time for c in audio])
    np.testing.assert_allclose(np.diff(times), 0.08, atol=0.02)  # a few ms steps while the clock sync converges
    assert t_start - 0.5 < times[0] < t_start + 2.0  # hub clock (≈ Unix time on one machine)

    video = of(got, VideoFrame)
    assert [(f.source, f.seq, f.width) for f in video] == [("counter", i, 640) for i in (1, 2, 3)]
    assert all(cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR) is not None for f in video)

    errors = [s for s in of(got, NodeStatus) if s.node == NODE and s.state == "error"]
    assert errors and errors[0].role == "edge"
    assert errors[0].detail.startswith("camera door (USB camera 7): cannot open USB camera 7")
    assert NODE in hub.nodes
    summary = agent.summary()
    assert summary["sent"]["audio"] == len(audio) and summary["dropped_audio"] == 0
    print(
        "capture→publish overhead (busy shared machine):",
        summary.get("audio_overhead_ms"),
        summary.get("video_overhead_ms"),
    )


async def _outage_run(tmp_path: Path, buffer_s: float, outage_s: float) -> tuple[list[AudioChunk], EdgeAgent, float]:
    address = f"ipc://{tmp_path}/hub-{uuid.uuid4().hex[:6]}"
    wav = write_wav(tmp_path / "long.wav", concat(speech("The garden looks green today.", "flite:rms"), 5.0))
    dep = deployment(address, {"microphone": {"file": str(wav)}})
    cfg = HubConfig(address=address, heartbeat=0.1, down_after=0.5)
    hub = Hub(cfg)
    await hub.start()
    sub = Subscriber(hub.endpoints, ["audio/kitchen/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    await asyncio.sleep(0.2)
    agent = EdgeAgent(dep, NODE, buffer_s=buffer_s)
    run = asyncio.create_task(agent.run(once=True))
    try:
        await asyncio.sleep(1.5)
        await hub.stop()
        await asyncio.sleep(outage_s)
        held = len(agent.outbox)
        hub = Hub(cfg)  # the hub comes back on the same address; nobody restarts the agent
        await hub.start()
        await asyncio.wait_for(run, 30)
        await asyncio.sleep(0.5)
    finally:
        rx.cancel()
        sub.close()
        await hub.stop()
    return of(got, AudioChunk), agent, held


@pytest.mark.slow
async def test_agent_holds_audio_while_the_hub_is_down_and_sends_it_after(tmp_path: Path) -> None:
    audio, agent, held = await _outage_run(tmp_path, buffer_s=30.0, outage_s=2.0)
    assert held >= 10  # the agent noticed the outage and held audio itself
    seqs = [c.seq for c in audio]
    total = agent.outbox.sent["audio"]
    assert sorted(seqs) == list(range(1, total + 1)), "audio lost or duplicated across the outage"
    assert seqs == sorted(seqs)  # in order
    times = np.array([c.time for c in audio])
    np.testing.assert_allclose(np.diff(times), 0.08, atol=0.02)  # no hole in the audio timeline
    assert agent.outbox.dropped_audio == 0


@pytest.mark.slow
async def test_agent_buffer_is_bounded_and_drops_the_oldest_audio(tmp_path: Path) -> None:
    audio, agent, _ = await _outage_run(tmp_path, buffer_s=0.4, outage_s=2.5)
    seqs = [c.seq for c in audio]
    missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
    assert agent.outbox.dropped_audio > 0 and len(missing) == agent.outbox.dropped_audio
    runs: list[list[int]] = []
    for m in missing:
        if runs and m == runs[-1][-1] + 1:
            runs[-1].append(m)
        else:
            runs.append([m])
    # one long hole: the oldest audio of the 2.5 s outage (a short one may precede it: the start-up
    # backlog before the first heartbeat answer also overflows a 0.4 s buffer)
    hole = max(runs, key=len)
    assert len(runs) <= 2 and len(hole) >= 15 and hole == runs[-1]
    assert [s for s in seqs if s > hole[-1]][:5] == list(range(hole[-1] + 1, hole[-1] + 6))  # the newest 0.4 s kept


async def test_outbox_survives_a_failing_socket() -> None:
    box = Outbox(buffer_s=1.0)
    sent: list[int] = []

    async def publish(msg: Message) -> None:
        if msg.seq == 2:
            raise OSError("socket closed")
        sent.append(msg.seq)

    task = asyncio.create_task(box.run(publish, lambda: True, Clock()))
    for i in (1, 2, 3):
        box.put(AudioChunk(seq=i, data=b"\0\0"))
    await asyncio.wait_for(box.drain(), 5)
    task.cancel()
    assert sent == [1, 3] and box.publish_errors == 1


def test_outbox_keeps_only_the_latest_frame_per_camera() -> None:
    box = Outbox(buffer_s=1.0)
    for i in range(5):
        box.put(VideoFrame(seq=i + 1, source="door", data=b"x"))
        box.put(VideoFrame(seq=i + 1, source="yard", data=b"y"))
    assert [(f.source, f.seq) for f in box.video.values()] == [("door", 5), ("yard", 5)]
    assert box.replaced_video == 8


@pytest.mark.slow
async def test_agent_with_local_wake_streams_only_the_command(hub: Hub, hub_address: str, tmp_path: Path) -> None:
    command = speech("Hey Jarvis, what time is it?", "piper:joe")
    chatter = speech("Good morning.", "flite:awb")
    wav = write_wav(tmp_path / "room.wav", concat(chatter, 0.7, command, 2.5))
    dep = deployment(
        hub_address,
        {"microphone": {"file": str(wav), "local_wake": True, "preroll_ms": 1500}},
    )
    sub = Subscriber(hub.endpoints, ["audio/kitchen/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    await asyncio.sleep(0.2)
    agent = EdgeAgent(dep, NODE, hold_s=1.5)
    await asyncio.wait_for(agent.run(once=True), 40)
    await asyncio.sleep(0.3)
    rx.cancel()
    sub.close()
    audio = of(got, AudioChunk)
    assert agent.gate is not None and agent.gate.detections
    assert audio and [c.seq for c in audio] == list(range(1, len(audio) + 1))
    streamed = np.frombuffer(b"".join(c.data for c in audio), "<i2")
    samples = read_wav(wav)[0]
    # where the streamed audio begins in the file (it is byte-exact): after the chatter, before "hey jarvis"
    k = next(i for i in range(0, len(samples), 1280) if np.array_equal(samples[i : i + 1280], streamed[:1280]))
    wake_at = len(chatter) + int(0.7 * 16000)
    assert len(chatter) - 1280 <= k <= wake_at
    assert np.array_equal(streamed, samples[k : k + len(streamed)])  # one contiguous, lossless segment
    assert audio[0].time >= agent.gate.detections[0].time - 1.5 - 0.08  # pre-roll bound
    model = WakeWordModel(["hey_jarvis"])
    assert max(model.score(streamed[i : i + 1280])["hey_jarvis"] for i in range(0, len(streamed) - 1279, 1280)) > 0.5


async def test_agent_plays_its_rooms_answers_and_reports_playback(hub: Hub, hub_address: str, tmp_path: Path) -> None:
    out = tmp_path / "spoken"
    dep = deployment(hub_address, {"playback": {"wav_dir": str(out), "rate": 16000}}, hall={})
    sub = Subscriber(hub.endpoints, ["playback/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    agent = EdgeAgent(dep, NODE)
    run = asyncio.create_task(agent.run())
    pub = Publisher(hub.endpoints)
    try:
        while agent.link is None or not agent.link.connected:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the agent's subscription reaches the hub's proxy
        voice = speech("It is seven o'clock.", "flite:slt")
        half = len(voice) // 2
        for room in ("hall", "kitchen"):  # the hall's answer is not for this node
            for i, part in enumerate((voice[:half], voice[half:])):
                await pub.publish(
                    TtsAudio(
                        room=room,
                        source="tts",
                        answer_id=f"a-{room}",
                        chunk=i,
                        text="It is seven o'clock.",
                        final=i == 1,
                        data=part.tobytes(),
                    )
                )
        deadline = time.monotonic() + 15
        while not any(isinstance(m, PlaybackStatus) and m.state == "ended" for _, m in got):
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
    finally:
        agent.stop()
        await asyncio.wait_for(run, 10)
        pub.close()
        rx.cancel()
        sub.close()
    states = [(m.answer_id, m.state) for m in of(got, PlaybackStatus)]
    assert states == [("a-kitchen", "started"), ("a-kitchen", "ended")]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["kitchen_a-kitchen.wav"]
    played = read_wav(out / files[0])[0]
    assert abs(len(played) - len(voice)) < 1600 and np.corrcoef(played[: len(voice)], voice[: len(played)])[0, 1] > 0.9


# --------------------------------------------------------------------------------- the command


def _config(tmp_path: Path, address: str, edge: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(
        f'[hub]\naddress = "{address}"\nheartbeat = "100ms"\n\n[rooms.kitchen]\n\n[edges.{NODE}]\nroom = "kitchen"\n'
        + edge
        + '\n[stages.stt]\nmodel = "tiny.en"\n'
    )
    return path


def test_edge_help_explains_itself() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sensorium", "edge", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    for text in ("--config", "--name", "--wav", "--speed", "--hub", "--buffer", "kitchen-pi", "no torch"):
        assert text in res.stdout, text


def test_edge_command_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f"ipc://{tmp_path}/hub", "")
    cfg.write_text(cfg.read_text() + '\n[edges.cam-pi]\nroom = "kitchen"\n[edges.cam-pi.cameras.door]\nfps = 0\n')
    bad_wav = tmp_path / "x.wav"
    bad_wav.write_text("nope")
    for args, text in (
        (["--name", "attic-pi"], "no edge node named 'attic-pi' (known: kitchen-pi, cam-pi)"),
        (["--name", NODE, "--wav", str(bad_wav)], "not a readable WAV"),
        (["--name", NODE, "--hub", "udp://x"], "expected tcp://HOST:PORT"),
        (["--name", "cam-pi"], "[edges.cam-pi.cameras.door] fps must be > 0, got 0.0"),
    ):
        res = subprocess.run(
            [sys.executable, "-m", "sensorium", "edge", "--config", str(cfg), *args],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert text in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@pytest.mark.slow
async def test_edge_command_streams_a_file_and_imports_no_torch(hub: Hub, hub_address: str, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "cmd.wav", concat(speech("Hey Jarvis, lights off.", "flite:slt"), 0.5))
    address = hub_address
    edge = (
        f'[edges.{NODE}.microphone]\nfile = "{wav}"\nlocal_wake = true\n\n'
        f'[edges.{NODE}.cameras.counter]\nsource = "{frames_folder(tmp_path)}"\nfps = 1\n'
    )
    cfg = _config(tmp_path, address, edge)
    stats = tmp_path / "stats.json"
    sub = Subscriber(hub.endpoints, ["audio/kitchen/", "video/kitchen/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    await asyncio.sleep(0.2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "sensorium", "edge", "--config", str(cfg), "--name", NODE,
        "--once", "--stats", str(stats), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    await asyncio.sleep(0.3)
    rx.cancel()
    sub.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    imported = {line.split("|")[-1].strip() for line in err.decode().splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "cv2" in imported  # the wake gate and cameras really ran
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"the edge imported {heavy}"
    summary = json.loads(stats.read_text())
    assert summary["sent"]["video"] == 3 and summary["wake"]["detections"] >= 1
    assert len(of(got, AudioChunk)) == summary["sent"]["audio"] > 0
    assert f"edge {NODE} in kitchen: audio from" in out.decode()


def test_clock_is_shared_with_sources(tmp_path: Path) -> None:
    dep = deployment(f"ipc://{tmp_path}/hub", {"microphone": {"file": str(tmp_path / "x.wav")}})
    clock = Clock()
    agent = EdgeAgent(dep, NODE, clock=clock)
    src = agent._make_audio()
    assert src is not None and src.clock is clock  # capture times follow the hub sync of the node link


async def test_agent_fails_closed_when_the_local_wake_model_is_missing(
    hub: Hub, hub_address: str, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "w.wav", concat(speech("Hey Jarvis, lights on.", "flite:slt"), 0.2))
    dep = deployment(
        hub_address,
        {
            "microphone": {"file": str(wav), "local_wake": True},
            "cameras": {"counter": {"source": str(frames_folder(tmp_path)), "fps": 2}},
        },
    )
    sub = Subscriber(hub.endpoints, ["audio/kitchen/", "video/kitchen/", "node_status/kitchen/"])
    got: list[tuple[float, Message]] = []
    rx = asyncio.create_task(receive(sub, got))
    await asyncio.sleep(0.2)
    agent = EdgeAgent(dep, NODE, wake_models=(str(tmp_path / "missing_wake.onnx"),))
    await asyncio.wait_for(agent.run(once=True), 30)
    await asyncio.sleep(0.3)
    rx.cancel()
    sub.close()
    assert of(got, AudioChunk) == []  # no wake gate, no audio leaves the Pi
    assert len(of(got, VideoFrame)) >= 2  # the rest of the node keeps working
    [err] = [s for s in of(got, NodeStatus) if s.node == NODE and s.state == "error"]
    assert "local wake gate unavailable" in err.detail and "missing_wake.onnx" in err.detail
    assert "audio is not streamed" in err.detail


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
async def test_edge_command_stops_cleanly_on_a_signal_without_a_hub(tmp_path: Path, sig: str) -> None:
    import signal

    wav = write_wav(tmp_path / "w.wav", concat(speech("Good evening.", "flite:slt"), 3.0))
    cfg = _config(tmp_path, f"ipc://{tmp_path}/nobody-home", f'[edges.{NODE}.microphone]\nfile = "{wav}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sensorium", "edge", "--config", str(cfg), "--name", NODE, "--loop",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    banner = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert banner.decode().startswith(f"edge {NODE} in kitchen: audio from")
    await asyncio.sleep(1.5)  # capturing into the outage buffer: the hub never answers
    proc.send_signal(getattr(signal, sig))
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    # nothing reached a hub and nothing crashed: the ~1.5 s of audio captured (less on a loaded machine) still held
    text = out.decode()
    held = re.search(rf"edge {NODE}: sent {{}}, (\d+) unsent \(hub unreachable\)", text)
    assert held and int(held.group(1)) >= 5, text


@pytest.mark.slow
async def test_a_second_edge_under_a_running_edges_name_is_refused_and_the_first_keeps_streaming(
    hub: Hub, hub_address: str, tmp_path: Path
) -> None:
    """The help's second example (``--name kitchen-pi --wav … --once``) while the kitchen edge runs. Fixed by
    names bound to the connection that registered them: before, the second process took the name's socket
    identity, exited after its file, and the running edge was cut off from the hub for good."""
    wav = write_wav(tmp_path / "tone.wav", concat(0.2, speech("Good morning, kitchen.", "flite:slt"), 0.2))
    cfg = _config(tmp_path, hub_address, "")
    sub = Subscriber(hub.endpoints, [f"audio/kitchen/{NODE}"])
    got: list[tuple[float, Message]] = []
    reader = asyncio.create_task(receive(sub, got))
    base = [sys.executable, "-m", "sensorium", "edge", "--config", str(cfg), "--name", NODE, "--wav", str(wav)]
    first = await asyncio.create_subprocess_exec(*base, "--loop", cwd=REPO, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(300):
            if len(got) > 10:
                break
            await asyncio.sleep(0.05)
        assert len(got) > 10, "the first edge never streamed"
        second = await asyncio.create_subprocess_exec(
            *base, "--once", cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 1, err.decode()[-2000:]
        assert "'kitchen-pi' is in use by a running edge" in err.decode()
        n = len(got)
        await asyncio.sleep(3.0)
        assert len(got) - n >= 20, "the running edge stopped streaming after the second one ran"  # 12.5 chunks/s
        assert hub.nodes[NODE].state == "up"
    finally:
        first.terminate()
        await first.wait()
        reader.cancel()
        sub.close()
