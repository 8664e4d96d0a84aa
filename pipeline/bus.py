"""The data bus: hub endpoints, publishers and subscribers over ZeroMQ.

The hub runs libzmq's XSUB/XPUB proxy; every node publishes to the hub's XSUB and subscribes at
its XPUB, filtering on topic prefixes (``audio/kitchen/``). Four sockets derive from one address:

=========  ==================  ===============================================
socket     tcp://host:P        ipc://path, inproc://name
=========  ==================  ===============================================
publish    P                   ``<path>-pub``  (nodes' PUB → hub XSUB)
subscribe  P+1                 ``<path>-sub``  (hub XPUB → nodes' SUB)
control    P+2                 ``<path>-ctl``  (nodes' DEALER ↔ hub ROUTER)
events     P+3                 ``<path>-evt``  (hub PUB of sequenced events, JSON)
=========  ==================  ===============================================
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlparse

import zmq
import zmq.asyncio

from sensorium.pipeline.codec import MAX_HEADER, MAX_PAYLOAD, CodecError, decode, encode
from sensorium.pipeline.messages import OLD_COPY_PREFIXES, OLD_KINDS, Message, old_topic
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.bus")

_COPY_THRESHOLD = 64 * 1024


def context() -> zmq.asyncio.Context:
    """The process-wide asyncio context; shares libzmq's context with sync sockets (inproc works)."""
    return zmq.asyncio.Context.shadow(zmq.Context.instance().underlying)


@dataclass(frozen=True)
class Endpoints:
    """The four hub sockets."""

    publish: str
    """Where nodes publish (hub XSUB)."""
    subscribe: str
    """Where nodes subscribe (hub XPUB)."""
    control: str
    """Hub ROUTER: register, heartbeat, requests."""
    events: str
    """Hub PUB of sequenced events (public JSON)."""

    @classmethod
    def from_address(cls, address: str) -> Endpoints:
        """Derive the four endpoints from one base address (see module docstring)."""
        scheme = address.split("://", 1)[0]
        if scheme == "tcp":
            base, _, port = address.rpartition(":")
            if not port.isdigit() or not base.startswith("tcp://"):
                raise ValueError(f"hub address {address!r}: expected tcp://HOST:PORT")
            p = int(port)
            return cls(*(f"{base}:{p + i}" for i in range(4)))
        if scheme in ("ipc", "inproc"):
            return cls(f"{address}-pub", f"{address}-sub", f"{address}-ctl", f"{address}-evt")
        raise ValueError(f"hub address {address!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME")

    def all(self) -> tuple[str, str, str, str]:
        """All four endpoints."""
        return (self.publish, self.subscribe, self.control, self.events)


def is_loopback(address: str) -> bool:
    """True for ipc/inproc and tcp on a loopback host (no CURVE needed there)."""
    if not address.startswith("tcp://"):
        return True
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Publisher:
    """Publishes messages to the hub, numbering each topic's messages."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        curve: CurveKeys | None = None,
        hwm: int = 10000,
        ctx: zmq.asyncio.Context | None = None,
        ready_check: bool = True,
    ) -> None:
        """``ready_check=False``: no connection monitor for ``wait_ready`` (the caller monitors the socket itself)."""
        self.socket = (ctx or context()).socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # its only input: subscriptions (topic prefixes)
        if curve is not None:
            curve.apply_client(self.socket)
        # Watched from before the connect so the handshake cannot be missed (see ``wait_ready``).
        # inproc has no handshake to watch: its pipe is attached at connect.
        watch = ready_check and not endpoints.publish.startswith("inproc://")
        self._monitor: zmq.asyncio.Socket | None = (
            self.socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED) if watch else None
        )
        self.socket.connect(endpoints.publish)
        # PUB never blocks (it drops at the high-water mark), so sending needs no future: the
        # synchronous shadow of the same socket saves the asyncio round trip per message.
        self._send = zmq.Socket.shadow(self.socket.underlying).send_multipart
        self._seq: defaultdict[str, int] = defaultdict(int)
        self.sent = 0
        """Messages sent."""
        self.dropped = 0
        """Messages dropped at the high-water mark."""

    async def wait_ready(self, timeout: float = 2.0) -> bool:
        """Wait until the hub's proxy is connected (False if not within ``timeout`` s).

        A PUB socket drops what it sends before the proxy's subscription reaches it, so a client that
        publishes at once after starting (a Wyoming request the moment the gateway is up) would lose it.
        """
        if self._monitor is None:
            await asyncio.sleep(0.02)  # inproc: the proxy's subscription is a command the next send reads
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._monitor.recv_multipart()
        except TimeoutError:
            return False
        self._stop_monitor()
        # The proxy sends its subscription right after the handshake; give it a moment to land.
        await asyncio.sleep(0.05)
        return True

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self.socket.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    async def publish(self, msg: Message) -> None:
        """Send ``msg``; assigns the next sequence number of its topic if ``seq`` is 0."""
        if not msg.seq:
            topic = msg.topic()
            self._seq[topic] += 1
            msg.seq = self._seq[topic]
        frames = encode(msg)
        await self.send_frames(frames)
        if type(msg).old_copy:  # the transition: peers not updated yet subscribe to the old topic
            with contextlib.suppress(zmq.Again):
                self._send(
                    [old_topic(msg).encode(), *frames[1:]], flags=zmq.NOBLOCK, copy=len(frames[-1]) < _COPY_THRESHOLD
                )

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send already encoded frames unchanged (replay, benchmarks)."""
        try:
            self._send(frames, flags=zmq.NOBLOCK, copy=len(frames[-1]) < _COPY_THRESHOLD)
        except zmq.Again:
            self.dropped += 1  # at the high-water mark: PUB semantics, the newest is lost
            return
        self.sent += 1

    def close(self) -> None:
        """Close the socket; a later publish raises ``ZMQError(ENOTSOCK)`` as on any closed socket."""
        self._send = _closed_send  # the shadow would hand libzmq the freed socket
        self._stop_monitor()
        self.socket.close(0)


