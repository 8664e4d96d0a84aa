"""Run stages on a list of messages through the real ``StageRunner``, without a bus: the test harness for stages.

Each stage gets the context a worker would give it and runs under a ``StageRunner`` (its queue,
budget, drops and degrade ladder); what a stage publishes is kept in ``out`` and handed to every
other stage whose declared inputs take it, as the bus would. ``run_stage`` is the one-call form::

    out = await run_stage(WakeStage, chunks, rooms=("kitchen",))
    assert [m.room for m in out if isinstance(m, WakeDetected)] == ["kitchen"]

Input times are on the harness's clock (``clock.now()``); pass ``clock=Clock(offset=...)`` to put a
recorded session's times on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from sensorium.pipeline.clock import Clock
from sensorium.pipeline.messages import Message
from sensorium.pipeline.metrics import Metrics
from sensorium.pipeline.runtime import LadderPolicy, StageRunner
from sensorium.pipeline.stage import Stage, StageContext

M = TypeVar("M", bound=Message)


class StageHarness:
    """Stages under real runners, wired to each other by what they consume."""

    def __init__(
        self,
        *,
        rooms: tuple[str, ...] = ("kitchen", "office"),
        sources: Mapping[str, tuple[str, ...]] | None = None,
        clock: Clock | None = None,
        policy: LadderPolicy | None = None,
        max_future: float | None = 2.0,
        data_dir: Path | None = None,
    ) -> None:
        self.rooms = rooms
        self.sources = dict(sources or {})
        self.clock = clock or Clock()
        self.policy = policy or LadderPolicy()
        self.max_future = max_future
        self.data_dir = data_dir or Path(".sensorium")
        self.metrics = Metrics("harness")
        self.runners: list[StageRunner] = []
        self.out: list[Message] = []
        """Every published message, in order."""
        self.published_at: list[float] = []
        """When each message of ``out`` was published (monotonic seconds)."""

    async def add(
        self,
        cls: type[Stage],
        options: msgspec.Struct | None = None,
        *,
        device: str = "cpu",
        budget_ms: float | None = None,
        data_dir: Path | None = None,
        sources: Mapping[str, tuple[str, ...]] | None = None,
        max_future: float | Literal["harness"] | None = "harness",
        **opts: Any,
    ) -> Stage:
        """Create and start a stage with ``options`` (or its ``Options(**opts)``) and run it.

        ``sources`` and ``max_future`` override the harness's for this stage.
        """
        ctx = StageContext(
            name=cls.name,
            worker="test",
            options=options if options is not None else cls.Options(**opts),
            device=device,
            budget_ms=budget_ms if budget_ms is not None else cls.default_budget_ms,
            clock=self.clock,
            data_dir=data_dir or self.data_dir,
            rooms=self.rooms,
            sources=self.sources if sources is None else dict(sources),
            max_future=self.max_future if max_future == "harness" else max_future,
            emit=self._emit,
        )
        stage = cls(ctx)
        runner = StageRunner(stage, self.metrics, self.policy, self._emit)
        await stage.start()
        runner.start()
        self.runners.append(runner)
        return stage

    async def _emit(self, msg: Message) -> None:
        if not msg.source:
            msg.source = "test"
        self.out.append(msg)
        self.published_at.append(time.monotonic())
        self.offer(msg)

    def offer(self, msg: Message) -> None:
        """Hand ``msg`` to every stage that consumes it, as the bus would."""
        topic = msg.topic()
        for r in self.runners:
            if r.wants(topic):
                r.offer(msg)

    async def feed(self, msgs: Iterable[Message], interval: float = 0.0) -> None:
        """Offer messages in order, ``interval`` seconds apart (0: all at once, yielding between them)."""
        for msg in msgs:
            self.offer(msg)
            await asyncio.sleep(interval)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every stage handled everything queued, background work (``drain()``) included."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.runners:
                await r.drain(max(0.0, deadline - time.monotonic()))
                more = getattr(r.stage, "drain", None)
                if more is not None:
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        await more()
            await asyncio.sleep(0.02)
            if not any(r.depth or r._busy for r in self.runners):
                return
        raise TimeoutError("stages did not drain")

    def of(self, cls: type[M]) -> list[M]:
        """Published messages of one type, in order."""
        return [m for m in self.out if isinstance(m, cls)]

    def summary(self) -> list[dict[str, object]]:
        """The runners' latency summaries (inputs, percentiles, violations, ladder)."""
        return [r.summary() for r in self.runners]

    async def close(self) -> None:
        for r in self.runners:
            await r.stop()
        self.runners.clear()

    async def __aenter__(self) -> StageHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def run_stage(
    cls: type[Stage],
    inputs: Iterable[Message],
    options: msgspec.Struct | None = None,
    *,
    rooms: tuple[str, ...] = ("kitchen", "office"),
    clock: Clock | None = None,
    settle: float = 0.0,
    timeout: float = 60.0,
    **opts: Any,
) -> list[Message]:
    """Run one stage on ``inputs`` through the real runner; returns everything it published, in order.

    ``settle``: seconds to wait after the inputs are handled, for what a stage publishes on a timer.
    """
    async with StageHarness(rooms=rooms, clock=clock) as h:
        await h.add(cls, options, **opts)
        await h.feed(inputs)
        await h.drain(timeout)
        await asyncio.sleep(settle)
        return list(h.out)
