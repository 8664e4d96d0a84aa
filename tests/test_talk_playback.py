"""Edge playback: WAV sink in real time, jitter buffer, resampling, status reports, barge-in stop latency."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pulse
import pytest
from media import read_wav

from sensorium.edge.playback import Player
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import PlaybackConfig
from sensorium.pipeline.media import resample
from sensorium.pipeline.messages import Message, PlaybackStatus, TtsAudio


def tone(seconds: float, rate: int = 16000, hz: float = 300.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def make_player(tmp_path, jitter_ms: int = 60, rate: int = 22050):
    events: list[Message] = []

    async def publish(msg: Message) -> None:
        events.append(msg)

    cfg = PlaybackConfig(wav_dir=str(tmp_path / "out"), rate=rate, jitter_ms=jitter_ms)
    return Player(cfg, room="kitchen", node="kitchen-pi", clock=Clock(), publish=publish), events


def chunk(aid: str, i: int, text: str, seconds: float, final: bool = False, rate: int = 16000) -> TtsAudio:
    return TtsAudio(room="kitchen", answer_id=aid, chunk=i, text=text, rate=rate, final=final, data=tone(seconds, rate))


def statuses(events: list[Message]) -> list[tuple[str, str, str]]:
    return [(e.answer_id, e.state, e.played_text) for e in events if isinstance(e, PlaybackStatus)]


async def test_plays_an_answer_in_real_time_into_a_wav_and_reports_start_and_end(tmp_path) -> None:
    player, events = make_player(tmp_path)
    t0 = time.monotonic()
    await player.feed(chunk("a", 0, "Hello there.", 0.3))
    await player.feed(chunk("a", 1, "Bye.", 0.2, final=True))
    async with asyncio.timeout(5):
        await player.wait_idle()
    took = time.monotonic() - t0
    await player.close()
    assert statuses(events) == [("a", "started", ""), ("a", "ended", "Hello there. Bye.")]
    assert all(e.room == "kitchen" and e.source == "kitchen-pi" for e in events)
    assert 0.45 <= took < 1.5  # paced like a loudspeaker, not dumped at once
    pcm, rate = read_wav(player.sink.files[0])
    assert rate == 22050 and abs(len(pcm) / rate - 0.5) < 0.01  # 16 kHz chunks resampled to the device rate


async def test_answers_play_one_after_another_and_a_late_chunk_waits_in_order(tmp_path) -> None:
    player, events = make_player(tmp_path)
    await player.feed(chunk("a", 0, "One.", 0.15))
    await player.feed(chunk("b", 0, "Other answer.", 0.1, final=True))
    await asyncio.sleep(0.3)  # "a" underruns: its next sentence is still being synthesized
    await player.feed(chunk("a", 1, "Two.", 0.1, final=True))
    async with asyncio.timeout(5):
        await player.wait_idle()
    await player.close()
    assert statuses(events) == [
        ("a", "started", ""),
        ("a", "ended", "One. Two."),
        ("b", "started", ""),
        ("b", "ended", "Other answer."),
    ]


async def test_jitter_buffer_holds_the_start_until_enough_audio_is_here(tmp_path) -> None:
    player, events = make_player(tmp_path, jitter_ms=200)
    await player.feed(chunk("a", 0, "Hi.", 0.05))
    await asyncio.sleep(0.1)
    assert statuses(events) == []  # 50 ms buffered < 200 ms jitter: not started yet
    await player.feed(chunk("a", 1, "There.", 0.3, final=True))
    async with asyncio.timeout(5):
        await player.wait_idle()
    await player.close()
    assert [s[1] for s in statuses(events)] == ["started", "ended"]


async def test_barge_in_stop_is_fast_and_reports_what_was_cut_off(tmp_path) -> None:
    player, events = make_player(tmp_path)
    await player.feed(chunk("a", 0, "First sentence.", 0.3))
    await player.feed(chunk("a", 1, "Second sentence that gets cut.", 2.0))
    await player.feed(chunk("b", 0, "Queued answer.", 0.5, final=True))
    await asyncio.sleep(0.6)
    latency = await player.stop()
    stopped_at = time.monotonic()
    await player.feed(chunk("a", 2, "Late chunk of the stopped answer.", 0.5, final=True))
    await asyncio.sleep(0.2)
    await player.close()
    print(f"barge-in stop latency {latency * 1000:.1f} ms")
    assert latency < 0.05  # within one 20 ms block plus scheduling
    assert statuses(events) == [("a", "started", ""), ("a", "stopped", "First sentence.")]
    pcm, rate = read_wav(player.sink.files[0])
    assert len(player.sink.files) == 1  # the queued answer and the late chunk never played
    assert 0.55 < len(pcm) / rate < 0.7  # the file ends where playback stopped (~0.6 s in)
    assert time.monotonic() - stopped_at < 1.0


async def test_stop_of_a_queued_answer_drops_it_without_touching_the_current_one(tmp_path) -> None:
    player, events = make_player(tmp_path)
    await player.feed(chunk("a", 0, "Playing.", 0.3, final=True))
    await player.feed(chunk("b", 0, "Never.", 0.3, final=True))
    await asyncio.sleep(0.1)
    assert await player.stop("b") == 0.0
    async with asyncio.timeout(5):
        await player.wait_idle()
    await player.close()
    assert statuses(events) == [("a", "started", ""), ("a", "ended", "Playing.")]


async def test_malformed_chunk_is_dropped_and_playback_continues(tmp_path) -> None:
    player, events = make_player(tmp_path)
    await player.feed(TtsAudio(room="kitchen", answer_id="x", rate=16000, data=b"\x01\x02\x03"))
    await player.feed(TtsAudio(room="kitchen", answer_id="x", rate=0, data=b"\x00\x00"))
    await player.feed(chunk("a", 0, "Fine.", 0.1, final=True))
    async with asyncio.timeout(5):
        await player.wait_idle()
    await player.close()
    assert statuses(events) == [("a", "started", ""), ("a", "ended", "Fine.")]


@pytest.mark.parametrize(("src", "dst"), [(16000, 22050), (22050, 48000), (22050, 16000)])
def test_resample_linear_matches_durations(src: int, dst: int) -> None:
    pcm = np.frombuffer(tone(0.5, src), "<i2")
    out = resample(pcm, src, dst)
    assert out.dtype == np.int16 and abs(len(out) - dst // 2) <= 1


# The real PortAudio path: sounddevice plays into a PulseAudio null sink (PortAudio's ALSA "pulse"
# device, routed by PULSE_SINK) while parec records the sink's monitor: what a loudspeaker would get.


@pytest.fixture
def null_sink() -> Iterator[str]:
    with pulse.null_sink("sensorium_talk", 22050) as name:
        yield name


def _route_to(sink: str) -> None:
    """Move this process's playback streams to ``sink`` (stream-restore may have put them elsewhere)."""
    mine = pulse.streams_of_this_process("sink-inputs")
    assert mine, "the player opened no PulseAudio stream"
    for index in mine:
        assert pulse.pactl("move-sink-input", str(index), sink).returncode == 0


