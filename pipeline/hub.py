"""The hub: data bus proxy, control socket, node health, event log and presence snapshot.

A forwarder thread moves the data (XSUB → XPUB, frames not copied) and drops what its sender may not
publish (``pipeline.busguard``: with CURVE the sender is the key each message came in under); the hub's asyncio
side only sees events (it subscribes to event topics like any node), control messages and its
own timers. Off loopback every socket is a CURVE server and only enrolled keys get in.

Events are a group commit: what the tap has queued is numbered together, written with one fsync
on the log's own thread, and only then published and served, so no client ever sees a number that
a power cut could take back. If the log cannot be written (disk full) the hub says so (an ERROR
line, ``sensorium_hub_event_log_errors_total``, a ``node_status`` error on the bus) and stops with
``EventLogError``: ``sensorium hub`` exits non-zero and systemd restarts it, rather than a hub that
answers heartbeats while it keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import zmq
import zmq.asyncio
from prometheus_client import Counter, Gauge
from zmq.auth.thread import ThreadAuthenticator

from pipeline.bus import Endpoints, Publisher, context, is_loopback
from pipeline.busguard import BusForwarder, BusGuard, PublishPolicy
from pipeline.clock import Clock
from pipeline.codec import MAX_HEADER, MAX_PAYLOAD, CodecError, decode, encode, to_json
from pipeline.config import HubConfig, parse_duration
from pipeline.eventlog import MAX_EVENT_JSON, EventLog, EventLogError, LoggedEvent
from pipeline.messages import (
    EVENT_KINDS,
    ControlError,
    Event,
    EventsReply,
    EventsRequest,
    Heartbeat,
    HeartbeatAck,
    InputError,
    NodeStatus,
    Placement,
    PlacementRequest,
    Presence,
    Register,
    SnapshotRequest,
    Transcript,
    WakeDetected,
)
from pipeline.metrics import Metrics
from pipeline.placement import StageSpec, WorkerState, assign, to_message
from pipeline.ratelimit import RateLimit
from pipeline.security import CurveKeys, KeyError_, hub_keys

log = logging.getLogger("sensorium.hub")

MAX_REPLY_EVENTS = 2000
MAX_REPLY_BYTES = MAX_HEADER - 4096
"""Event JSON per events reply: the reply's header must stay under the codec's limit."""
MAX_PREFIXES = 64
"""Most topic prefixes one events request may ask for."""
MAX_PREFIX_BYTES = 128
"""Longest topic prefix an events request may ask for."""
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
MAX_NODES = 256
"""Most nodes the hub tracks; a new name beyond it replaces the node down the longest, or is refused."""
MAX_NAMES_PER_KEY = 16
"""With CURVE: most node names one key holds (a client key may run several ``<key>-<pid>`` processes)."""
MAX_NAMES_PER_ADDRESS = 64
"""Most node names held from one remote IP address (loopback and ipc are not counted: one box)."""
FORGET_AFTER = 120.0
"""A node down this long is dropped from the table (its ``down`` status was published long ago)."""
MAX_FRAME = MAX_PAYLOAD + MAX_HEADER
"""Largest frame the bus takes (ZMQ_MAXMSGSIZE on the XSUB): a bigger one closes its sender's connection
before any of it is held in memory."""
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
ROLES = ("edge", "worker", "client")
REVOKE_CHECK_S = 0.5
"""How often the hub looks for keys removed from ``authorized/`` (revocation)."""
BUS_REPORT_S = 0.25
"""How often the hub takes the bus forwarder's refusals (counted, reported as rate-limited ``error`` events)."""
UTTERANCE_S = 15.0
"""Longest a room counts as busy (an utterance in flight) after a wake word without a final transcript."""


HUB_ONLY = (Placement,)
"""Events only the hub publishes."""


class _TapReader:
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


class SecurityError(RuntimeError):
    """The hub refuses to start insecurely."""


