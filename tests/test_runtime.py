"""The stage runtime with real slow and fast stages: drops, violations, the degrade ladder, no stalls."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import ClassVar

import cv2
import numpy as np

from sensorium.pipeline.clock import Clock
from sensorium.pipeline.messages import AudioChunk, BudgetViolation, InputError, Message, VideoFrame
from sensorium.pipeline.metrics import Metrics
from sensorium.pipeline.runtime import LadderPolicy, StageRunner
from sensorium.pipeline.stage import Stage, StageContext

JPEG = cv2.imencode(".jpg", np.full((240, 320, 3), 127, np.uint8))[1].tobytes()


class FrameStage(Stage):
    """Decodes each frame for real, then works ``cost`` seconds on the stage's thread."""

    name = "frames"
    consumes = (VideoFrame,)
    droppable = True
    max_batch = 4
    cost = 0.08

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.seen: list[tuple[str, int]] = []

    def _work(self, data: bytes) -> int:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        time.sleep(self.cost)  # runs on the stage's worker thread, not the event loop
        return int(img.shape[0])

    async def handle(self, msg: Message) -> None:
        assert isinstance(msg, VideoFrame)
        await self.ctx.run_blocking(self._work, msg.data)
        self.seen.append((msg.source, msg.seq))


class SheddingStage(FrameStage):
    """Frames at 25 fps: 0.1 s each is in budget but too slow to see every frame; its cheaper step keeps up."""

    name = "shedding"
    max_batch = 1
    degrade_steps: ClassVar[tuple[str, ...]] = ("smaller-input",)
    costs = (0.1, 0.01)

    def _work(self, data: bytes) -> int:
        time.sleep(self.costs[self.level])
        return len(data)


class LadderStage(Stage):
    """Audio-like stage whose cost falls with each degrade step."""

    name = "ladder"
    consumes = (AudioChunk,)
    degrade_steps: ClassVar[tuple[str, ...]] = ("no-partials", "smaller-model")
    costs = (0.25, 0.15, 0.01)

    async def handle(self, msg: Message) -> None:
        await self.ctx.run_blocking(time.sleep, self.costs[self.level])


class FailingStage(Stage):
    name = "fragile"
    consumes = (AudioChunk,)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.ok = 0

    async def handle(self, msg: Message) -> None:
        assert isinstance(msg, AudioChunk)
        if len(msg.data) % 2:
            raise ValueError(f"odd byte count {len(msg.data)}")
        self.ok += 1


async def _feed_and_stop(runner: StageRunner, n: int) -> None:
    """Offer ``n`` fresh 10 ms audio chunks one at a time, each handled before the next, then stop."""
    runner.start()
    for i in range(1, n + 1):
        runner.offer(AudioChunk(room="k", source="pi", seq=i, time=runner.ctx.clock.now(), data=b"\0\0" * 160))
        await runner.drain(5)
    await runner.stop()


def _runner(cls: type[Stage], budget_ms: float, **policy: float) -> tuple[StageRunner, list[Message]]:
    out: list[Message] = []

    async def emit(m: Message) -> None:
        out.append(m)

    ctx = StageContext(name=cls.name, worker="test", options=None, budget_ms=budget_ms, clock=Clock(), emit=emit)
    stage = cls(ctx)
    runner = StageRunner(stage, Metrics("test"), LadderPolicy(**policy), emit)  # type: ignore[arg-type]
    return runner, out


async def test_late_frames_are_dropped_latest_wins() -> None:
    runner, _ = _runner(FrameStage, budget_ms=150, violation_interval=0)
    runner.start()
    clock = runner.ctx.clock
    sent: dict[str, list[int]] = {"cam1": [], "cam2": []}
    for i in range(1, 41):  # 40 frames per camera at 50 fps: far more than 80 ms per batch can take
        for cam in sent:
            runner.offer(VideoFrame(room="hall", source=cam, seq=i, time=clock.now(), data=JPEG))
            sent[cam].append(i)
            assert runner.depth <= 2  # never more than one pending frame per camera
        await asyncio.sleep(0.02)
    await runner.drain(5)
    await runner.stop()
    stage = runner.stage
    assert isinstance(stage, FrameStage)
    for cam in sent:
        handled = [s for c, s in stage.seen if c == cam]
        assert handled == sorted(handled)  # in order
        assert handled[-1] == 40  # the newest frame is always served
        assert len(handled) < 30  # most stale frames were skipped, not queued
    assert runner.dropped >= 20


