"""The hub's event log and publishing: the tap on the bus, group commits, numbers, the presence snapshot.

Events are a group commit: what the tap has queued is numbered together, written with one fsync on the
log's own thread, and only then published and served, so no client ever sees a number that a power cut
could take back. If the log cannot be written (disk full) the desk says so (an ERROR line,
``sensorium_hub_event_log_errors_total``, a ``node_status`` error on the bus) and fails ``failed`` with
``EventLogError``: the hub stops rather than answering heartbeats while it keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import zmq
import zmq.asyncio
from prometheus_client import Counter, Gauge

from sensorium.pipeline.bus import Publisher
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import MAX_HEADER, MAX_PAYLOAD, CodecError, decode, to_json
from sensorium.pipeline.eventlog import MAX_EVENT_JSON, EventLog, EventLogError, LoggedEvent
from sensorium.pipeline.hub.policy import HUB_ONLY, PublishPolicy
from sensorium.pipeline.messages import Event, Heartbeat, InputError, NodeStatus, Presence
from sensorium.pipeline.metrics import Metrics
from sensorium.pipeline.ratelimit import RateLimit
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.hub")

MAX_BATCH = 1000
"""Most events numbered and written with one fsync."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Most bytes of events taken into one batch (1000 of the largest events would be 60 MB, several times over)."""
TAP_HWM = 256
"""Events queued for the hub's tap in libzmq (its thread keeps this queue near empty)."""
TAP_BYTES = 16 * 1024 * 1024
"""Most bytes of events the tap's thread holds for the hub's loop; beyond it, events are dropped and reported."""
MAX_PRESENCE = 1024
"""Most (person, room) entries the presence snapshot keeps (the oldest go first)."""
MAX_FRAME = MAX_PAYLOAD + MAX_HEADER
"""Largest frame the bus takes (ZMQ_MAXMSGSIZE on the XSUB): a bigger one closes its sender's connection
before any of it is held in memory."""

Warn = Callable[..., None]
"""``warn(kind, text, *args)``: a rate-limited warning about bad input."""


class TapReader:
    """The hub's event tap, read on its own thread as fast as the bus delivers, into a queue bounded in bytes.

    libzmq bounds its queues by message count only: a tap that falls behind a flood of the largest events
    would pin thousands of them in the proxy's queue. This thread keeps that queue empty and holds at most
    ``max_bytes`` itself; beyond that it drops (counted in ``dropped``: the hub reports them)."""

    def __init__(self, endpoint: str, prefixes: list[str], curve: CurveKeys | None, max_bytes: int) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, TAP_HWM)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        if curve is not None:
            curve.apply_client(sock)
        for p in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, p.encode())
        sock.connect(endpoint)
        self._sock = sock
        self.max_bytes = max_bytes
        self.queue: deque[list[bytes]] = deque()
        self.bytes = 0
        self.dropped = 0
        """Messages dropped because the queue held ``max_bytes``."""
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    size = sum(len(f) for f in frames)
                    with self._lock:
                        if self.queue and self.bytes + size > self.max_bytes:
                            self.dropped += 1
                            continue
                        was_empty = not self.queue
                        self.queue.append(frames)
                        self.bytes += size
                    if was_empty:
                        self._loop.call_soon_threadsafe(self._ready.set)
        except (zmq.ContextTerminated, RuntimeError):  # the context or the event loop went away
            pass
        finally:
            sock.close(0)

    async def take(self, max_n: int, max_bytes: int, timeout: float | None = None) -> list[list[bytes]]:
        """At least one message (or none after ``timeout``), at most ``max_n`` of at most ``max_bytes``."""
        while True:
            with self._lock:
                if self.queue:
                    out, size = [], 0
                    while self.queue and len(out) < max_n and (not out or size + len(self.queue[0][-1]) <= max_bytes):
                        frames = self.queue.popleft()
                        n = sum(len(f) for f in frames)
                        self.bytes -= n
                        size += n
                        out.append(frames)
                    if not self.queue:
                        self._ready.clear()
                    return out
                self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await self._ready.wait()
                except TimeoutError:
                    return []

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


