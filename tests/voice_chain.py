"""A small in-process router for voice stage tests: wake → stt → speaker, no bus.

Each stage gets its own queue and one task calling ``handle`` in order, like the runtime does;
whatever a stage publishes goes to ``out`` and to every other stage that consumes its topic.
Audio is fed paced at real time (or ``speed`` times faster), because streaming behaviour (partials
while the person speaks) depends on audio arriving over time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from pipeline.messages import AudioChunk, Message
from pipeline.stage import Stage, StageContext


class Chain:
    """Stages wired to each other through queues."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.out: list[tuple[float, Message]] = []
        """Every published message with the monotonic time it was published."""
        self._queues: dict[Stage, asyncio.Queue] = {}
        self._tasks: list[asyncio.Task] = []

    async def add(self, cls: type[Stage], rooms: tuple[str, ...] = ("kitchen", "office"), **kw: Any) -> Stage:
        """Create, start and wire a stage (``kw``: its options, plus context fields such as ``device``)."""
        ctx_kw = {k: kw.pop(k) for k in ("device", "data_dir", "sources", "max_future") if k in kw}
        ctx = StageContext(
            name=cls.name, worker="test", options=cls.Options(**kw), rooms=rooms, emit=self._emit, **ctx_kw
        )
        stage = cls(ctx)
        await stage.start()
        self.stages.append(stage)
        q: asyncio.Queue = asyncio.Queue()
        self._queues[stage] = q
        self._tasks.append(asyncio.create_task(self._pump(stage, q)))
        return stage

    async def _pump(self, stage: Stage, q: asyncio.Queue) -> None:
        while True:
            msg = await q.get()
            try:
                await stage.handle(msg)
            finally:
                q.task_done()

    async def _emit(self, msg: Message) -> None:
        self.out.append((time.monotonic(), msg))
        self.offer(msg)

    def offer(self, msg: Message) -> None:
        topic = msg.topic()
        for stage, q in self._queues.items():
            if topic.startswith(stage.consumes):
                q.put_nowait(msg)

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
        for i in range(n):
            for key, cs in per.items():
                if i < len(cs) and (stop_at is None or cs[i].time - t0 < stop_at.get(key, 1e9)):
                    self.offer(cs[i])
            delay = start + (i + 1) * 0.08 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return start

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until every queue is empty and every stage's background work is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for q in self._queues.values():
                await q.join()
            for s in self.stages:
                drain = getattr(s, "drain", None)
                if drain is not None:
                    await asyncio.wait_for(drain(), max(0.1, deadline - time.monotonic()))
            if all(q.empty() for q in self._queues.values()):
                await asyncio.sleep(0.05)
                if all(q.empty() for q in self._queues.values()) and not any(
                    getattr(s, "_tasks", None) for s in self.stages
                ):
                    return
        raise TimeoutError("voice chain did not settle")

    def of(self, cls: type[Message]) -> list:
        """Published messages of one type, in order."""
        return [m for _, m in self.out if isinstance(m, cls)]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for s in self.stages:
            await s.stop()
            s.ctx.close()


def audio_chunk(**kw: Any) -> AudioChunk:
    """An ``AudioChunk`` with defaults for hand-made bad input."""
    kw.setdefault("time", 1_000_000.0)
    kw.setdefault("room", "kitchen")
    kw.setdefault("source", "kitchen-pi")
    return AudioChunk(**kw)
