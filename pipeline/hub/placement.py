"""The hub's placement of replicated stages: it owns the table of which worker serves which stream.

``pipeline.placement.assign`` decides; this keeps what it decides from (live, serving and drained workers,
rooms with an utterance in flight), keeps the drained set across restarts, and publishes the table and
every move (``placement`` events)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

import msgspec
from prometheus_client import Counter, Gauge

from sensorium.pipeline.clock import Clock
from sensorium.pipeline.messages import Event, Placement, Transcript, WakeDetected
from sensorium.pipeline.metrics import Metrics
from sensorium.pipeline.placement import StageSpec, WorkerState, assign, to_message

log = logging.getLogger("sensorium.hub")

UTTERANCE_S = 15.0
"""Longest a room counts as busy (an utterance in flight) after a wake word without a final transcript."""


class _Node(Protocol):
    role: str
    last_seen: float


class PlacementOwner:
    """The placement table and the worker states it is computed from."""

    def __init__(
        self,
        spec: dict[str, StageSpec],
        *,
        takeover_after: float,
        handback_after: float,
        state_dir: Path | None,
        clock: Clock,
        metrics: Metrics,
        nodes: Mapping[str, _Node],
        publish: Callable[[object], Awaitable[None]],
        publish_own: Callable[[Event], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.takeover_after = takeover_after
        self.handback_after = handback_after
        self.state_dir = state_dir
        self.clock = clock
        self._nodes = nodes
        self._publish = publish
        self._publish_own = publish_own
        self.assignments: dict[tuple[str, str], str] = {}
        self.version = 0
        self.epoch = uuid.uuid4().hex[:12]
        self.drained: set[str] = set()
        self.workers = {w: WorkerState() for sp in spec.values() for w, _ in sp.replicas}
        """Per worker of a replicated stage: live, drained, up since, stages exhausted."""
        self._serving: dict[str, bool] = {}
        """Per worker: its last heartbeat said its stages are loaded (only then does it get streams)."""
        self._busy_rooms: dict[str, float] = {}
        self._t_start = time.monotonic()
        self._load_drained()
        self._assigned = Gauge(
            "sensorium_placement_assigned",
            "1 where a worker serves a stream of a replicated stage now",
            ["stage", "stream", "worker"],
            registry=metrics.registry,
        )
        self._moves = Counter(
            "sensorium_placement_moves_total",
            "Streams handed from one worker to another",
            ["stage", "reason"],
            registry=metrics.registry,
        )

    # ------------------------------------------------------------------ what the table is computed from

    def observe(self, msg: Event) -> None:
        """A logged event: a wake word makes its room busy until the final transcript."""
        if isinstance(msg, WakeDetected):
            self._busy_rooms[msg.room] = time.monotonic()
        elif isinstance(msg, Transcript) and msg.final:
            self._busy_rooms.pop(msg.room, None)

    async def heartbeat(self, worker: str, exhausted: frozenset[str], serving: bool) -> None:
        """A worker's heartbeat: a change in what it can serve replans at once."""
        ps = self.workers.get(worker)
        if ps is None:
            return
        if ps.exhausted != exhausted or self._serving.get(worker) != serving:
            ps.exhausted = exhausted
            self._serving[worker] = serving
            await self.replan()

    async def registered(self, worker: str) -> None:
        if worker in self.workers:
            await self.replan()

    async def drain(self, worker: str, drain: bool) -> None:
        """Drain (or undrain) a worker: it keeps the streams it has until the table moves them."""
        was = worker in self.drained
        (self.drained.add if drain else self.drained.discard)(worker)
        if was != drain:
            log.info("placement: %s %sed", worker, "drain" if drain else "undrain")
            self._save_drained()
            await self.replan()

    def busy_streams(self) -> set[tuple[str, str]]:
        """(stage, room) of room stages with an utterance in flight now."""
        now = time.monotonic()
        rooms = {r for r, t in self._busy_rooms.items() if now - t < UTTERANCE_S}
        return {(st, r) for st, sp in self.spec.items() if sp.serves == "room" for r in rooms}

    # ------------------------------------------------------------------ the drained set across restarts

    def _drained_file(self) -> Path | None:
        return self.state_dir / "drained.json" if self.state_dir else None

    def _load_drained(self) -> None:
        f = self._drained_file()
        if f is not None and f.exists():
            with contextlib.suppress(OSError, msgspec.DecodeError):
                names = msgspec.json.decode(f.read_bytes(), type=list[str])
                self.drained = {n for n in names if n in self.workers}

    def _save_drained(self) -> None:
        f = self._drained_file()
        if f is not None:
            with contextlib.suppress(OSError):
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(msgspec.json.encode(sorted(self.drained)))

    # ------------------------------------------------------------------ the table

    def table(self, request_id: int = 0) -> object:
        live = [w for w, s in self.workers.items() if s.live]
        busy = [f"{st}/{r}" for st, r in sorted(self.busy_streams())]
        return to_message(self.assignments, self.version, live, self.drained, busy, request_id, self.epoch)

    def _refresh_liveness(self, now: float) -> None:
        for name, ps in self.workers.items():
            node = self._nodes.get(name)
            fresh = node is not None and node.role == "worker" and now - node.last_seen < self.takeover_after
            live = fresh and self._serving.get(name, False)
            if live and not ps.live:
                ps.up_since = now  # a stream nobody holds goes to it at once; taking one from a standby waits
            ps.live = live
            ps.drained = name in self.drained

    async def replan(self) -> None:
        """Recompute the table; publish a ``placement`` event per move and the table if anything moved."""
        now = time.monotonic()
        if now - self._t_start < self.takeover_after:
            return  # right after a (re)start: let every live worker re-register before handing anything out
        self._refresh_liveness(now)
        busy = self.busy_streams()
        table, moves = assign(
            self.spec,
            self.workers,
            self.assignments,
            now,
            self.handback_after,
            lambda stage, stream: (stage, stream) in busy,
        )
        if table == self.assignments and not moves:
            return
        for (stage, stream), w in self.assignments.items():
            self._assigned.labels(stage, stream, w).set(0)
        self.assignments = table
        self.version += 1
        for (stage, stream), w in table.items():
            self._assigned.labels(stage, stream, w).set(1)
        await self._publish(self.table())
        for m in moves:
            self._moves.labels(m.stage, m.reason).inc()
            log.info("placement: %s %s %s -> %s (%s)", m.stage, m.stream, m.old or "-", m.new or "-", m.reason)
            await self._publish_own(
                Placement(
                    source="hub",
                    time=self.clock.now(),
                    stage=m.stage,
                    stream=m.stream,
                    from_worker=m.old,
                    to_worker=m.new,
                    reason=m.reason,
                )
            )

    async def run(self, heartbeat: float, noisy: Callable[[str], object]) -> None:
        """Replan every tick; publish the table again every heartbeat (a worker that reconnected learns it)."""
        tick = min(heartbeat / 2, self.takeover_after / 4)
        last_sent = last_tick = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                stalled = now - last_tick > tick + self.takeover_after / 2
                last_tick = now
                if stalled:  # the hub itself was held up: the heartbeats queued meanwhile are read first
                    continue
                version = self.version
                await self.replan()
                now = time.monotonic()
                if self.version == version and now - last_sent >= heartbeat:
                    # again every heartbeat: a worker that (re)connected learns the table within one
                    await self._publish(self.table())
                    last_sent = now
            except Exception:  # the table is stale until the next tick; the hub keeps serving
                if noisy("placement") is not None:
                    log.exception("hub: placement failed")
