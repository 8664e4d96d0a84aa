"""A worker process: the stages placed on it, on its device, wired to the bus.

The worker picks the first usable device of its placement (``cuda:0`` then ``cpu`` …): a missing
GPU, or a stage that runs out of GPU memory while loading, moves the worker to the next device
and says so with a ``NodeStatus`` — fail-soft, never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from sensorium.pipeline.bus import Endpoints, Publisher, Subscriber
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import CodecError
from sensorium.pipeline.config import Deployment
from sensorium.pipeline.messages import EVENT_KINDS, InputError, Message, NodeStatus, PlacementTable
from sensorium.pipeline.metrics import Metrics, ThreadCpu, percentiles
from sensorium.pipeline.node import NodeLink
from sensorium.pipeline.placement import StreamGate
from sensorium.pipeline.ratelimit import RateLimit, kind_of
from sensorium.pipeline.runtime import LadderPolicy, StageRunner
from sensorium.pipeline.security import CurveKeys
from sensorium.pipeline.stage import Stage, StageContext

log = logging.getLogger("sensorium.worker")


class DeviceUnavailable(RuntimeError):
    """No device of the placement could run the stages."""


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None if it can."""
    if device == "cpu":
        return None
    try:
        import torch
    except ImportError:
        return f"{device} requested but torch is not installed"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"{device} requested but no CUDA GPU is visible (torch.cuda.is_available() is False)"
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return f"{device} requested but only {torch.cuda.device_count()} GPU(s) are visible"
        free, total = torch.cuda.mem_get_info(index)
        if free < 256 * 2**20:
            return f"{device} has only {free / 2**20:.0f} MiB free of {total / 2**20:.0f} MiB"
    if device == "mps" and not torch.backends.mps.is_available():
        return "mps requested but not available"
    return None


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "out of memory" in text or ("cuda" in text and "alloc" in text)