@dataclass
class NodeInfo:
    """What the hub knows of a registered node."""

    name: str
    role: str
    room: str
    stages: list[str]
    last_seen: float
    state: str = "up"
    offset_ms: float = 0.0
    detail: str = ""
    ident: bytes = b""
    """The control connection that registered the name (only it may heartbeat as this node)."""
    instance: str = ""
    """The registering link's private id: the same link back on a new connection keeps the name."""
    key: str = ""
    """With CURVE: the name of the enrolled key it registered with."""
    address: str = ""
    """The remote IP address it registered from ("" for loopback and ipc)."""
    registered: float = 0.0
    """When it registered (monotonic)."""

    def __post_init__(self) -> None:
        self.registered = self.registered or self.last_seen


class _KeyDirectory:
    """ZAP credentials: the enrolled keys in ``authorized/``, re-read on each handshake.

    An enrolled key is known by its file's name (``authorized/kitchen-pi.key`` is "kitchen-pi"), the hub's
    own key as "hub": that name is the ZAP User-Id of every message that arrives over its connection."""

    def __init__(self, folder: Path, own: bytes) -> None:
        self.folder = folder
        self.own = own
        self.names: dict[bytes, str] = {own: "hub"}
        self._lock = threading.Lock()

    def read(self) -> dict[bytes, str]:
        """Public key (Z85) → key name, as the folder holds them now."""
        found = {self.own: "hub"}
        for f in self.folder.glob("*.key"):
            with contextlib.suppress(ValueError, OSError):
                pub, _ = zmq.auth.load_certificate(str(f))
                found.setdefault(pub, f.stem)
        with self._lock:
            self.names = found
        return found

    def enrolled(self, name: str) -> bool:
        """True if an enrolled key has this name."""
        return (self.folder / f"{name}.key").exists()

    def name_of(self, key: bytes) -> str:
        z = zmq.utils.z85.encode(key) if len(key) == 32 else key
        with self._lock:
            return self.names.get(z, "")

    def callback(self, domain: str, key: bytes) -> bool:
        ok = (zmq.utils.z85.encode(key) if len(key) == 32 else key) in self.read()
        if not ok:
            log.warning("refused unknown CURVE key %s", zmq.utils.z85.encode(key)[:12] if len(key) == 32 else key[:12])
        return ok


class _Authenticator(ThreadAuthenticator):
    """The ZAP handler: the User-Id of a connection is its key's name (``_KeyDirectory``)."""

    directory: _KeyDirectory | None = None

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.directory.name_of(client_public_key) if self.directory is not None else ""


def may_speak_as(key: str, node: str, role: str, enrolled: bool) -> bool:
    """With CURVE: may the connection of key ``key`` register as ``node``? A key speaks as its own node;
    a client may also take ``<key>-<anything>`` (one key, several client processes: ``events-cli-4711``)
    unless that name is itself an enrolled key's."""
    if node == key:
        return True
    return role == "client" and node.startswith(f"{key}-") and not enrolled