async def test_frames_past_deadline_are_dropped_with_a_violation() -> None:
    runner, out = _runner(FrameStage, budget_ms=100, violation_interval=0)
    runner.start()
    old = runner.ctx.clock.now() - 0.5  # captured half a second ago: already late
    runner.offer(VideoFrame(room="hall", source="cam1", seq=1, time=old, data=JPEG))
    await asyncio.sleep(0.2)
    await runner.stop()
    assert runner.stage.seen == []  # type: ignore[attr-defined]
    v = [m for m in out if isinstance(m, BudgetViolation)]
    assert v and v[0].action == "dropped" and v[0].stage == "frames" and v[0].actual_ms >= 500


async def test_audio_is_never_dropped_even_when_late() -> None:
    runner, _ = _runner(LadderStage, budget_ms=10_000)
    runner.start()
    now = runner.ctx.clock.now()
    for i in range(1, 6):
        runner.offer(AudioChunk(room="k", source="pi", seq=i, time=now - 20, data=b"\0\0" * 1280))
    await runner.drain(5)
    await runner.stop()
    assert runner.inputs == 5 and runner.dropped == 0


async def test_a_video_stage_that_keeps_up_only_by_skipping_frames_steps_down_its_ladder() -> None:
    runner, out = _runner(SheddingStage, budget_ms=1000, overrun_after=3, recover_after=1000)
    runner.start()
    clock = runner.ctx.clock
    for i in range(1, 51):  # 2 s of one camera at 25 fps
        runner.offer(VideoFrame(room="hall", source="cam1", seq=i, time=clock.now(), data=JPEG))
        await asyncio.sleep(0.04)
        if i == 25:
            dropped_before = runner.dropped
    await runner.drain(5)
    await runner.stop()
    moves = [m.action for m in out if isinstance(m, BudgetViolation)]
    # every answer came well within the 1 s budget, yet frames were skipped: it stepped down, and then kept up
    assert moves == ["degraded:smaller-input"], moves
    assert runner.stage.level == 1
    assert runner.dropped - dropped_before <= 2, (dropped_before, runner.dropped)


async def test_degrade_ladder_steps_down_and_back_up() -> None:
    runner, out = _runner(LadderStage, budget_ms=200, overrun_after=3, recover_after=5, recover_fraction=0.6)
    await _feed_and_stop(runner, 19)
    actions = [m.action for m in out if isinstance(m, BudgetViolation) and m.action != "none"]
    # 0.25 s > budget three times → level 1 (0.15 s: within budget, but not "well within") stays there
    assert actions[0] == "degraded:no-partials"
    assert runner.stage.level == 1
    assert "degraded:smaller-model" not in actions

    # a stage that keeps overrunning walks the whole ladder, then recovers one step when fast
    LadderStage.costs = (0.25, 0.25, 0.01)
    try:
        runner, out = _runner(LadderStage, budget_ms=200, overrun_after=2, recover_after=4, recover_fraction=0.6)
        await _feed_and_stop(runner, 15)
    finally:
        LadderStage.costs = (0.25, 0.15, 0.01)
    actions = [m.action for m in out if isinstance(m, BudgetViolation) and m.action != "none"]
    assert actions[:3] == ["degraded:no-partials", "degraded:smaller-model", "restored:smaller-model"]
    assert runner.ladder[:3] == actions[:3]


async def test_blocking_model_calls_do_not_stall_the_event_loop() -> None:
    FrameStage.cost = 0.3
    try:
        runner, _ = _runner(FrameStage, budget_ms=5000)
        runner.start()
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            for _ in range(40):
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        for i in range(3):
            runner.offer(VideoFrame(room="h", source=f"c{i}", seq=1, time=runner.ctx.clock.now(), data=JPEG))
        await ticker()
        await runner.drain(5)
        await runner.stop()
    finally:
        FrameStage.cost = 0.08
    assert max(gaps) < 0.1  # the loop kept ticking while frames were processed for 0.9 s