def _align(recorded: np.ndarray, played: np.ndarray) -> float:
    """Correlation of the recording with what was played, at the best lag."""
    from scipy.signal import correlate

    x, a = recorded.astype(np.float64), played.astype(np.float64)
    k = int(np.argmax(np.abs(correlate(x, a, mode="full")))) - (len(a) - 1)
    aa, xx = (a[-k:], x[: len(a) + k]) if k < 0 else (a[: len(x) - k], x[k : k + len(a)])
    n = min(len(aa), len(xx))
    return float(np.dot(xx[:n], aa[:n]) / (np.linalg.norm(xx[:n]) * np.linalg.norm(aa[:n]) + 1e-9))


@contextlib.contextmanager
def _recording(sink: str, path: Path) -> Iterator[list[np.ndarray]]:
    """Record ``sink``'s monitor (what a loudspeaker plays) while the block runs."""
    out: list[np.ndarray] = []
    with open(path, "wb") as f:
        rec = subprocess.Popen(
            [
                "parec",
                f"--device={sink}.monitor",
                "--rate=22050",
                "--channels=1",
                "--format=s16le",
                "--latency-msec=20",
            ],
            stdout=f,
        )
        try:
            yield out
        finally:
            rec.send_signal(signal.SIGINT)  # parec writes out what it holds on SIGINT
            rec.wait(5)
    out.append(np.fromfile(path, "<i2"))


