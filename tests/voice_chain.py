"""Voice stage chains for tests: wake → stt → speaker through the real StageRunner (``pipeline.harness``), no bus.

Audio is fed paced at real time (or ``speed`` times faster), because streaming behaviour (partials
while the person speaks) depends on audio arriving over time. The session's times (``t0``) are put
on the harness's clock when the audio starts, so the runners measure real latencies; the degrade
ladder is held still (a busy test machine must not switch stt to its cheaper modes mid-test).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from sensorium.pipeline.harness import StageHarness
from sensorium.pipeline.messages import AudioChunk, Message
from sensorium.pipeline.runtime import LadderPolicy
from sensorium.pipeline.stage import Stage


class Chain:
    """Stages wired to each other by what they consume, each under its real runner."""

    def __init__(self) -> None:
        self.harness = StageHarness(rooms=("kitchen", "office"), policy=LadderPolicy(overrun_after=10**9))
        self.stages: list[Stage] = []

    @property
    def out(self) -> list[tuple[float, Message]]:
        """Every published message with the monotonic time it was published."""
        return list(zip(self.harness.published_at, self.harness.out, strict=True))

    async def add(self, cls: type[Stage], **kw: Any) -> Stage:
        """Create, start and wire a stage (``kw``: its options, plus context fields such as ``device``)."""
        ctx_kw = {k: kw.pop(k) for k in ("device", "data_dir", "sources", "max_future") if k in kw}
        stage = await self.harness.add(cls, cls.Options(**kw), **ctx_kw)
        self.stages.append(stage)
        return stage

    def offer(self, msg: Message) -> None:
        self.harness.offer(msg)

    async def play(
        self,
        streams: dict[tuple[str, str], np.ndarray],
        t0: float = 1_000_000.0,
        speed: float = 1.0,
        stop_at: dict[tuple[str, str], float] | None = None,
    ) -> float:
        """Feed several rooms' audio in parallel, 80 ms chunks, paced; returns the monotonic start.

        ``stop_at`` cuts a stream off after that many seconds (a node that dies mid-sentence).
        """
        from media import chunks

        per = {k: chunks(pcm, room=k[0], source=k[1], t0=t0) for k, pcm in streams.items()}
        n = max(len(c) for c in per.values())
        start = time.monotonic()
        self.harness.clock.offset = t0 - start  # the session's time is now
        if speed > 1:  # audio played faster than real time is stamped ahead on purpose
            for r in self.harness.runners:
                r.ctx.max_future = None
        for i in range(n):
            for key, cs in per.items():
                if i < len(cs) and (stop_at is None or cs[i].time - t0 < stop_at.get(key, 1e9)):
                    self.offer(cs[i])
            delay = start + (i + 1) * 0.08 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return start

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every stage handled everything queued and its background work is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.harness.drain(max(0.1, deadline - time.monotonic()))
            await asyncio.sleep(0.05)
            if not any(r.depth for r in self.harness.runners) and not any(
                getattr(s, "_tasks", None) for s in self.stages
            ):
                return
        raise TimeoutError("voice chain did not settle")

    def of(self, cls: type[Message]) -> list:
        """Published messages of one type, in order."""
        return self.harness.of(cls)

    async def close(self) -> None:
        await self.harness.close()


def audio_chunk(**kw: Any) -> AudioChunk:
    """An ``AudioChunk`` with defaults for hand-made bad input."""
    kw.setdefault("time", 1_000_000.0)
    kw.setdefault("room", "kitchen")
    kw.setdefault("source", "kitchen-pi")
    return AudioChunk(**kw)