async def test_a_failing_input_is_reported_and_the_stage_keeps_serving() -> None:
    runner, out = _runner(FailingStage, budget_ms=1000)
    runner.start()
    now = runner.ctx.clock.now()
    runner.offer(AudioChunk(room="k", source="pi", seq=1, time=now, data=b"\0\0"))
    runner.offer(AudioChunk(room="k", source="pi", seq=2, time=now, data=b"\0\0\0"))
    runner.offer(AudioChunk(room="k", source="pi", seq=3, time=now, data=b"\0\0"))
    await runner.drain(5)
    await runner.stop()
    errors = [m for m in out if isinstance(m, InputError)]
    assert len(errors) == 1 and "odd byte count 3" in errors[0].reason
    assert errors[0].input_topic == "audio/k/pi"
    assert runner.stage.ok == 2  # type: ignore[attr-defined]


class BackgroundStage(Stage):
    """Answers later, from a background task, like STT's final transcript after the endpoint."""

    name = "background"
    consumes = (AudioChunk,)
    reports_latency = True
    degrade_steps: ClassVar[tuple[str, ...]] = ("faster",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.tasks: list[asyncio.Task[None]] = []

    async def handle(self, msg: Message) -> None:
        async def answer() -> None:
            await self.ctx.run_blocking(time.sleep, 0.3 if self.level == 0 else 0.01)
            out = InputError(room=msg.room, reason="answer")
            await self.ctx.publish(out)
            await self.ctx.report(out, msg.time)

        self.tasks.append(asyncio.create_task(answer()))


async def test_background_outputs_are_measured_and_enforced() -> None:
    runner, out = _runner(BackgroundStage, budget_ms=200, overrun_after=2, recover_after=50)
    runner.start()
    for i in range(1, 4):
        runner.offer(AudioChunk(room="k", source="pi", seq=i, time=runner.ctx.clock.now(), data=b"\0\0" * 160))
        await runner.drain(5)
        await asyncio.gather(*runner.stage.tasks)  # type: ignore[attr-defined]
    await runner.stop()
    samples = list(runner.metrics.samples["background"])
    assert len(samples) == 3 and min(samples[:2]) >= 0.3  # the answers' latency, not the fast handle()
    assert runner.ladder == ["degraded:faster"]
    assert any(isinstance(m, BudgetViolation) and m.action == "degraded:faster" for m in out)


class FlappingStage(Stage):
    """Over budget at full quality, far under it one step down: the case that makes ladders flap."""

    name = "flappy"
    consumes = (AudioChunk,)
    degrade_steps: ClassVar[tuple[str, ...]] = ("half-resolution",)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.levels: list[int] = []

    async def handle(self, msg: Message) -> None:
        self.levels.append(self.level)
        await self.ctx.run_blocking(time.sleep, 0.12 if self.level == 0 else 0.0)


async def test_a_stage_that_keeps_failing_to_step_up_waits_longer_each_time() -> None:
    runner, _ = _runner(FlappingStage, budget_ms=100, overrun_after=2, recover_after=3, recover_fraction=0.6)
    await _feed_and_stop(runner, 59)
    levels = runner.stage.levels  # type: ignore[attr-defined]
    # lengths of the runs spent degraded (level 1) before each attempt to step back up
    runs, n = [], 0
    for a, b in itertools.pairwise(levels):
        n += a == 1
        if a == 1 and b == 0:
            runs.append(n)
            n = 0
    assert len(runs) >= 3
    assert runs[0] == 3 and runs[1] == 6 and runs[2] == 12  # patience doubles after each failed step up


async def test_errors_are_rate_limited_per_input_topic_and_counted() -> None:
    runner, out = _runner(FailingStage, budget_ms=1000)
    runner.start()
    now = runner.ctx.clock.now()
    for i in range(300):  # one broken edge: every chunk fails
        runner.offer(AudioChunk(room="k", source="pi", seq=i + 1, time=now, data=b"\0\0\0"))
    runner.offer(AudioChunk(room="k", source="pi", seq=301, time=now, data=b"\0\0"))
    await runner.drain(5)
    errors = [m for m in out if isinstance(m, InputError)]
    assert len(errors) == 1 and errors[0].suppressed == 0 and "odd byte count" in errors[0].reason
    assert runner.errors == 300 and runner.stage.ok == 1  # type: ignore[attr-defined]  # counted, still serving
    await asyncio.sleep(1.05)
    await runner.ctx.flush_errors(runner.publish)  # the worker does this every second
    errors = [m for m in out if isinstance(m, InputError)]
    assert len(errors) == 2 and errors[1].input_topic == "audio/k/pi"
    assert sum(1 + e.suppressed for e in errors) == 300  # each event stands for itself and those it counts
    await runner.stop()


async def test_errors_from_ever_new_topics_are_bounded_too() -> None:
    runner, out = _runner(FailingStage, budget_ms=1000)
    runner.start()
    now = runner.ctx.clock.now()
    for i in range(300):  # a hostile publisher: a new source name on every chunk
        runner.offer(AudioChunk(room="k", source=f"pi{i}", seq=1, time=now, data=b"\0\0\0"))
    await runner.drain(5)
    await runner.stop()
    errors = [m for m in out if isinstance(m, InputError)]
    assert 1 <= len(errors) <= 10, len(errors)  # ten a second per stage, over all topics


async def test_an_audio_stage_that_falls_far_behind_drops_its_oldest_inputs_and_says_so() -> None:
    runner, out = _runner(LadderStage, budget_ms=10_000, max_queue=50)
    runner.start()
    now = runner.ctx.clock.now()
    depths = []
    for i in range(1, 501):  # a flood: far more than a 0.25 s-per-chunk stage can take
        runner.offer(AudioChunk(room="k", source="pi", seq=i, time=now, data=b"\0\0" * 1280))
        depths.append(runner.depth)
    assert max(depths) <= 50  # bounded memory
    assert runner.dropped >= 440
    await asyncio.sleep(0.1)
    await runner.stop()
    dropped = [m for m in out if isinstance(m, BudgetViolation) and m.action == "dropped"]
    assert len(dropped) == 1 and dropped[0].stage == "ladder"  # reported, and rate-limited
    assert runner.metrics.dropped.labels("test", "ladder")._value.get() == runner.dropped


async def test_a_vision_stage_runs_below_voice_and_so_do_the_threads_it_starts() -> None:
    """Stage.nice lowers the stage's model thread and the library threads started from it; voice stays."""
    import os
    import threading

    def priority() -> tuple[int, int]:
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        t.start()
        t.join()
        return own, seen[0]

    class Vision(Stage):
        name: ClassVar[str] = "vision"
        nice: ClassVar[int] = 10

        async def handle(self, msg: Message) -> None: ...

    class Voice(Vision):
        nice: ClassVar[int] = 0

    base = os.getpriority(os.PRIO_PROCESS, 0)
    vision = Vision(StageContext(name="vision", worker="w", options=None))
    voice = Voice(StageContext(name="voice", worker="w", options=None))
    try:
        assert await vision.ctx.run_blocking(priority) == (min(19, base + 10), min(19, base + 10))
        assert await voice.ctx.run_blocking(priority) == (base, base)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the event loop's own: untouched
    finally:
        vision.ctx.close()
        voice.ctx.close()


async def test_the_loop_lag_probe_sees_a_blocked_loop() -> None:
    metrics = Metrics("w")
    probe = asyncio.create_task(metrics.watch_loop(0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 - a call that blocks the loop is what the probe exists to catch
    await asyncio.sleep(0.05)
    probe.cancel()
    lags = list(metrics.lags)
    assert max(lags) >= 0.15 and sorted(lags)[len(lags) // 2] < 0.05
    count = metrics.registry.get_sample_value("sensorium_loop_lag_seconds_count", {"node": "w"})
    assert count == len(lags)