class EventDesk:
    """Takes events off the tap, checks who sent them, numbers and logs them, then publishes and serves them.

    The hub makes one, hands it its sockets once they are bound (``attach``) and runs ``run``; the control
    handlers read the log and the presence snapshot from it."""

    def __init__(
        self,
        log_: EventLog,
        *,
        clock: Clock,
        metrics: Metrics,
        policy: PublishPolicy | None,
        warn: Warn,
        on_logged: Callable[[Event], None],
    ) -> None:
        self.log = log_
        self.clock = clock
        self.metrics = metrics
        self.policy = policy
        self._warn = warn
        self._on_logged = on_logged
        self.presence: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        """(person, room) → the newest presence event's JSON (the snapshot clients ask for)."""
        self.rejected = 0
        """Events refused because their sender may not publish them."""
        self.bad_events = 0
        """Events dropped as malformed or too big."""
        self.tap_lost = 0
        """Events the tap saw numbers of but never got (dropped at a high-water mark on the way)."""
        self._own: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._rejections: list[tuple[str, str]] = []
        self._topic_seq: OrderedDict[str, int] = OrderedDict()
        self._early: list[Event] = []
        self._tap_dropped = 0
        self._reject_limit: RateLimit[None] = RateLimit(interval=1.0, burst=10)
        self._log_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-eventlog")
        self._flush: asyncio.Future[None] | None = None
        self.failed: asyncio.Future[None] | None = None
        """Done with an exception (``EventLogError`` for a write) once events can no longer be logged."""
        registry = metrics.registry
        self._tap_lost_total = Counter(
            "sensorium_hub_events_lost_total",
            "Events lost before the log (gaps in a publisher's numbers)",
            registry=registry,
        )
        self._rejected_total = Counter(
            "sensorium_hub_events_rejected_total",
            "Events refused because their sender may not publish them",
            ["kind"],
            registry=registry,
        )
        self._log_errors = Counter(
            "sensorium_hub_event_log_errors_total", "Event log writes that failed", registry=registry
        )
        self._log_ok = Gauge(
            "sensorium_hub_event_log_ok", "1 while the event log is written, 0 once a write failed", registry=registry
        )
        self._log_ok.set(1)
        self._batches = Counter(
            "sensorium_hub_event_commits_total", "Group commits of the event log (one fsync each)", registry=registry
        )

    async def attach(self, tap: TapReader, publisher: Publisher, events_pub: zmq.asyncio.Socket, probe: str) -> None:
        """Take the hub's sockets and wait until the tap hears the bus (``await_tap``)."""
        self.tap = tap
        self.publisher = publisher
        self.events_pub = events_pub
        self._probe = probe
        self._early = await self._await_tap()
        self.failed = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        """The tap loop; a failure fails ``failed`` (a hub that no longer logs must not go on answering)."""
        try:
            await self._tap()
        except Exception as exc:
            log.exception("hub: the event tap failed; stopping")
            if self.failed is not None and not self.failed.done():
                self.failed.set_exception(exc)

    async def close(self) -> None:
        """Let a write in progress finish, then close the tap and the log."""
        if self._flush is not None:  # a write in progress finishes before the file is closed
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10.0):
                    await asyncio.shield(self._flush)
        self._log_thread.shutdown(wait=False)
        if hasattr(self, "tap"):
            await asyncio.to_thread(self.tap.close)

    def _bad_event(self, topic: bytes, exc: CodecError) -> None:
        self.bad_events += 1
        self._warn("event", "hub dropped malformed event on %r: %s", topic[:64], exc)

    async def _await_tap(self) -> list[Event]:
        """Wait until a probe the hub publishes comes back through the bus to its own tap, so that its first
        events are not lost (ZeroMQ drops what a PUB sends before the subscriptions have arrived). Returns
        the events that arrived meanwhile (the tap loop logs them first)."""
        early: list[Event] = []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            await self.publisher.publish(Heartbeat(room=self._probe, source="hub", node="hub"))
            for frames in await self.tap.take(MAX_BATCH, MAX_BATCH_BYTES, timeout=0.02):
                msg = self._decode_tap(frames)
                if isinstance(msg, Heartbeat) and msg.room == self._probe:
                    return early
                if isinstance(msg, Event):
                    early.append(msg)
        log.warning("hub: its event tap did not hear the hub's own probe in 5 s; its first events may be lost")
        return early

    def _decode_tap(self, frames: list[bytes]) -> object | None:
        try:
            return decode(frames)
        except CodecError as exc:
            self._bad_event(frames[0] if frames else b"", exc)
            return None

    async def _tap(self) -> None:
        while True:
            batch: list[object] = [*self._early]
            self._early = []
            if not batch:
                frames = await self.tap.take(MAX_BATCH, MAX_BATCH_BYTES)
                batch = [m for f in frames if (m := self._decode_tap(f)) is not None]
            if self.tap.dropped > self._tap_dropped:
                lost, self._tap_dropped = self.tap.dropped - self._tap_dropped, self.tap.dropped
                self.tap_lost += lost
                self._tap_lost_total.inc(lost)
                self._rejections.append(("events", f"lost: {lost} events at the hub's tap (its queue was full)"))
            allowed = [msg for msg in batch if self._authorised(msg)]
            self._check_gaps(allowed)  # only a sender's own numbers: a spoofer's share a topic with them
            staged = [(msg, entry) for msg in allowed if (entry := self._stage(msg)) is not None]
            if self._rejections:
                await self._report_rejections()
            if not staged:
                continue
            if self.log.path is not None:
                # stop() waits for this write even if the task is cancelled meanwhile
                self._flush = asyncio.get_running_loop().run_in_executor(self._log_thread, self.log.flush)
                try:
                    await asyncio.shield(self._flush)
                except EventLogError as exc:
                    await self._log_failed(exc)
                    return
                self._flush = None
                self._batches.inc()
            self.log.release()  # durable: now it may be served and published
            for msg, entry in staged:
                self._publish_event(msg, entry.json)
                await self.events_pub.send_multipart([entry.topic.encode(), entry.json])

    def _check_gaps(self, batch: list[object]) -> None:
        """Publishers number each topic's messages: a gap is events lost on the way to the log (the tap's or
        the bus's high-water mark), counted and reported as an ``error`` event."""
        for msg in batch:
            if not isinstance(msg, Event) or msg.seq <= 0:
                continue
            topic = msg.topic()
            last = self._topic_seq.pop(topic, 0)
            self._topic_seq[topic] = msg.seq
            if len(self._topic_seq) > 4096:
                self._topic_seq.popitem(last=False)
            if last and msg.seq > last + 1 and msg.seq - last < 2**32:
                lost = msg.seq - last - 1
                self.tap_lost += lost
                self._tap_lost_total.inc(lost)
                self._rejections.append((topic[:128], f"lost: {lost} events before the hub's log (a queue was full)"))

    async def publish_own(self, msg: Event) -> None:
        """Publish one of the hub's own events (node status, placement, input errors): the tap logs it as the
        hub's only because it knows the topic and number it went out with."""
        if not msg.seq:
            topic = msg.topic()
            self.publisher._seq[topic] += 1
            msg.seq = self.publisher._seq[topic]
        self._own[(msg.topic(), msg.seq)] = None
        while len(self._own) > 10000:
            self._own.popitem(last=False)
        await self.publisher.publish(msg)

    def _authorised(self, msg: object) -> bool:
        """May the event's sender publish it? Refusals are counted and reported (``_report_rejections``)."""
        if not isinstance(msg, Event):
            return True
        hubs = msg.source == "hub" or isinstance(msg, HUB_ONLY) or (isinstance(msg, NodeStatus) and msg.role == "hub")
        if hubs:
            if self._own.pop((msg.topic(), msg.seq), 0) is None:
                return True
            why = "only the hub publishes this"
        elif isinstance(msg, NodeStatus) and msg.node != msg.source:
            why = f"{msg.source[:64]!r} may not publish the status of {msg.node[:64]!r}"
        elif self.policy is not None:
            why = self.policy.problem(msg)  # type: ignore[assignment]
            if why is None:
                return True
        else:
            return True
        self.rejected += 1
        self._rejected_total.labels(msg.kind).inc()
        self._rejections.append((msg.topic()[:128], f"refused: {why}"))
        return False

    async def _report_rejections(self) -> None:
        """One ``error`` event per topic kind a second at most (``suppressed`` counts the rest)."""
        rejections, self._rejections = self._rejections, []
        for topic, why in rejections:
            held = self._reject_limit.admit((topic.split("/", 1)[0], why.split(":", 1)[0]))
            if held is None:
                continue
            self._warn("reject", "hub refused an event on %r: %s", topic, why)
            await self.publish_own(
                InputError(
                    source="hub",
                    time=self.clock.now(),
                    stage="hub",
                    input_topic=topic,
                    reason=why,
                    suppressed=held,
                )
            )

    def _stage(self, msg: object) -> LoggedEvent | None:
        if not isinstance(msg, Event):
            return None

        def build(seq: int) -> bytes:
            msg.seq = seq
            return to_json(msg)

        try:
            entry = self.log.stage(msg.topic(), build)
        except CodecError as exc:
            self._bad_event(msg.topic().encode()[:64], exc)
            return None
        if len(entry.json) > MAX_EVENT_JSON:  # no control reply could carry it
            self.log.unstage()
            too_big = CodecError(f"event of {len(entry.json)} bytes, limit {MAX_EVENT_JSON}")
            self._bad_event(entry.topic.encode(), too_big)
            return None
        return entry

    def _publish_event(self, msg: Event, js: bytes) -> None:
        self.metrics.count_message(msg.topic().encode(), len(js), "in")
        self._on_logged(msg)
        if isinstance(msg, Presence):
            key = (msg.person, msg.room)
            if msg.state == "left":
                self.presence.pop(key, None)
            else:
                for k in [k for k in self.presence if k[0] == msg.person and msg.person != "unknown"]:
                    self.presence.pop(k, None)
                self.presence[key] = js
                while len(self.presence) > MAX_PRESENCE:
                    self.presence.popitem(last=False)

    async def _log_failed(self, exc: EventLogError) -> None:
        self._log_errors.inc()
        self._log_ok.set(0)
        log.error("hub: %s; no event can be kept or numbered, so the hub stops (systemd restarts it)", exc)
        with contextlib.suppress(Exception):
            await self.publish_own(
                NodeStatus(
                    source="hub",
                    time=self.clock.now(),
                    node="hub",
                    role="hub",
                    state="error",
                    detail=f"event log write failed: {exc}",
                )
            )
            await asyncio.sleep(0.2)  # let the status leave before the sockets close
        if self.failed is not None and not self.failed.done():
            self.failed.set_exception(exc)

    # ------------------------------------------------------------------ control
