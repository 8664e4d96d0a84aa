"""A node's link to the hub's control socket: register, heartbeat, clock sync, requests.

Every process (edge, worker, client) holds one. It never fails because the hub is absent: it
keeps heartbeating (ZeroMQ reconnects with backoff underneath) and re-registers whenever the
hub answers that it does not know the node, e.g. after the hub restarted.

Requests carry a ``request_id`` that the hub's answer echoes; a request is re-sent (same id, with
backoff) until answered, and an answer for any other id (a late answer to an earlier request or
retry) is ignored, so a hub slower than the retry interval cannot hand one request another's answer.

A node's name is carried in its messages, not used as the socket's identity: the hub binds the name to
the connection that registered it (and, with CURVE, to the key: a key speaks only as its own node). A
second process asking for a name in use is refused with the hub's reason, which names the running node
(``refused``, logged as an error; ``wait_connected(raise_refused=True)`` raises ``NameInUse``), until the
first leaves or goes quiet; it keeps asking meanwhile. A link that hears nothing from the hub for
``quiet_after`` seconds closes its socket and opens a new one (a new connection, however the old one was
lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterable

import zmq
import zmq.asyncio

from sensorium.pipeline.bus import Endpoints, context
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import CodecError, decode, encode
from sensorium.pipeline.messages import ControlError, Heartbeat, HeartbeatAck, Message, Register
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.node")


class HubUnavailable(RuntimeError):
    """The hub did not answer in time."""


class NameInUse(HubUnavailable):
    """The hub refused the registration (the name is in use by a running node, or the key may not use it)."""


class NodeLink:
    """Register with the hub, heartbeat, keep the clock synced, and ask the hub questions."""

    def __init__(
        self,
        name: str,
        role: str,
        endpoints: Endpoints,
        *,
        room: str = "",
        stages: Iterable[str] = (),
        clock: Clock | None = None,
        curve: CurveKeys | None = None,
        heartbeat: float = 0.5,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.room = room
        self.stages = list(stages)
        self.endpoints = endpoints
        self.clock = clock or Clock()
        self.curve = curve
        self.interval = heartbeat
        self.detail = ""
        """Free-form state sent with each heartbeat (e.g. "degraded: stt -> no-partials")."""
        self.exhausted: list[str] = []
        """Stages on the last step of their degrade ladder (sent with each heartbeat, for placement)."""
        self.serving: list[str] = []
        """Stages loaded and fed (a worker, once its models are loaded; sent with each heartbeat)."""
        self._ctx = ctx or context()
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_ack = 0.0
        self._registered = False
        self._pending: tuple[int, asyncio.Future[Message]] | None = None
        self._next_id = random.randrange(1, 2**31)  # a restarted process never reuses a live id
        self.stale_replies = 0
        """Answers ignored because they were not for the request waiting (late answers to retries)."""
        self._lock = asyncio.Lock()
        self._ack_event = asyncio.Event()
        self.instance = uuid.uuid4().hex
        """This link's id for the hub (sent only to it): the same link on a new connection keeps its name."""
        self.refused = ""
        """The hub's reason for refusing the last registration ("" once registered)."""
        self._refused_logged = ("", 0.0)
        self.quiet_after = max(3.0, 6 * heartbeat)
        """Seconds without an answer from the hub after which the socket is rebuilt."""
        self.rebuilds = 0
        """Times the socket was closed and opened again because the hub went quiet."""
        self._last_life = 0.0

    @property
    def connected(self) -> bool:
        """True while the hub answered a heartbeat within three intervals."""
        return time.monotonic() - self._last_ack < 3 * self.interval + 0.2

    async def __aenter__(self) -> NodeLink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> None:
        # No IDENTITY: the hub's ROUTER gives every connection its own, so no peer can take this one's.
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # do not queue control messages for a hub that is not there
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)  # backoff while the hub is down, back within 2 s of it
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # the hub's answers fit the codec's 64 KiB header
        if self.curve is not None:
            self.curve.apply_client(sock)
        sock.connect(self.endpoints.control)
        self._sock = sock
        self._last_life = time.monotonic()
        self._reader = asyncio.create_task(self._read(), name=f"control-{self.name}")

    async def start(self) -> None:
        """Open the control socket and start heartbeating."""
        self._open()
        self._tasks = [asyncio.create_task(self._beat(), name=f"heartbeat-{self.name}")]

    async def _rebuild(self) -> None:
        """Close the socket and open a new one (a fresh connection to the hub)."""
        self.rebuilds += 1
        first = self._last_ack >= self._last_life  # the first rebuild since the hub last answered
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: no answer from the hub at %s for %.0f s: opening a new connection",
            self.name,
            self.endpoints.control,
            time.monotonic() - max(self._last_life, self._last_ack),
        )
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        if self._sock is not None:
            self._sock.close(0)
        self._registered = False
        self._open()

    async def close(self) -> None:
        """Stop heartbeating, tell the hub the name is free, and close the socket."""
        for t in [*self._tasks, getattr(self, "_reader", None)]:
            if t is not None:
                t.cancel()
        for t in [*self._tasks, getattr(self, "_reader", None)]:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._sock is not None:
            if self._registered:
                with contextlib.suppress(zmq.ZMQError):
                    zmq.Socket.shadow(self._sock.underlying).send_multipart(
                        encode(Heartbeat(node=self.name, sent=time.monotonic(), leaving=True)), flags=zmq.NOBLOCK
                    )
            self._sock.close(linger=200 if self._registered else 0)  # the goodbye leaves in the background
            self._sock = None

    async def wait_connected(self, timeout: float = 10.0, *, raise_refused: bool = False) -> bool:
        """Wait until the hub answered; False after ``timeout`` seconds (``NameInUse`` with the hub's reason
        instead, with ``raise_refused``, if the hub refused the registration)."""
        deadline = time.monotonic() + timeout
        while not self.connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.refused and raise_refused:
                    raise NameInUse(f"{self.name}: the hub at {self.endpoints.control} refused it: {self.refused}")
                return False
            self._ack_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self.interval)):
                    await self._ack_event.wait()
        return True

    async def _send(self, msg: Message) -> bool:
        """Queue ``msg`` for the hub; False if no hub is connected (nothing was queued)."""
        assert self._sock is not None
        try:
            await self._sock.send_multipart(encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            return False  # hub not connected yet; the next beat tries again
        return True

    def _register_msg(self) -> Register:
        return Register(
            node=self.name,
            role=self.role,
            room=self.room,
            stages=self.stages,
            time=self.clock.now(),
            instance=self.instance,
        )

    async def _beat(self) -> None:
        while True:
            if time.monotonic() - max(self._last_life, self._last_ack) > self.quiet_after:
                await self._rebuild()
            if not self._registered or not self.connected:
                await self._send(self._register_msg())
            await self._send(
                Heartbeat(
                    node=self.name,
                    sent=time.monotonic(),
                    offset_ms=(self.clock.offset - (time.time() - time.monotonic())) * 1000,
                    detail=self.detail,
                    exhausted=self.exhausted,
                    serving=self.serving,
                )
            )
            await asyncio.sleep(self.interval)

    async def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            frames = await sock.recv_multipart()
            received = time.monotonic()
            try:
                msg = decode(frames)
            except CodecError as exc:
                log.warning("%s: bad control message from hub: %s", self.name, exc)
                continue
            if isinstance(msg, HeartbeatAck):
                self.clock.observe(msg.sent, msg.hub_time, received)
                self._last_ack = received
                self._registered = True
                self.refused = ""
                self._ack_event.set()
            elif isinstance(msg, ControlError) and msg.reason == "unregistered":
                self._registered = False
                await self._send(self._register_msg())
            elif isinstance(msg, ControlError) and msg.reason.startswith("register refused") and not msg.request_id:
                self._registered = False
                self.refused = msg.reason
                last, at = self._refused_logged
                if last != msg.reason or received - at > 30.0:
                    self._refused_logged = (msg.reason, received)
                    log.error("%s: %s", self.name, msg.reason)
            elif self._pending is not None and getattr(msg, "request_id", 0) == self._pending[0]:
                if not self._pending[1].done():
                    self._pending[1].set_result(msg)
            else:
                self.stale_replies += 1
                log.debug("%s: ignoring a %s that answers no waiting request", self.name, type(msg).__name__)

    async def request(self, msg: Message, timeout: float = 5.0) -> Message:
        """Send a request to the hub and wait for its answer (one at a time).

        ``msg`` gets a fresh ``request_id``; it is re-sent after 1 s, 2 s, 4 s … until ``timeout``
        (every 0.2 s while no hub is connected to take it).
        """
        async with self._lock:
            self._next_id = self._next_id % (2**62) + 1
            rid = self._next_id
            msg.request_id = rid  # type: ignore[attr-defined]
            fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending = (rid, fut)
            deadline = time.monotonic() + timeout
            wait = 1.0
            try:
                while True:
                    sent = await self._send(msg)
                    try:
                        left = deadline - time.monotonic()
                        # not sent (no hub yet): try again soon, so a restarted hub answers at once
                        async with asyncio.timeout(max(0.0, min(wait if sent else 0.2, left))):
                            return await asyncio.shield(fut)
                    except TimeoutError:
                        if time.monotonic() >= deadline:
                            raise HubUnavailable(
                                f"hub at {self.endpoints.control} did not answer in {timeout:.1f}s"
                            ) from None
                        if sent:
                            wait = min(wait * 2, 8.0)  # a slow hub is not helped by a queue of our retries
            finally:
                self._pending = None
