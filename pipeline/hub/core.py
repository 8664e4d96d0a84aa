"""The hub itself: the data bus proxy, its sockets and their keys, and the loops of its three parts.

A forwarder thread moves the data (XSUB → XPUB, frames not copied) and drops what its sender may not
publish (``pipeline.busguard``: with CURVE the sender is the key each message came in under); the hub's asyncio
side only sees events (it subscribes to event topics like any node), control messages and its own timers. Off
loopback every socket is a CURVE server and only enrolled keys get in (``pipeline.hub.security``).

The hub's jobs are its parts: ``EventDesk`` (``pipeline.hub.events``) numbers, logs and publishes events;
``Control`` (``pipeline.hub.control``) answers control requests from a table of handlers over the node
table; ``PlacementOwner`` (``pipeline.hub.placement``) owns the placement of replicated stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import zmq
import zmq.asyncio
from prometheus_client import Counter

from sensorium.pipeline.bus import Endpoints, Publisher, context, is_loopback
from sensorium.pipeline.busguard import BusForwarder, BusGuard
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import MAX_HEADER, CodecError, decode, encode
from sensorium.pipeline.config import HubConfig, parse_duration
from sensorium.pipeline.eventlog import EventLog
from sensorium.pipeline.hub.control import Control, NodeInfo, Request
from sensorium.pipeline.hub.events import MAX_FRAME, TAP_BYTES, EventDesk, TapReader
from sensorium.pipeline.hub.placement import PlacementOwner
from sensorium.pipeline.hub.policy import PublishPolicy
from sensorium.pipeline.hub.security import Authenticator, KeyDirectory, SecurityError
from sensorium.pipeline.messages import EVENT_KINDS, ControlError, Event
from sensorium.pipeline.metrics import Metrics
from sensorium.pipeline.placement import StageSpec
from sensorium.pipeline.ratelimit import RateLimit
from sensorium.pipeline.security import CurveKeys, KeyError_, hub_keys

log = logging.getLogger("sensorium.hub")

MAX_CONTROL_FRAME = MAX_HEADER + 1024
"""Largest frame of a control request."""
MAX_SUBSCRIPTION = 4096
"""Largest subscription message a subscriber may send (topic prefixes are at most 256 bytes)."""
BUS_HWM = 10000
"""Messages queued per bus connection in the proxy, each way: a replay at full speed needs the room (1000
lost frames and chunks); it also means a subscriber that never reads can pin up to 10000 messages."""
EVENTS_HWM = 1000
"""Events (JSON) queued per client on the events socket (libzmq's default; at 256 the bus benchmark's flood lost a
fifth): a client further behind sees a gap in the numbers and fetches it from the log."""
CONTROL_SNDHWM = 8
"""Replies queued per control connection: a peer that asks and never reads loses replies beyond these, and
holds at most 8 of ~64 KiB in the hub."""
REVOKE_CHECK_S = 0.5
"""How often the hub looks for keys removed from ``authorized/`` (revocation)."""
BUS_REPORT_S = 0.25
"""How often the hub takes the bus forwarder's refusals (counted, reported as rate-limited ``error`` events)."""


def _bind(sock: zmq.Socket, endpoint: str, wait: float = 2.0) -> None:
    """Bind, retrying while the address is still held by a socket just closed (libzmq closes in the background)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _peer_address(frame: zmq.Frame) -> str:
    """The remote IP address a message came from; "" for ipc, inproc and loopback (one machine)."""
    try:
        addr = frame.get("Peer-Address") or ""
    except zmq.ZMQError:
        return ""
    try:
        return "" if not addr or ipaddress.ip_address(addr).is_loopback else addr
    except ValueError:
        return ""


def _connectable(endpoint: str) -> str:
    """The address the hub's own clients use for one of its bound endpoints."""
    if endpoint.startswith("tcp://"):
        host = urlparse(endpoint).hostname or ""
        if host in ("0.0.0.0", "*", "", "::"):
            return endpoint.replace(f"//{host}:", "//127.0.0.1:", 1).replace("//*:", "//127.0.0.1:", 1)
    return endpoint