@pytest.mark.slow
async def test_sounddevice_plays_to_the_speaker_and_barge_in_silences_it(null_sink, tmp_path, monkeypatch) -> None:
    """One player for the whole test, as on an edge node (PortAudio's ALSA "pulse" device stalls a second
    output stream opened in the same process after the first was closed)."""
    from sensorium.models.tts import FliteTts

    monkeypatch.setenv("PULSE_SINK", null_sink)
    # A fresh application name: PulseAudio's stream-restore must not send us to a sink remembered from before.
    monkeypatch.setenv("PULSE_PROP", f"application.name=sensorium-test-{uuid.uuid4().hex[:8]}")
    events: list[Message] = []

    async def publish(msg: Message) -> None:
        events.append(msg)

    player = Player(PlaybackConfig(device="pulse", rate=22050), "kitchen", "kitchen-pi", Clock(), publish)
    try:
        _route_to(null_sink)
        # 1. A two-sentence answer reaches the speaker sample for sample (resampled 16 -> 22.05 kHz).
        texts = ["The kitchen light is on.", "The front door is locked."]
        audio = [FliteTts().synthesize(t) for t in texts]
        with _recording(null_sink, tmp_path / "a.raw") as rec:
            await asyncio.sleep(0.3)
            for i, (t, (a, r)) in enumerate(zip(texts, audio, strict=True)):
                await player.feed(TtsAudio(answer_id="a", chunk=i, text=t, rate=r, final=i == 1, data=a.tobytes()))
            async with asyncio.timeout(20):
                await player.wait_idle()
            await asyncio.sleep(0.3)
        played = resample(np.concatenate([a for a, _ in audio]), audio[0][1], 22050)
        assert _align(rec[0], played) > 0.95
        assert statuses(events) == [("a", "started", ""), ("a", "ended", " ".join(texts))]
        # 2. Barge-in one second into a long answer: the speaker goes quiet at once.
        texts = ["Tomorrow will be cloudy with light rain around noon.", "In the afternoon the sun comes back."]
        audio = [FliteTts().synthesize(t) for t in texts]
        with _recording(null_sink, tmp_path / "b.raw") as rec:
            await asyncio.sleep(0.3)
            for i, (t, (a, r)) in enumerate(zip(texts, audio, strict=True)):
                await player.feed(TtsAudio(answer_id="b", chunk=i, text=t, rate=r, final=i == 1, data=a.tobytes()))
            await asyncio.sleep(1.0)
            latency = await player.stop()
            await asyncio.sleep(0.5)
    finally:
        await player.close()
    voiced = np.nonzero(np.abs(rec[0]) > 300)[0]
    assert len(voiced), f"nothing reached the speaker (peak {np.abs(rec[0]).max()})"
    heard = (voiced[-1] - voiced[0]) / 22050
    total = sum(len(a) / r for a, r in audio)
    print(f"sounddevice barge-in: stop() {latency * 1000:.1f} ms (with device buffer), heard {heard:.2f}/{total:.2f} s")
    assert latency < 0.15
    assert heard < 1.0 + 0.3  # quiet right after the stop, not at the end of the answer
    assert statuses(events)[2:] == [("b", "started", ""), ("b", "stopped", "")]  # the first sentence was cut


async def test_gain_scales_what_is_played_and_mute_silences_it(tmp_path) -> None:
    player, events = make_player(tmp_path, rate=16000)
    for volume, muted in ((1.0, False), (0.5, False), (0.5, True)):
        player.set_gain(volume, muted)
        await player.feed(chunk(f"v{volume}{muted}", 0, "Hi.", 0.2, final=True))
        async with asyncio.timeout(5):
            await player.wait_idle()
    player.set_gain(float("nan"))  # refused, logged: the gain stays
    assert player.gain == 0.0
    await player.close()
    peaks = [int(np.abs(read_wav(f)[0].astype(np.int32)).max()) for f in player.sink.files]
    assert peaks[0] > 7900 and abs(peaks[1] - peaks[0] / 2) <= 1 and peaks[2] == 0
    assert [s for _, s, _ in statuses(events)].count("ended") == 3  # muted answers still end
