"""Edge playback: WAV sink in real time, jitter buffer, resampling, status reports, barge-in stop latency."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from media import read_wav

from edge.playback import Player, resample_linear
from pipeline.clock import Clock
from pipeline.config import PlaybackConfig
from pipeline.messages import Message, PlaybackStatus, TtsAudio


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
    out = resample_linear(pcm, src, dst)
    assert out.dtype == np.int16 and abs(len(out) - dst // 2) <= 1