def _register_problem(msg: Register) -> str | None:
    """Why a registration is refused (names the deployment could not have), or None."""
    if not 0 < len(msg.node) <= 64:
        return f"node name of {len(msg.node)} characters (1 to 64)"
    if msg.role not in ROLES:
        return f"role {msg.role[:32]!r} (expected one of: {', '.join(ROLES)})"
    if len(msg.room) > 64:
        return f"room name of {len(msg.room)} characters (at most 64)"
    if len(msg.stages) > 64 or any(len(s) > 64 for s in msg.stages):
        return "more than 64 stages or a stage name over 64 characters"
    return None


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
        self.rejected = 0
        """Events refused because their sender may not publish them."""
        self._own: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._rejections: list[tuple[str, str]] = []
        self._topic_seq: OrderedDict[str, int] = OrderedDict()
        self._early: list[Event] = []
        self._tap_dropped = 0
        self.tap_lost = 0
        """Events the tap saw numbers of but never got (dropped at a high-water mark on the way)."""
        self._reject_limit: RateLimit[None] = RateLimit(interval=1.0, burst=10)
        self.reserved = frozenset(nodes)
        """The deployment's edges and workers: a full node table makes room for them."""
        self.endpoints = Endpoints.from_address(bind or config.address)
        self.clock = clock or Clock()
        self.heartbeat = parse_duration(config.heartbeat, "hub.heartbeat")
        self.down_after = parse_duration(config.down_after, "hub.down_after")
        self.state_dir = Path(state_dir) if state_dir else None
        self.log = EventLog(
            config.event_log,
            self.state_dir / "events.jsonl" if self.state_dir else None,
            max_bytes=config.event_log_bytes,
        )
        self.nodes: dict[str, NodeInfo] = {}
        self.presence: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.metrics = Metrics("hub")
        self.bad_messages = 0
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
        self._tap_lost_total = Counter(
            "sensorium_hub_events_lost_total",
            "Events lost before the log (gaps in a publisher's numbers)",
            registry=self.metrics.registry,
        )
        self._rejected_total = Counter(
            "sensorium_hub_events_rejected_total",
            "Events refused because their sender may not publish them",
            ["kind"],
            registry=self.metrics.registry,
        )
        self._log_errors = Counter(
            "sensorium_hub_event_log_errors_total", "Event log writes that failed", registry=self.metrics.registry
        )
        self._log_ok = Gauge(
            "sensorium_hub_event_log_ok",
            "1 while the event log is written, 0 once a write failed",
            registry=self.metrics.registry,
        )
        self._log_ok.set(1)
        self._batches = Counter(
            "sensorium_hub_event_commits_total",
            "Group commits of the event log (one fsync each)",
            registry=self.metrics.registry,
        )
        self._noisy: RateLimit[None] = RateLimit(interval=1.0, burst=5)  # log lines about bad input
        self._log_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-eventlog")
        self._flush: asyncio.Future[None] | None = None
        self.failed: asyncio.Future[None] | None = None
        """Done with an exception (``EventLogError`` for a write) once events can no longer be logged."""
        self._keys: CurveKeys | None = None
        self._auth: ThreadAuthenticator | None = None
        self._directory: _KeyDirectory | None = None
        self._forwarder: BusForwarder | None = None
        self._bus_dropped = 0
        self.bus_rejected = 0
        """Messages the bus forwarder refused (their sender may not publish them; also counted in ``rejected``)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()
        # Placement of replicated stages (pipeline.placement): the hub owns the table.
        self.placement_spec = placement or {}
        self.takeover_after = parse_duration(config.takeover_after, "hub.takeover_after")
        self.handback_after = parse_duration(config.handback_after, "hub.handback_after")
        self.assignments: dict[tuple[str, str], str] = {}
        self.placement_version = 0
        self._epoch = uuid.uuid4().hex[:12]
        self.drained: set[str] = set()
        self._pworkers = {w: WorkerState() for sp in self.placement_spec.values() for w, _ in sp.replicas}
        self._load_drained()
        self._busy_rooms: dict[str, float] = {}
        self._serving: dict[str, bool] = {}
        """Per worker: its last heartbeat said its stages are loaded (only then does it get streams)."""
        self._t_start = time.monotonic()
        self._assigned = Gauge(
            "sensorium_placement_assigned",
            "1 where a worker serves a stream of a replicated stage now",
            ["stage", "stream", "worker"],
            registry=self.metrics.registry,
        )
        self._placement_moves = Counter(
            "sensorium_placement_moves_total",
            "Streams handed from one worker to another",
            ["stage", "reason"],
            registry=self.metrics.registry,
        )

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
            self._directory = _KeyDirectory(Path(self.config.keys) / "authorized", self._keys.public)
            self._directory.read()
            self._auth = _Authenticator(sync_ctx)
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
        self.tap = _TapReader(
            local.subscribe,
            [f"{k}/" for k in EVENT_KINDS] + [f"ctl/{self._probe}/"],
            own,
            TAP_BYTES,
        )
        self.publisher = Publisher(local, curve=own)
        # the hub's own events are known by (topic, seq); numbers start at random so nobody can send one first
        self.publisher._seq = defaultdict(lambda: secrets.randbelow(2**31))  # MCAP keeps 32-bit numbers
        self._early = await self._await_tap()
        self._exit = contextlib.AsyncExitStack()
        if self.config.record:
            from pipeline.recorder import recording

            await self._exit.enter_async_context(recording(local, self.config.record, clock=self.clock, curve=own))
            log.info("recording the bus to %s", self.config.record)
        self.failed = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._control_loop(), name="hub-control"),
            asyncio.create_task(self._tap_loop(), name="hub-events"),
            asyncio.create_task(self._health_loop(), name="hub-health"),
            asyncio.create_task(self._bus_refusals_loop(), name="hub-bus-refusals"),
        ]
        if self.placement_spec:
            self._tasks.append(asyncio.create_task(self._placement_loop(), name="hub-placement"))
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
        self.rejected += n
        for topic, why in fwd.take_refusals():
            kind = topic.split(b"/", 1)[0].decode(errors="replace")[:32]
            self._rejected_total.labels(kind).inc()
            self._rejections.append((topic.decode(errors="replace"), f"refused: {why}"))

    async def _bus_refusals_loop(self) -> None:
        while True:
            await asyncio.sleep(BUS_REPORT_S)
            self._take_bus_refusals()
            if self._rejections:
                await self._report_rejections()

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
                    await self._status(node, "down", f"key {node.key!r} revoked")
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
        if self._flush is not None:  # a write in progress finishes before the file is closed
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10.0):
                    await asyncio.shield(self._flush)
        self._log_thread.shutdown(wait=False)
        await self._stop_proxy()
        for s in (self.router, self.events_pub):
            s.close(0)
        await asyncio.to_thread(self.tap.close)
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

    # ------------------------------------------------------------------ events

    def _warn(self, kind: str, text: str, *args: object) -> None:
        """A warning about bad input, at most once a second per kind (with the count left out)."""
        held = self._noisy.admit(kind)
        if held is not None:
            log.warning(text + (f" ({held} more like it not logged)" if held else ""), *args)

    def _bad_event(self, topic: bytes, exc: CodecError) -> None:
        self.bad_messages += 1
        self._warn("event", "hub dropped malformed event on %r: %s", topic[:64], exc)

    async def _tap_loop(self) -> None:
        try:
            await self._tap()
        except Exception as exc:  # a hub that no longer logs must not go on answering heartbeats
            log.exception("hub: the event tap failed; stopping")
            if self.failed is not None and not self.failed.done():
                self.failed.set_exception(exc)

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
        if isinstance(msg, WakeDetected):
            self._busy_rooms[msg.room] = time.monotonic()
        elif isinstance(msg, Transcript) and msg.final:
            self._busy_rooms.pop(msg.room, None)
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

    async def _status(self, node: NodeInfo, state: str, detail: str) -> None:
        node.state = state
        log.info("node %s (%s) is %s%s", node.name, node.role, state, f": {detail}" if detail else "")
        await self.publish_own(
            NodeStatus(
                room=node.room,
                source="hub",
                time=self.clock.now(),
                node=node.name,
                role=node.role,
                state=state,  # type: ignore[arg-type]
                detail=detail,
                offset_ms=node.offset_ms,
            )
        )

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
                    self.bad_messages += 1
                    self._warn("control", "hub: bad control message from %r: %s", ident[:32], exc)
                    await self._refuse(ident, f"bad message: {exc}", kind="malformed")
                    continue
                await self._control(ident, msg, user, address)
            except Exception as exc:  # one bad request must never end the control plane
                self.control_errors += 1
                if self._noisy.admit("control-error") is not None:
                    log.exception("hub: control message from %r failed", ident[:32])
                with contextlib.suppress(Exception):
                    reason = f"hub error: {type(exc).__name__}: {exc}"[:500]
                    await self._refuse(ident, reason, getattr(msg, "request_id", 0), kind="error")

    async def _control(self, ident: bytes, msg: object, user: str = "", address: str = "") -> None:
        now = time.monotonic()
        if isinstance(msg, Heartbeat):
            node = self.nodes.get(msg.node)
            if node is None or node.ident != ident:  # only the connection that registered the name
                await self._reply(ident, ControlError(time=self.clock.now(), reason="unregistered"))
                return
            if msg.leaving:
                await self._status(node, "down", "left")
                node.ident = b""
                return
            await self._reply(ident, HeartbeatAck(sent=msg.sent, hub_time=self.clock.now()))
            node.last_seen = now
            node.offset_ms = msg.offset_ms
            if node.state == "down":
                await self._status(node, "up", "heartbeats resumed")
            exhausted = frozenset(msg.exhausted[:64])
            ps = self._pworkers.get(msg.node)
            if ps is not None:
                serving = bool(msg.serving)
                if ps.exhausted != exhausted or self._serving.get(msg.node) != serving:
                    ps.exhausted = exhausted
                    self._serving[msg.node] = serving
                    await self._replan()
            detail = msg.detail[:500]
            if detail != node.detail:
                node.detail = detail
                if detail.startswith(("degraded", "error")):
                    await self._status(node, "degraded" if detail.startswith("degraded") else "error", detail)
        elif isinstance(msg, Register):
            why = (
                _register_problem(msg)
                or self._name_problem(ident, msg, user, now)
                or self._quota_problem(ident, msg, user, address)
            )
            if why is None and msg.node not in self.nodes and len(self.nodes) >= MAX_NODES:
                why = self._make_room(msg.node)
            if why is not None:
                await self._refuse(ident, f"register refused: {why}", kind="register")
                return
            for other in [n for n in self.nodes.values() if n.ident == ident and n.name != msg.node]:
                del self.nodes[other.name]  # one name per connection: a connection that renames frees the old
            old = self.nodes.get(msg.node)
            self.nodes[msg.node] = NodeInfo(
                msg.node,
                msg.role,
                msg.room,
                list(msg.stages),
                now,
                ident=ident,
                instance=msg.instance,
                key=user,
                address=address,
            )
            if old is None or old.state != "up":
                await self._status(self.nodes[msg.node], "up", "registered" if old is None else "re-registered")
            if msg.node in self._pworkers:
                await self._replan()
        elif isinstance(msg, PlacementRequest):
            if msg.action != "get":
                if msg.worker not in self._pworkers:
                    known = ", ".join(sorted(self._pworkers)) or "none: no stage runs on more than one worker"
                    await self._refuse(
                        ident,
                        f"{msg.action}: {msg.worker[:64]!r} runs no replicated stage (known: {known})",
                        msg.request_id,
                    )
                    return
                was = msg.worker in self.drained
                (self.drained.add if msg.action == "drain" else self.drained.discard)(msg.worker)
                if was != (msg.action == "drain"):
                    log.info("placement: %s %sed", msg.worker, msg.action)
                    self._save_drained()
                    await self._replan()
            await self._reply(ident, self._table(msg.request_id))
        elif isinstance(msg, EventsRequest):
            if len(msg.prefixes) > MAX_PREFIXES:
                await self._refuse(
                    ident, f"events request with {len(msg.prefixes)} prefixes, limit {MAX_PREFIXES}", msg.request_id
                )
                return
            long = next((p for p in msg.prefixes if len(p.encode()) > MAX_PREFIX_BYTES), None)
            if long is not None:
                await self._refuse(
                    ident,
                    f"events request prefix of {len(long.encode())} bytes ({long[:32]!r}…), limit {MAX_PREFIX_BYTES}",
                    msg.request_id,
                )
                return
            entries = self.log.since(msg.since, msg.prefixes, max_bytes=MAX_REPLY_BYTES, max_events=MAX_REPLY_EVENTS)
            await self._reply(
                ident,
                EventsReply(
                    time=self.clock.now(),
                    events=[e.json for e in entries],
                    first_seq=self.log.first_seq,
                    last_seq=self.log.last_seq,
                    request_id=msg.request_id,
                    epoch=self.log.epoch,
                ),
            )
        elif isinstance(msg, SnapshotRequest):
            events, size = [], 0
            for js in reversed(self.presence.values()):  # the newest, as many as one reply carries
                size += len(js) + 8
                if size > MAX_REPLY_BYTES:
                    break
                events.append(js)
            await self._reply(
                ident,
                EventsReply(
                    time=self.clock.now(),
                    events=events[::-1],
                    first_seq=self.log.first_seq,
                    last_seq=self.log.last_seq,
                    request_id=msg.request_id,
                    epoch=self.log.epoch,
                ),
            )
        else:
            await self._refuse(
                ident, f"unexpected {type(msg).__name__} on the control socket", getattr(msg, "request_id", 0)
            )

    def _name_problem(self, ident: bytes, msg: Register, user: str, now: float) -> str | None:
        """Why this connection may not have this name now, or None."""
        if self._keys is not None and user != "hub":
            enrolled = self._directory is not None and self._directory.enrolled(msg.node)
            if not may_speak_as(user, msg.node, msg.role, enrolled):
                return f"the key {user!r} may not speak as {msg.node!r} (a key registers only as its own node)"
        old = self.nodes.get(msg.node)
        if old is None or old.ident in (ident, b"") or old.state == "down":
            return None
        if msg.instance and msg.instance == old.instance:
            return None  # the same link, back on a new connection
        return (
            f"the name {msg.node!r} is in use by a running {old.role} (last heartbeat "
            f"{now - old.last_seen:.1f} s ago); stop that process or choose another name (it is free once "
            f"that node leaves, or after {self.down_after:g} s without its heartbeats)"
        )

    def _quota_problem(self, ident: bytes, msg: Register, user: str, address: str) -> str | None:
        """A flood from one key or one remote address: more names than it may hold, or None."""
        if msg.node in self.nodes and self.nodes[msg.node].ident == ident:
            return None
        held = [n for n in self.nodes.values() if n.ident != ident and n.state != "down"]
        if user and user != "hub" and sum(1 for n in held if n.key == user) >= MAX_NAMES_PER_KEY:
            return f"the key {user!r} already holds {MAX_NAMES_PER_KEY} node names"
        if address and sum(1 for n in held if n.address == address) >= MAX_NAMES_PER_ADDRESS:
            return f"{address} already holds {MAX_NAMES_PER_ADDRESS} node names"
        return None

    def _make_room(self, name: str) -> str | None:
        """Make room in a full node table for ``name``: the node down the longest goes; for a node of the
        deployment, else the newest registered one that is not. None, or why the name is refused."""
        down = sorted((n for n in self.nodes.values() if n.state == "down"), key=lambda n: n.last_seen)
        if down:
            del self.nodes[down[0].name]
            return None
        if name in self.reserved:
            strangers = [n for n in self.nodes.values() if n.name not in self.reserved]
            if strangers:
                newest = max(strangers, key=lambda n: n.registered)
                log.warning("node table full: %s (a node of the deployment) replaces %s", name, newest.name)
                del self.nodes[newest.name]
                return None
        return f"the hub already tracks {MAX_NODES} nodes, all up"

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat / 2)
            now = time.monotonic()
            for node in [n for n in self.nodes.values() if n.state == "down" and now - n.last_seen > FORGET_AFTER]:
                del self.nodes[node.name]
            for node in list(self.nodes.values()):
                if node.state != "down" and now - node.last_seen > self.down_after:
                    await self._status(node, "down", f"no heartbeat for {now - node.last_seen:.1f}s")

    # ------------------------------------------------------------------ placement

    def _drained_file(self) -> Path | None:
        return self.state_dir / "drained.json" if self.state_dir else None

    def _load_drained(self) -> None:
        f = self._drained_file()
        if f is not None and f.exists():
            with contextlib.suppress(OSError, msgspec.DecodeError):
                names = msgspec.json.decode(f.read_bytes(), type=list[str])
                self.drained = {n for n in names if n in self._pworkers}

    def _save_drained(self) -> None:
        f = self._drained_file()
        if f is not None:
            with contextlib.suppress(OSError):
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(msgspec.json.encode(sorted(self.drained)))

    def busy_streams(self) -> set[tuple[str, str]]:
        """(stage, room) of room stages with an utterance in flight now."""
        now = time.monotonic()
        rooms = {r for r, t in self._busy_rooms.items() if now - t < UTTERANCE_S}
        return {(st, r) for st, sp in self.placement_spec.items() if sp.serves == "room" for r in rooms}

    def _table(self, request_id: int = 0) -> object:
        live = [w for w, s in self._pworkers.items() if s.live]
        busy = [f"{st}/{r}" for st, r in sorted(self.busy_streams())]
        return to_message(self.assignments, self.placement_version, live, self.drained, busy, request_id, self._epoch)

    def _refresh_liveness(self, now: float) -> None:
        for name, ps in self._pworkers.items():
            node = self.nodes.get(name)
            fresh = node is not None and node.role == "worker" and now - node.last_seen < self.takeover_after
            live = fresh and self._serving.get(name, False)
            if live and not ps.live:
                ps.up_since = now  # a stream nobody holds goes to it at once; taking one from a standby waits
            ps.live = live
            ps.drained = name in self.drained

    async def _replan(self) -> None:
        """Recompute the table; publish a ``placement`` event per move and the table if anything moved."""
        now = time.monotonic()
        if now - self._t_start < self.takeover_after:
            return  # right after a (re)start: let every live worker re-register before handing anything out
        self._refresh_liveness(now)
        busy = self.busy_streams()
        table, moves = assign(
            self.placement_spec,
            self._pworkers,
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
        self.placement_version += 1
        for (stage, stream), w in table.items():
            self._assigned.labels(stage, stream, w).set(1)
        await self.publisher.publish(self._table())  # type: ignore[arg-type]
        for m in moves:
            self._placement_moves.labels(m.stage, m.reason).inc()
            log.info("placement: %s %s %s -> %s (%s)", m.stage, m.stream, m.old or "-", m.new or "-", m.reason)
            await self.publish_own(
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

    async def _placement_loop(self) -> None:
        tick = min(self.heartbeat / 2, self.takeover_after / 4)
        last_sent = last_tick = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.monotonic()
                stalled = now - last_tick > tick + self.takeover_after / 2
                last_tick = now
                if stalled:  # the hub itself was held up: the heartbeats queued meanwhile are read first
                    continue
                version = self.placement_version
                await self._replan()
                now = time.monotonic()
                if self.placement_version == version and now - last_sent >= self.heartbeat:
                    # again every heartbeat: a worker that (re)connected learns the table within one
                    await self.publisher.publish(self._table())  # type: ignore[arg-type]
                    last_sent = now
            except Exception:  # the table is stale until the next tick; the hub keeps serving
                if self._noisy.admit("placement") is not None:
                    log.exception("hub: placement failed")

    def node_table(self) -> list[dict[str, object]]:
        """Registered nodes as plain dicts (for tools)."""
        return [msgspec.structs.asdict(n) if hasattr(n, "__struct_fields__") else vars(n) for n in self.nodes.values()]