class Worker:
    """Runs one worker of a deployment until cancelled."""

    def __init__(
        self,
        deployment: Deployment,
        name: str,
        stage_classes: Mapping[str, type[Stage]],
        *,
        endpoints: Endpoints | None = None,
        clock: Clock | None = None,
        curve: CurveKeys | None = None,
        policy: LadderPolicy | None = None,
        stats_interval: float = 1.0,
    ) -> None:
        self.deployment = deployment
        self.name = name
        self.config = deployment.worker(name)
        self.stage_classes = stage_classes
        self.endpoints = endpoints or Endpoints.from_address(deployment.hub.address)
        self.clock = clock or Clock()
        self.curve = curve
        self.policy = policy
        self.stats_interval = stats_interval
        self.metrics = Metrics(name)
        self.runners: list[StageRunner] = []
        self.device = ""
        self.ready = asyncio.Event()
        self._link: NodeLink | None = None
        self._publisher: Publisher | None = None
        self._errors: RateLimit[InputError] = RateLimit()
        self._reports: set[asyncio.Task[None]] = set()
        self.load_s: dict[str, float] = {}
        """Seconds each stage took to load and warm up (``Stage.start``)."""
        self.gates: dict[str, StreamGate] = {}
        """Replicated stages (on other workers too): which of their streams the hub handed to this worker."""

    async def _publish(self, msg: Message) -> None:
        assert self._publisher is not None
        if not msg.source:
            msg.source = self.name
        await self._publisher.publish(msg)
        self.metrics.count_message(msg.kind.encode(), len(getattr(msg, "data", b"")), "out")

    async def _status(self, state: str, detail: str) -> None:
        log.warning("worker %s: %s", self.name, detail) if state != "up" else log.info("%s", detail)
        if self._link is not None:
            self._link.detail = f"{state}: {detail}" if state != "up" else ""
        await self._publish(
            NodeStatus(time=self.clock.now(), node=self.name, role="worker", state=state, detail=detail)
        )

    async def _build(self, device: str) -> list[StageRunner]:
        runners = []
        dep = self.deployment
        max_future = self.config.max_future or None
        try:
            for sname in self.config.runs():
                cls = self.stage_classes[sname]
                ctx = StageContext.placed(
                    dep,
                    sname,
                    worker=self.name,
                    device=device,
                    emit=self._publish,
                    clock=self.clock,
                    max_future=max_future,
                )
                stage = cls(ctx)
                runner = StageRunner(stage, self.metrics, self.policy, self._publish)
                runners.append(runner)
                t = time.monotonic()
                await stage.start()  # loads its models and runs them once: the first input costs what the rest do
                self.load_s[sname] = time.monotonic() - t
                log.info("worker %s: %s loaded and warm in %.1f s", self.name, sname, self.load_s[sname])
        except BaseException:
            for r in runners:
                await r.stop()
            raise
        return runners

    async def start(self) -> None:
        """Connect, choose a device, load and warm the stages, and only then start serving."""
        # numba (librosa under Resemblyzer) compiles at import; its cache next to the installed package
        # is often not writable by the service, so it would compile again at every start.
        os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(self.deployment.data_dir) / "cache" / "numba"))
        hb = self.deployment.hub.heartbeat
        self._publisher = Publisher(self.endpoints, curve=self.curve)
        self._link = NodeLink(
            self.name,
            "worker",
            self.endpoints,
            stages=self.config.runs(),
            clock=self.clock,
            curve=self.curve,
            heartbeat=hb,
        )
        await self._link.start()
        if not await self._link.wait_connected(timeout=2.0):
            log.warning(
                "worker %s: hub at %s not answering yet; serving anyway, retrying", self.name, self.endpoints.control
            )
        problems = []
        for device in self.config.devices():
            why = device_problem(device)
            if why:
                problems.append(why)
                continue
            try:
                self.runners = await self._build(device)
            except Exception as exc:
                if device != "cpu" and _is_oom(exc):
                    problems.append(f"{device} ran out of memory loading stages: {exc}")
                    continue
                raise
            self.device = device
            break
        else:
            raise DeviceUnavailable(f"worker {self.name}: no usable device: " + "; ".join(problems))
        if problems:
            await self._status("degraded", f"{'; '.join(problems)} — running on {self.device}")
        prefixes = {p for r in self.runners for p in r.stage.topics()}
        for r in self.runners:
            if len(self.deployment.replicas(r.name)) > 1:
                st = r.stage
                self.gates[r.name] = gate = StreamGate(self.name, r.name, st.serves, st.takeover_s)  # type: ignore[arg-type]
                st.ctx.serving = gate.owns
                prefixes.add(f"{PlacementTable.kind}/")
                if st.takeover_s > 0:  # the other workers' results mark what a takeover need not redo
                    prefixes.update(f"{m.kind}/" for m in st.emits if m.kind in EVENT_KINDS)
        prefixes = sorted(prefixes)
        self._subscriber = Subscriber(self.endpoints, prefixes, curve=self.curve, on_error=self._bad_input)
        for r in self.runners:
            r.start()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name=f"dispatch-{self.name}"),
            asyncio.create_task(self._stats(), name=f"stats-{self.name}"),
            asyncio.create_task(self.metrics.watch_loop(), name=f"loop-lag-{self.name}"),
        ]
        self._link.serving = self.config.runs()  # only now may the hub hand this worker streams
        self.ready.set()
        log.info("worker %s serving %s on %s", self.name, ", ".join(self.config.runs()), self.device)

    def _bad_input(self, topic: bytes, exc: CodecError) -> None:
        # Rate-limited by topic family and kind of reason: a hostile sender varies the rest at will.
        family = topic.split(b"/", 1)[0][:32].decode(errors="replace")
        err = InputError(
            time=self.clock.now(),
            stage=self.name,
            input_topic=topic[:128].decode(errors="replace"),
            reason=f"malformed message: {exc}"[:500],
        )
        held = self._errors.admit((family, kind_of(str(exc))[:24]), err)  # the variable part comes later
        if held is None:
            return
        self._report_malformed(err, held)

    def _report_malformed(self, err: InputError, held: int) -> None:
        err.suppressed = held
        more = f" ({held} more like it not reported)" if held else ""
        log.warning("worker %s: rejected a message on %r: %s%s", self.name, err.input_topic[:64], err.reason, more)
        task = asyncio.get_running_loop().create_task(self._publish(err))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _dispatch(self) -> None:
        while True:
            msg = await self._subscriber.recv()
            topic = msg.topic()
            self.metrics.count_message(topic.encode(), len(getattr(msg, "data", b"")), "in")
            if isinstance(msg, PlacementTable):
                self._placement(msg)
                continue
            for r in self.runners:
                gate = self.gates.get(r.name)
                if gate is not None:
                    gate.observe(msg)
                if r.wants(topic) and (gate is None or gate.admit(msg)):
                    r.offer(msg)

    def _placement(self, table: PlacementTable) -> None:
        """Apply the hub's table: gained streams get their takeover ring replayed first."""
        for r in self.runners:
            gate = self.gates.get(r.name)
            if gate is None:
                continue
            replay, gained, lost = gate.update(table)
            if gained or lost:
                log.info(
                    "worker %s: %s now serves %s (gained %s, lost %s; replaying %d inputs)",
                    self.name,
                    r.name,
                    ", ".join(sorted(gate.owned)) or "nothing",
                    ", ".join(sorted(gained)) or "-",
                    ", ".join(sorted(lost)) or "-",
                    len(replay),
                )
            for msg in replay:
                r.offer(msg)

    async def _stats(self) -> None:
        last = {r.name: 0 for r in self.runners}
        t_last = time.monotonic()
        cpu = ThreadCpu()
        lags = self.metrics.lags.total
        while True:
            await asyncio.sleep(self.stats_interval)
            now = time.monotonic()
            if self._link is not None:
                self._link.exhausted = [r.name for r in self.runners if 0 < len(r.stage.degrade_steps) <= r.stage.level]
            used, wall = cpu.sample()
            for group, seconds in used.items():
                self.metrics.thread_cpu.labels(self.name, group).inc(seconds)
            share = {g: 100.0 * s / wall for g, s in used.items()} if wall > 0 else {}
            lag = percentiles(self.metrics.lags.since(lags), (99,)).get("p99", 0.0)
            lags = self.metrics.lags.total
            for r in self.runners:
                st = r.stats(r.inputs - last[r.name], now - t_last)
                st.cpu_pct = share.get(r.name, 0.0)
                st.loop_lag_ms = lag * 1000
                st.loop_cpu_pct = share.get("loop", 0.0)
                st.library_cpu_pct = share.get("libraries", 0.0)
                await self._publish(st)
                last[r.name] = r.inputs
                await r.ctx.flush_errors(r.publish)
            for err, held in self._errors.due():
                self._report_malformed(err, held)
            t_last = now

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every stage has handled what it was given."""
        for r in self.runners:
            await r.drain(timeout)

    async def stop(self) -> None:
        """Stop serving and release everything."""
        for t in getattr(self, "_tasks", []):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for r in self.runners:
            await r.stop()
        if hasattr(self, "_subscriber"):
            self._subscriber.close()
        if self._link is not None:
            await self._link.close()
        if self._publisher is not None:
            self._publisher.close()

    async def run_forever(self) -> None:
        """Start and serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def summary(self) -> list[dict[str, object]]:
        """Per-stage latency summary."""
        return [r.summary() for r in self.runners]
