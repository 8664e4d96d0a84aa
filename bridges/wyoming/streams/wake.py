"""A wake word request: ``detect`` + audio → ``detection`` / ``not-detected``.

The audio is published as a stream of the ``[wyoming] room``; each ``WakeDetected`` of that stream (the wake
stage's refractory makes one per spoken wake word) → ``detection``; ``not-detected`` after ``audio-stop`` if
none came. Every ``audio-start`` starts a fresh stream (the wake stage restarts its state).
"""

from __future__ import annotations

import asyncio
import re
import time

from wyoming.audio import AudioChunk, AudioStart
from wyoming.wake import Detection, NotDetected

from sensorium.bridges.wyoming.audio import RATE, AudioIn
from sensorium.bridges.wyoming.connection import Connection, RequestFailed
from sensorium.bridges.wyoming.gateway import PoolFull
from sensorium.pipeline.messages import Listen, Message, WakeDetected

WAKE_GRACE = 0.3
"""After ``audio-stop``, how long a detection of the last audio may still come before ``not-detected``."""


def wake_key(name: str) -> str:
    """Wake word name as compared: "Hey Jarvis", "hey_jarvis_v0.1" → "hey_jarvis"."""
    return re.sub(r"_v\d+(\.\d+)*$", "", name.strip().lower().replace(" ", "_").replace("-", "_"))


class WakeStream:
    """One ``audio-start`` … ``audio-stop`` of a wake word request."""

    def __init__(self, h: Connection, names: list[str] | None, start: AudioStart) -> None:
        self.h = h
        gw = h.gw
        self.names = set(names) if names else None
        try:
            self.node, self.t0 = gw.pool.acquire("wake")
        except PoolFull as exc:
            raise RequestFailed(str(exc), "busy") from None
        self.start_ts = start.timestamp or 0
        self.audio = AudioIn(gw.block)
        self.sent = 0
        self.detections = 0
        self.failed = False
        self.over = False
        """Stopped or abandoned: nothing more to do."""
        self._remove = gw.bus.listen(WakeDetected, self._on_wake)
        self._check = h.spawn(self._check_stage())

    async def _check_stage(self) -> None:
        reason = await self.h.gw.bus.stage_down("wake")
        if reason:
            self.failed = True
            raise RequestFailed(reason, "stage-down")

    async def feed(self, chunk: AudioChunk) -> None:
        for block in self.audio.feed(chunk):
            await self._publish(block)

    async def _publish(self, block: bytes) -> None:
        t = self.t0 + self.sent / RATE
        self.sent += len(block) // 2
        await self.h.gw.publish_audio(self.node, t, block, lambda: not self.over)

    def _on_wake(self, msg: Message) -> None:
        gw = self.h.gw
        if not isinstance(msg, WakeDetected) or msg.room != gw.room or (msg.node or msg.source) != self.node:
            return
        if self.names is not None and msg.word not in self.names:
            return
        received = time.perf_counter()
        self.detections += 1
        stamp = self.start_ts + round((msg.time - self.t0) * 1000)
        # The stt stage opened an utterance on this wake word; it is Home Assistant's to follow up, not ours.
        listen = Listen(room=gw.room, node=self.node, action="drop", time=msg.time)

        async def send() -> None:
            await self.h.write(Detection(name=msg.word, timestamp=stamp).event())
            gw.metrics.answer_us.append((time.perf_counter() - received) * 1e6)
            await gw.bus.publish(listen)

        self.h.spawn(send())

    async def stop(self) -> None:
        rest = self.audio.flush()
        if rest:
            await self._publish(rest)
        if not self.detections and not self.failed:
            deadline = time.monotonic() + WAKE_GRACE
            while not self.detections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not self.detections:
                await self.h.write(NotDetected().event())
        self._release()

    async def abandon(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.over:
            return
        self.over = True
        self._remove()
        self.h.gw.pool.release(self.node, self.t0 + self.sent / RATE)