class Hub:
    """Runs the bus and the control plane until stopped."""

    def __init__(
        self,
        config: HubConfig,
        *,
        state_dir: str | Path | None = None,
        clock: Clock | None = None,
        bind: str | None = None,
        placement: dict[str, StageSpec] | None = None,
        nodes: Iterable[str] = (),
        policy: PublishPolicy | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        """Who may publish what (None: anyone any event, but node status and placement only from the hub)."""
        self.reserved = frozenset(nodes)
        """The deployment's edges and workers: a full node table makes room for them."""
        self.endpoints = Endpoints.from_address(bind or config.address)
        self.clock = clock or Clock()
        self.heartbeat = parse_duration(config.heartbeat, "hub.heartbeat")
        self.down_after = parse_duration(config.down_after, "hub.down_after")
        self.state_dir = Path(state_dir) if state_dir else None
        self.metrics = Metrics("hub")
        self._bad_control = 0
        self.control_messages = 0
        """Control messages read (answered, refused or failed)."""
        self.control_errors = 0
        """Control messages whose handling failed (answered with a ControlError, the loop went on)."""
        self._control_errors = Counter(
            "sensorium_hub_control_errors_total",
            "Control messages refused or failed",
            ["reason"],
            registry=self.metrics.registry,
        )
        self._noisy: RateLimit[None] = RateLimit(interval=1.0, burst=5)  # log lines about bad input
        self.placement = PlacementOwner(
            placement or {},
            takeover_after=parse_duration(config.takeover_after, "hub.takeover_after"),
            handback_after=parse_duration(config.handback_after, "hub.handback_after"),
            state_dir=self.state_dir,
            clock=self.clock,
            metrics=self.metrics,
            nodes=_NodesView(self),
            publish=self._publish_table,
            publish_own=self.publish_own,
        )
        """Which worker serves which stream of a replicated stage (the hub owns the table)."""
        self.events = EventDesk(
            EventLog(
                config.event_log,
                self.state_dir / "events.jsonl" if self.state_dir else None,
                max_bytes=config.event_log_bytes,
            ),
            clock=self.clock,
            metrics=self.metrics,
            policy=policy,
            warn=self._warn,
            on_logged=self.placement.observe,
        )
        """The event log, the tap and the presence snapshot."""
        self.control = Control(
            clock=self.clock,
            desk=self.events,
            placement=self.placement,
            reply=lambda ident, msg: self._reply(ident, msg),  # looked up per reply: a test may slow it down
            refuse=lambda *a, **kw: self._refuse(*a, **kw),
            down_after=self.down_after,
            reserved=self.reserved,
            curve=False,
        )
        """The node table and the control requests' handlers."""
        self._keys: CurveKeys | None = None
        self._auth: Authenticator | None = None
        self._directory: KeyDirectory | None = None
        self._forwarder: BusForwarder | None = None
        self._bus_dropped = 0
        self.bus_rejected = 0
        """Messages the bus forwarder refused (their sender may not publish them; also counted in ``rejected``)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()

    # ------------------------------------------------------------------ what its parts hold

    @property
    def log(self) -> EventLog:
        return self.events.log

    @property
    def nodes(self) -> dict[str, NodeInfo]:
        return self.control.nodes

    @property
    def presence(self) -> OrderedDict[tuple[str, str], bytes]:
        return self.events.presence

    @property
    def failed(self) -> asyncio.Future[None] | None:
        """Done with an exception (``EventLogError`` for a write) once events can no longer be logged."""
        return self.events.failed

    @property
    def rejected(self) -> int:
        """Events refused because their sender may not publish them."""
        return self.events.rejected

    @property
    def tap_lost(self) -> int:
        """Events the tap saw numbers of but never got (dropped at a high-water mark on the way)."""
        return self.events.tap_lost

    @property
    def bad_messages(self) -> int:
        """Malformed events and control messages dropped."""
        return self.events.bad_events + self._bad_control

    @property
    def assignments(self) -> dict[tuple[str, str], str]:
        return self.placement.assignments

    @property
    def drained(self) -> set[str]:
        return self.placement.drained

    def busy_streams(self) -> set[tuple[str, str]]:
        """(stage, room) of room stages with an utterance in flight now."""
        return self.placement.busy_streams()

    async def publish_own(self, msg: Event) -> None:
        """Publish one of the hub's own events (``EventDesk.publish_own``)."""
        await self.events.publish_own(msg)

    async def _publish_table(self, table: object) -> None:
        await self.publisher.publish(table)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lifecycle

    def _security(self) -> CurveKeys | None:
        insecure = not all(is_loopback(e) for e in self.endpoints.all())
        if self.config.keys:
            try:
                return hub_keys(self.config.keys)
            except KeyError_ as exc:
                raise SecurityError(f"hub keys: {exc} (create them with 'sensorium keys init-hub DIR')") from None
        if insecure and not self.config.allow_insecure:
            raise SecurityError(
                f"refusing to bind {self.endpoints.publish} (not loopback) without CURVE keys: set [hub] keys "
                "(see 'sensorium keys --help') or, at your own risk, allow_insecure = true"
            )
        return None

    async def start(self) -> None:
        """Bind every socket and start the proxy, control and event loops."""
        self._keys = self._security()
        sync_ctx = zmq.Context.instance()
        if self._keys is not None:
            self._directory = KeyDirectory(Path(self.config.keys) / "authorized", self._keys.public)
            self._directory.read()
            self._auth = Authenticator(sync_ctx)
            self._auth.directory = self._directory
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=self._directory)
        self._start_proxy()

        actx = context()
        self.router = actx.socket(zmq.ROUTER)
        self.events_pub = actx.socket(zmq.PUB)
        for s in (self.router, self.events_pub):
            s.setsockopt(zmq.LINGER, 0)
            if self._keys is not None:
                self._keys.apply_server(s)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_FRAME)
        self.router.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)  # ROUTER drops what a full peer would not read
        self.router.setsockopt(zmq.RCVHWM, 100)
        self.events_pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        self.events_pub.setsockopt(zmq.SNDHWM, EVENTS_HWM)  # a client that falls behind fills the gap from the log
        # Every connection gets its own routing id from libzmq (nodes set none); the node's name travels in
        # its messages and is bound to the connection that registered it (``_register``). No ROUTER_HANDOVER:
        # a peer choosing a victim's identity would cut the victim off.
        _bind(self.router, self.endpoints.control)
        _bind(self.events_pub, self.endpoints.events)

        own = CurveKeys(self._keys.public, self._keys.secret, self._keys.public) if self._keys else None
        local = Endpoints(*(_connectable(e) for e in self.endpoints.all()))
        self._probe = f"probe-{uuid.uuid4().hex[:12]}"
        tap = TapReader(
            local.subscribe,
            [f"{k}/" for k in EVENT_KINDS] + [f"ctl/{self._probe}/"],
            own,
            TAP_BYTES,
        )
        self.publisher = Publisher(local, curve=own)
        # the hub's own events are known by (topic, seq); numbers start at random so nobody can send one first
        self.publisher._seq = defaultdict(lambda: secrets.randbelow(2**31))  # MCAP keeps 32-bit numbers
        self.control.curve = self._keys is not None
        self.control.directory = self._directory
        await self.events.attach(tap, self.publisher, self.events_pub, self._probe)
        self._exit = contextlib.AsyncExitStack()
        if self.config.record:
            from sensorium.pipeline.recorder import recording

            await self._exit.enter_async_context(recording(local, self.config.record, clock=self.clock, curve=own))
            log.info("recording the bus to %s", self.config.record)
        self._tasks = [
            asyncio.create_task(self._control_loop(), name="hub-control"),
            asyncio.create_task(self.events.run(), name="hub-events"),
            asyncio.create_task(self.control.watch_health(self.heartbeat), name="hub-health"),
            asyncio.create_task(self._bus_refusals_loop(), name="hub-bus-refusals"),
        ]
        if self.placement.spec:
            self._tasks.append(
                asyncio.create_task(self.placement.run(self.heartbeat, self._noisy.admit), name="hub-placement")
            )
        if self._directory is not None:
            self._tasks.append(asyncio.create_task(self._watch_keys(), name="hub-keys"))
        self._started.set()
        log.info("hub up: %s (event log at seq %d)", ", ".join(self.endpoints.all()), self.log.last_seq)

    def _start_proxy(self) -> None:
        """Bind the bus (XSUB, XPUB) and run the checking forwarder between them on its own thread."""
        sync_ctx = zmq.Context.instance()
        xsub = sync_ctx.socket(zmq.XSUB)
        xpub = sync_ctx.socket(zmq.XPUB)
        for s in (xsub, xpub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, BUS_HWM)
            s.setsockopt(zmq.RCVHWM, BUS_HWM)
            if self._keys is not None:
                self._keys.apply_server(s)
        xsub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        xpub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        _bind(xsub, self.endpoints.publish)
        _bind(xpub, self.endpoints.subscribe)
        directory = self._directory
        guard = BusGuard(self.policy, directory.enrolled if directory is not None else None)
        self._forwarder = BusForwarder(xsub, xpub, guard, curve=self._keys is not None)
        self._forwarder.start()

    async def _stop_proxy(self) -> None:
        if self._forwarder is not None:
            await asyncio.to_thread(self._forwarder.stop)
            self._take_bus_refusals()
            self._forwarder, self._bus_dropped = None, 0

    def _take_bus_refusals(self) -> None:
        """Messages the bus forwarder refused since the last call: counted, and queued for the report."""
        fwd = self._forwarder
        if fwd is None or fwd.dropped == self._bus_dropped:
            return
        n, self._bus_dropped = fwd.dropped - self._bus_dropped, fwd.dropped
        self.bus_rejected += n
        desk = self.events
        desk.rejected += n
        for topic, why in fwd.take_refusals():
            kind = topic.split(b"/", 1)[0].decode(errors="replace")[:32]
            desk._rejected_total.labels(kind).inc()
            desk._rejections.append((topic.decode(errors="replace"), f"refused: {why}"))

    async def _bus_refusals_loop(self) -> None:
        while True:
            await asyncio.sleep(BUS_REPORT_S)
            self._take_bus_refusals()
            if self.events._rejections:
                await self.events._report_rejections()

    async def _cut_everyone(self) -> None:
        """Close every connection to every hub socket (they reconnect, and the ZAP handler sees each key again)."""
        await self._stop_proxy()
        await asyncio.to_thread(self._start_proxy)
        for sock, ep in ((self.router, self.endpoints.control), (self.events_pub, self.endpoints.events)):
            sock.unbind(ep)  # closes the connections accepted there, too
            await asyncio.to_thread(_bind, sock, ep)

    async def _watch_keys(self) -> None:
        """Revocation takes effect at once: a key gone from ``authorized/`` has its connections closed."""
        assert self._directory is not None
        known = set(self._directory.names.values())
        while True:
            await asyncio.sleep(REVOKE_CHECK_S)
            now = set((await asyncio.to_thread(self._directory.read)).values())
            gone = known - now
            known = now
            if not gone:
                continue
            log.warning("keys revoked: %s; closing every connection (the rest reconnect)", ", ".join(sorted(gone)))
            for node in list(self.nodes.values()):
                if node.key in gone:
                    node.ident = b""
                    await self.control.status(node, "down", f"key {node.key!r} revoked")
            await self._cut_everyone()

    async def stop(self) -> None:
        """Stop loops, the recorder, the proxy and the authenticator; flush the event log."""
        if hasattr(self, "_exit"):
            await self._exit.aclose()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.events.close()
        await self._stop_proxy()
        for s in (self.router, self.events_pub):
            s.close(0)
        self.publisher.close()
        if self._auth is not None:
            self._auth.stop()
        self.log.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_forever(self) -> None:
        """Start and serve until cancelled; raises ``EventLogError`` if the event log cannot be written
        (or whatever else stopped the hub from logging events)."""
        await self.start()
        try:
            assert self.failed is not None
            await self.failed
        finally:
            await self.stop()

    # ------------------------------------------------------------------ control

    def _warn(self, kind: str, text: str, *args: object) -> None:
        """A warning about bad input, at most once a second per kind (with the count left out)."""
        held = self._noisy.admit(kind)
        if held is not None:
            log.warning(text + (f" ({held} more like it not logged)" if held else ""), *args)

    async def _reply(self, ident: bytes, msg: object) -> None:
        await self.router.send_multipart([ident, *encode(msg)])  # type: ignore[arg-type]

    async def _refuse(self, ident: bytes, reason: str, request_id: int = 0, kind: str = "refused") -> None:
        self._control_errors.labels(kind).inc()
        await self._reply(ident, ControlError(time=self.clock.now(), reason=reason, request_id=request_id))

    async def _control_loop(self) -> None:
        while True:
            parts = await self.router.recv_multipart(copy=False)
            self.control_messages += 1
            ident, msg = parts[0].bytes, None
            # with CURVE, the name of the key the message came in under (set by the ZAP handler, unforgeable)
            user = (parts[1].get("User-Id") or "") if self._keys is not None and len(parts) > 1 else ""
            address = _peer_address(parts[1]) if len(parts) > 1 else ""
            frames = [p.bytes for p in parts[1:]]
            try:
                try:
                    msg = decode(frames)
                except CodecError as exc:
                    self._bad_control += 1
                    self._warn("control", "hub: bad control message from %r: %s", ident[:32], exc)
                    await self._refuse(ident, f"bad message: {exc}", kind="malformed")
                    continue
                await self.control.handle(msg, Request(ident, user, address, time.monotonic()))
            except Exception as exc:  # one bad request must never end the control plane
                self.control_errors += 1
                if self._noisy.admit("control-error") is not None:
                    log.exception("hub: control message from %r failed", ident[:32])
                with contextlib.suppress(Exception):
                    reason = f"hub error: {type(exc).__name__}: {exc}"[:500]
                    await self._refuse(ident, reason, getattr(msg, "request_id", 0), kind="error")

    def node_table(self) -> list[dict[str, object]]:
        """Registered nodes as plain dicts (for tools)."""
        return [msgspec.structs.asdict(n) if hasattr(n, "__struct_fields__") else vars(n) for n in self.nodes.values()]


class _NodesView:
    """The control plane's node table, read by placement (made before the control plane is)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def get(self, name: str) -> NodeInfo | None:
        return self._hub.control.nodes.get(name)
