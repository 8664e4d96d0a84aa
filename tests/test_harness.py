"""The stage test harness: stages run on message lists through the real StageRunner, wired by what they consume."""

from __future__ import annotations

import asyncio
import time

from sensorium.nodes.arbiter import ArbiterStage
from sensorium.pipeline.harness import StageHarness, run_stage
from sensorium.pipeline.messages import AudioChunk, BudgetViolation, Message, WakeArbitrated, WakeDetected
from sensorium.pipeline.stage import Stage


def wake(room: str, score: float, level: float, t: float) -> WakeDetected:
    return WakeDetected(time=t, room=room, word="hey_jarvis", score=score, level=level, node=f"{room}-pi", source="wk")


async def test_run_stage_gives_the_arbiters_decision() -> None:
    """The real arbiter through the runner: two rooms hear one wake word, the nearer one answers."""
    t = time.time()
    inputs = [wake("office", 0.97, -35.0, t), wake("kitchen", 0.95, -21.0, t + 0.08)]
    out = await run_stage(ArbiterStage, inputs, settle=0.5, window_ms=150)
    (decision,) = [m for m in out if isinstance(m, WakeArbitrated)]
    assert decision.room == "kitchen" and decision.losers == ["office-pi"]


class _Slow(Stage):
    """Takes 50 ms per chunk against a 10 ms budget, and re-publishes the chunk's room as a wake event."""

    name = "slow"
    consumes = (AudioChunk,)
    emits = (WakeDetected,)
    default_budget_ms = 10.0

    async def handle(self, msg: Message) -> None:
        await asyncio.sleep(0.05)
        await self.ctx.publish(WakeDetected(time=msg.time, room=msg.room, word="x", score=1.0, node=msg.source))


async def test_the_runner_enforces_budgets_and_outputs_reach_the_next_stage() -> None:
    async with StageHarness(rooms=("kitchen",)) as h:
        await h.add(_Slow)
        await h.add(ArbiterStage, window_ms=50)
        now = h.clock.now()
        await h.feed([AudioChunk(time=now, room="kitchen", source="kitchen-pi", data=b"\0\0" * 160)] * 4)
        await h.drain()
        await asyncio.sleep(0.2)  # the arbiter's window
        assert [w.room for w in h.of(WakeDetected)] == ["kitchen"] * 4
        assert h.of(WakeArbitrated) and h.of(WakeArbitrated)[0].room == "kitchen"  # routed to the arbiter
        violations = h.of(BudgetViolation)
        assert violations and violations[0].stage == "slow" and violations[0].budget_ms == 10.0
        slow = next(s for s in h.summary() if s["stage"] == "slow")
        assert slow["inputs"] == 4 and slow["violations"] >= 1
