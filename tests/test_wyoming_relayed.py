"""The gateway recognises a command another client (the ESPHome device) streams to Home Assistant when
Home Assistant relays it to our STT: the claim's audio, rebuilt from the room's chunks, holds the start of
what the device sent, whichever way the device cut its first chunk."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.bridges.rooms import RoomVoice
from sensorium.bridges.wyoming.gateway import MATCH_BYTES
from sensorium.bridges.wyoming.relayed import RelayedClaims
from sensorium.pipeline.messages import AudioChunk, Listen

RATE = 16000
CHUNK = 1280  # 80 ms, as an edge sends


class _Run:
    def __init__(self, node: str, wake_time: float) -> None:
        self.node = node
        self.wake_time = wake_time
        self.request_id = "esphome-kitchen-1234"
        self.streaming = True
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def stop_streaming(self) -> None:
        self.streaming = False


class _Bus:
    clock: Any = None

    async def publish(self, msg: Any) -> None: ...

    def listen(self, kind: str, fn: Any) -> Any:
        return lambda: None

    def stage_up(self, stage: str) -> bool:
        return True


class _Device(RoomVoice[_Run]):
    def ready(self) -> bool:
        return True

    def start_run(self, node: str, wake_time: float, word: str) -> _Run:
        return _Run(node, wake_time)


def _chunks(seed: int, n: int, t0: float = 100.0) -> list[AudioChunk]:
    rng = np.random.default_rng(seed)
    pcm = (rng.normal(0, 2000, n * CHUNK)).astype("<i2")
    return [
        AudioChunk(
            time=t0 + i * CHUNK / RATE,
            room="kitchen",
            source="kitchen-mic",
            rate=RATE,
            data=pcm[i * CHUNK : (i + 1) * CHUNK].tobytes(),
        )
        for i in range(n)
    ]


def _sent(run: _Run) -> bytes:
    out = b""
    while not run.queue.empty():
        out += run.queue.get_nowait() or b""
    return out


def _own(rid: str) -> bool:
    return rid.startswith("sensorium-")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    before=st.integers(3, 30),
    into=st.floats(0.0, 0.999),
    ring=st.booleans(),
)
def test_the_device_stream_is_found_in_the_claim(seed: int, before: int, into: float, ring: bool) -> None:
    """A run from the ring (cut at the wake time) or from now on (the next whole chunk) is recognised."""
    chunks = _chunks(seed, before + 20)
    device = _Device(_Bus(), "kitchen", {"kitchen-mic"}, logging.getLogger("test"))
    claims = RelayedClaims(_own, MATCH_BYTES)
    for c in chunks[:before]:
        device.on_audio(c)
        claims.on_audio(c)
    last = chunks[before - 1]
    # the wake word inside the last chunk heard (ring), or "now" a little after it was captured (no ring)
    wake = last.time + into * CHUNK / RATE
    run = device.begin("kitchen-mic", wake, "hey_jarvis" if ring else "", ring=ring)
    assert run is not None
    claims.on_listen(Listen(room="kitchen", node="kitchen-mic", action="open", time=wake, request_id=run.request_id))
    for c in chunks[before:]:
        device.on_audio(c)
        claims.on_audio(c)
    sent = _sent(run)
    assert len(sent) >= MATCH_BYTES
    [claim] = claims.candidates()
    assert claim.matches(sent[:MATCH_BYTES])
    assert not claim.matches(sent[CHUNK : CHUNK + 2] + sent[:MATCH_BYTES][2:] + b"\x01\x02")  # not any audio


def test_other_audio_and_own_claims_are_not_matched() -> None:
    chunks = _chunks(1, 40)
    other = _chunks(2, 40)
    claims = RelayedClaims(_own, MATCH_BYTES)
    for c in chunks[:10]:
        claims.on_audio(c)
    assert (
        claims.on_listen(Listen(room="kitchen", node="kitchen-mic", time=chunks[5].time, request_id="sensorium-x"))
        is None
    )
    claim = claims.on_listen(Listen(room="kitchen", node="kitchen-mic", time=chunks[5].time, request_id="esphome-k-1"))
    assert claim is not None
    assert (
        claims.on_listen(Listen(room="kitchen", node="kitchen-mic", time=chunks[5].time, request_id="esphome-k-1"))
        is None
    )
    for c in chunks[10:]:
        claims.on_audio(c)
    head = b"".join(c.data for c in chunks[5:])[:MATCH_BYTES]
    assert claim.matches(head)
    assert not claim.matches(b"".join(c.data for c in other[5:])[:MATCH_BYTES])  # another stream's audio
    later = b"".join(c.data for c in chunks[25:])[:MATCH_BYTES]
    assert not claim.matches(later)  # the same microphone, a later command
    # another room's audio under the same node name never enters the claim
    stray = AudioChunk(
        time=chunks[-1].time + 0.08, room="office", source="kitchen-mic", rate=RATE, data=b"\x07\x00" * CHUNK
    )
    claims.on_audio(stray)
    assert b"\x07\x00" * 8 not in claim.audio
