"""Runs stages: input queues, latency measurement, late-input drops, budget violations, degrade ladder.

Each stage gets a ``StageRunner``. Droppable stages (video) keep only the latest pending input
per topic; anything already past its deadline when the stage is free is dropped. Audio stages
get every chunk in order, from a queue bounded by ``LadderPolicy.max_queue`` inputs and
``max_queue_bytes``: a stage that falls that far behind loses its oldest inputs, counted and
reported (a ``budget_violation`` with action "dropped", at most once a second, and a log line).
After each input the runner measures latency from the input's capture time on the hub clock,
reports violations, and moves the stage down its degrade ladder after ``overrun_after``
consecutive overruns, and back up after ``recover_after`` inputs well within budget. For a droppable
stage an answer in time also counts as an overrun when inputs were replaced by newer ones while it
worked: a stage that keeps up only by skipping frames steps down its ladder (cheaper work) before it
sheds more of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sensorium.pipeline.messages import BudgetViolation, InputError, Message, StageStats
from sensorium.pipeline.metrics import Metrics, percentiles
from sensorium.pipeline.ratelimit import RateLimit
from sensorium.pipeline.stage import Stage

log = logging.getLogger("sensorium.runtime")


@dataclass
class LadderPolicy:
    """When to step down and back up the degrade ladder."""

    overrun_after: int = 3
    """Consecutive over-budget inputs before stepping down."""
    recover_after: int = 20
    """Consecutive inputs under ``recover_fraction`` of the budget before stepping back up; doubled
    (up to 16×) each time a step back up is followed by a step down again soon after."""
    recover_fraction: float = 0.6
    """What "well within budget" means."""
    violation_interval: float = 1.0
    """At most one plain violation event per stage per this many seconds (ladder moves always)."""
    max_queue: int = 1000
    """Most inputs waiting at a non-droppable stage (80 ms audio: 80 s of one stream); the oldest go first."""
    max_queue_bytes: int = 64 * 2**20
    """Most payload bytes waiting at a non-droppable stage (utterances are large)."""


class StageRunner:
    """Feeds one stage and enforces its budget."""

    def __init__(
        self,
        stage: Stage,
        metrics: Metrics,
        policy: LadderPolicy | None = None,
        publish: Callable[[Message], Awaitable[None]] | None = None,
    ) -> None:
        self.stage = stage
        self.ctx = stage.ctx
        self.name = stage.ctx.name
        self.metrics = metrics
        self.policy = policy or LadderPolicy()
        self.publish = publish or self.ctx.publish
        self.budget = self.ctx.budget_ms / 1000.0
        self._fifo: deque[Message] = deque()
        self._fifo_bytes = 0
        self._overflow = 0  # dropped for a full queue, not reported yet
        self._overflow_oldest: Message | None = None
        self._overflow_logged = 0.0
        self._overflow_unlogged = 0
        self._latest: OrderedDict[str, Message] = OrderedDict()
        self._wake = asyncio.Event()
        self._over = 0
        self._ok = 0
        self._superseded = 0  # inputs replaced by a newer one before the stage took them, since the last batch
        self._shed = False  # the batch being handled came after such replacements
        self._last_violation = 0.0
        self.inputs = 0
        self.dropped = 0
        self.violations = 0
        self.errors = 0
        self.ladder: list[str] = []
        """Degrade moves taken, in order ("degraded:x", "restored:x")."""
        self._recover_after = self.policy.recover_after
        self._since_restore: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._traces: RateLimit[None] = RateLimit(interval=60.0, burst=1)
        self.ctx.observe = self._observe
        self._topics = type(stage).topics()

    def wants(self, topic: str) -> bool:
        """True if the stage consumes ``topic``."""
        return topic.startswith(self._topics)

    @property
    def depth(self) -> int:
        """Inputs waiting."""
        return len(self._fifo) + len(self._latest)

    def offer(self, msg: Message) -> None:
        """Queue an input; a droppable stage keeps only the newest per topic."""
        if self.stage.droppable:
            topic = msg.topic()
            if topic in self._latest:
                self.dropped += 1
                self._superseded += 1
                self.metrics.dropped.labels(self.metrics.node, self.name).inc()
            self._latest[topic] = msg
            self._latest.move_to_end(topic)
        else:
            self._fifo.append(msg)
            self._fifo_bytes += len(getattr(msg, "data", b""))
            p = self.policy
            while len(self._fifo) > p.max_queue or (self._fifo_bytes > p.max_queue_bytes and len(self._fifo) > 1):
                old = self._fifo.popleft()
                self._fifo_bytes -= len(getattr(old, "data", b""))
                self.dropped += 1
                self.metrics.dropped.labels(self.metrics.node, self.name).inc()
                self._overflow += 1
                self._overflow_oldest = self._overflow_oldest or old
        self.metrics.queue.labels(self.metrics.node, self.name).set(self.depth)
        self._wake.set()

    def _take(self) -> list[Message]:
        if self.stage.droppable:
            batch = []
            while self._latest and len(batch) < max(1, self.stage.max_batch):
                _, msg = self._latest.popitem(last=False)
                batch.append(msg)
            return batch
        n = max(1, self.stage.max_batch)
        batch = [self._fifo.popleft() for _ in range(min(n, len(self._fifo)))]
        self._fifo_bytes -= sum(len(getattr(m, "data", b"")) for m in batch)
        return batch

    def start(self) -> None:
        """Start the processing loop."""
        self._task = asyncio.create_task(self._run(), name=f"stage-{self.name}")

    async def stop(self) -> None:
        """Stop the loop and the stage."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.stage.stop()
        self.ctx.close()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queue is empty and the current input is handled."""
        deadline = time.monotonic() + timeout
        while (self.depth or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    _busy = False

    async def _run(self) -> None:
        while True:
            if not self.depth:
                self._wake.clear()
                await self._wake.wait()
            if self._overflow:
                await self._report_overflow()
            batch = self._take()
            self._shed, self._superseded = self._superseded > 0, 0
            self.metrics.queue.labels(self.metrics.node, self.name).set(self.depth)
            if self.stage.droppable:
                batch = await self._drop_late(batch)
                if not batch:
                    continue
            self._busy = True
            try:
                await self.stage.handle_batch(batch)
            except Exception as exc:  # a bad input must not take the stage down
                self.errors += len(batch)
                self.metrics.errors.labels(self.metrics.node, self.name).inc(len(batch))
                topic = batch[0].topic()[:128]
                if self._traces.admit(type(exc).__name__) is not None:  # one traceback a minute per kind
                    log.exception("stage %s failed on %s", self.name, topic)
                with contextlib.suppress(Exception):
                    await self.ctx.report_error(
                        InputError(
                            room=batch[0].room[:64],
                            time=self.ctx.clock.now(),
                            source=self.ctx.worker,
                            stage=self.name,
                            input_topic=topic,
                            reason=f"{type(exc).__name__}: {exc}"[:500],
                        ),
                        self.publish,
                    )
                continue
            finally:
                self._busy = False
            self.inputs += len(batch)
            self.metrics.inputs.labels(self.metrics.node, self.name).inc(len(batch))
            if self.stage.reports_latency:
                continue  # the stage reports its outputs' latency itself (ctx.report)
            now = self.ctx.clock.now()
            for msg in batch:
                await self._account(now - self.stage.input_time(msg), msg)

    async def _report_overflow(self) -> None:
        """Say that inputs were dropped from the full queue (log once a second, violation rate-limited)."""
        n, oldest = self._overflow, self._overflow_oldest
        self._overflow, self._overflow_oldest = 0, None
        self._overflow_unlogged += n
        now = time.monotonic()
        if now - self._overflow_logged >= 1.0:
            log.warning(
                "stage %s is %d inputs behind (queue full): dropped the %d oldest since the last report",
                self.name,
                len(self._fifo),
                self._overflow_unlogged,
            )
            self._overflow_logged, self._overflow_unlogged = now, 0
        if oldest is not None:
            await self._violation(self.ctx.clock.now() - self.stage.input_time(oldest), "dropped", oldest)

    async def _observe(self, latency: float, output: Message) -> None:
        await self._account(latency, output)

    async def _drop_late(self, batch: list[Message]) -> list[Message]:
        now = self.ctx.clock.now()
        kept = []
        for msg in batch:
            age = now - self.stage.input_time(msg)
            if age > self.budget:
                self.dropped += 1
                self.metrics.dropped.labels(self.metrics.node, self.name).inc()
                await self._violation(age, "dropped", msg)
            else:
                kept.append(msg)
        return kept

    async def _account(self, latency: float, msg: Message) -> None:
        self.metrics.observe(self.name, latency)
        p = self.policy
        # A droppable stage that keeps up only by skipping inputs is over its budget too: each answer in time,
        # but a camera's frames replaced before they were looked at (the ladder's cheaper steps come first).
        shed = self._shed
        late = latency > self.budget
        if late or shed:
            self._over += 1
            self._ok = 0
            if self._over >= p.overrun_after and self.stage.level < len(self.stage.degrade_steps):
                step = self.stage.degrade_steps[self.stage.level]
                if self._since_restore is not None and self._since_restore < 2 * self._recover_after:
                    # stepped up too early: the next attempt waits twice as long (no flapping)
                    self._recover_after = min(self._recover_after * 2, 16 * p.recover_after)
                self._since_restore = None
                self._set_level(self.stage.level + 1)
                self._over = 0
                await self._violation(latency, f"degraded:{step}", msg, force=True)
            elif late:
                await self._violation(latency, "none", msg)
        else:
            self._over = 0
            if self._since_restore is not None:
                self._since_restore += 1
                if self._since_restore >= 4 * self._recover_after:
                    self._recover_after = p.recover_after  # it held: back to the normal patience
                    self._since_restore = None
            if latency < p.recover_fraction * self.budget:
                self._ok += 1
                if self._ok >= self._recover_after and self.stage.level > 0:
                    step = self.stage.degrade_steps[self.stage.level - 1]
                    self._set_level(self.stage.level - 1)
                    self._ok = 0
                    self._since_restore = 0
                    self.ladder.append(f"restored:{step}")
                    await self._report(latency, f"restored:{step}", msg)
            else:
                self._ok = 0

    def _set_level(self, level: int) -> None:
        self.stage.apply_degrade(level)
        self.stage.level = level
        self.metrics.level.labels(self.metrics.node, self.name).set(level)
        log.warning("stage %s now at degrade level %d", self.name, level)

    async def _violation(self, latency: float, action: str, msg: Message, force: bool = False) -> None:
        self.violations += 1
        self.metrics.violations.labels(self.metrics.node, self.name).inc()
        if action.startswith("degraded"):
            self.ladder.append(action)
        now = time.monotonic()
        if not force and now - self._last_violation < self.policy.violation_interval:
            return
        self._last_violation = now
        await self._report(latency, action, msg)

    async def _report(self, latency: float, action: str, msg: Message) -> None:
        """Publish a ``budget_violation`` event (also used for ladder moves back up)."""
        await self.publish(
            BudgetViolation(
                room=msg.room,
                time=self.ctx.clock.now(),
                source=self.ctx.worker,
                stage=self.name,
                budget_ms=self.budget * 1000,
                actual_ms=latency * 1000,
                action=action,
            )
        )

    def stats(self, interval_inputs: int, interval_s: float) -> StageStats:
        """Current numbers for ``sensorium top``."""
        recent = self.metrics.samples[self.name].last(200)
        pct = percentiles(recent)
        return StageStats(
            time=self.ctx.clock.now(),
            source=self.ctx.worker,
            stage=self.name,
            inputs=self.inputs,
            rate=interval_inputs / interval_s if interval_s > 0 else 0.0,
            p50_ms=pct.get("p50", 0.0) * 1000,
            p95_ms=pct.get("p95", 0.0) * 1000,
            budget_ms=self.budget * 1000,
            dropped=self.dropped,
            violations=self.violations,
            queue=self.depth,
            level=self.stage.level,
            device=self.ctx.device,
        )

    def summary(self) -> dict[str, object]:
        """Latency percentiles and counters (for the demo's table and reports)."""
        pct = percentiles(self.metrics.samples[self.name])
        return {
            "stage": self.name,
            "device": self.ctx.device,
            "budget_ms": self.budget * 1000,
            "inputs": self.inputs,
            "dropped": self.dropped,
            "violations": self.violations,
            "errors": self.errors,
            "level": self.stage.level,
            "ladder": list(self.ladder),
            **{f"{k}_ms": v * 1000 for k, v in pct.items() if k != "n"},
        }