def _closed_send(*_: object, **__: object) -> None:
    raise zmq.ZMQError(zmq.ENOTSOCK)


def with_old_prefixes(prefixes: Iterable[str]) -> list[str]:
    """``prefixes`` and, during the transition, each one's old-topic twin (``status/`` for ``node_status/``), so
    messages from peers not updated yet arrive; not for messages whose old copy every new publisher also sends."""
    out = list(prefixes)
    copied = {p.decode().rstrip("/") for p in OLD_COPY_PREFIXES}
    for p in prefixes:
        for new, old in OLD_KINDS.items():
            if old not in copied and (p == new or p.startswith(f"{new}/")):
                out.append(old + p[len(new) :])
    return list(dict.fromkeys(out))


def _old_copy(frames: list[bytes]) -> bool:
    """The copy of a message on its old topic, published for peers not updated yet (the new one comes too)."""
    return bool(frames) and bytes(frames[0]).startswith(OLD_COPY_PREFIXES)


class Subscriber:
    """Receives decoded messages for a set of topic prefixes; malformed input is reported, not fatal."""

    def __init__(
        self,
        endpoints: Endpoints,
        prefixes: Iterable[str],
        *,
        curve: CurveKeys | None = None,
        on_error: Callable[[bytes, CodecError], None] | None = None,
        hwm: int = 10000,
        ctx: zmq.asyncio.Context | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.socket = (ctx or context()).socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD + MAX_HEADER)  # no frame the codec would take is larger
        if curve is not None:
            curve.apply_client(self.socket)
        self.prefixes = list(prefixes)
        for p in with_old_prefixes(self.prefixes):
            self.socket.setsockopt(zmq.SUBSCRIBE, p.encode())
        self.socket.connect(endpoint or endpoints.subscribe)
        self._recv = zmq.Socket.shadow(self.socket.underlying).recv_multipart
        self.on_error = on_error
        self.errors = 0
        """Malformed messages received and skipped."""
        self.received = 0
        """Messages received and decoded."""
        self.last_size = 0
        """Bytes (all frames) of the last message received."""

    async def recv_frames(self) -> list[bytes]:
        """The next raw multipart message (not the copies made for peers not updated yet: ``old_copy``).

        Drains what is already queued with non-blocking reads and awaits only when the socket
        is empty: one future per burst instead of one per message.
        """
        while True:
            try:
                frames = self._recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                frames = await self.socket.recv_multipart()
            if not _old_copy(frames):
                return frames

    def _decode(self, frames: list[bytes]) -> Message | None:
        self.last_size = sum(len(f) for f in frames)
        try:
            msg = decode(frames)
        except CodecError as exc:
            self.errors += 1
            topic = frames[0] if frames else b""
            if self.on_error is not None:
                self.on_error(topic, exc)
            else:
                log.warning("dropped malformed message on %r: %s", topic[:64], exc)
            return None
        self.received += 1
        return msg

    async def recv(self) -> Message:
        """The next well-formed message; malformed ones are counted, reported and skipped."""
        while True:
            msg = self._decode(await self.recv_frames())
            if msg is not None:
                return msg

    def recv_nowait(self) -> Message | None:
        """The next well-formed message already queued, or None; never waits (batching)."""
        while True:
            try:
                frames = self._recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return None
            if _old_copy(frames):
                continue
            msg = self._decode(frames)
            if msg is not None:
                return msg

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            yield await self.recv()

    async def recv_timeout(self, timeout: float) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self.recv()
        except TimeoutError:
            return None

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(0)
