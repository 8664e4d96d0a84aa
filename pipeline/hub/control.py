"""The hub's control plane: one handler per request class, in a table, over the node table.

Nodes register a name (bound to the connection that registered it) and heartbeat; clients ask for events
from the log, the presence snapshot and the placement table, and drain or undrain workers. A request of a
class the table does not hold is refused with a ``ControlError`` naming it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import MAX_HEADER
from sensorium.pipeline.hub.events import EventDesk
from sensorium.pipeline.hub.placement import PlacementOwner
from sensorium.pipeline.hub.security import KeyDirectory, may_speak_as
from sensorium.pipeline.messages import (
    ControlError,
    EventsReply,
    EventsRequest,
    Heartbeat,
    HeartbeatAck,
    NodeStatus,
    PlacementRequest,
    Register,
    SnapshotRequest,
)

log = logging.getLogger("sensorium.hub")

MAX_REPLY_EVENTS = 2000
MAX_REPLY_BYTES = MAX_HEADER - 4096
"""Event JSON per events reply: the reply's header must stay under the codec's limit."""
MAX_PREFIXES = 64
"""Most topic prefixes one events request may ask for."""
MAX_PREFIX_BYTES = 128
"""Longest topic prefix an events request may ask for."""
MAX_NODES = 256
"""Most nodes the hub tracks; a new name beyond it replaces the node down the longest, or is refused."""
MAX_NAMES_PER_KEY = 16
"""With CURVE: most node names one key holds (a client key may run several ``<key>-<pid>`` processes)."""
MAX_NAMES_PER_ADDRESS = 64
"""Most node names held from one remote IP address (loopback and ipc are not counted: one box)."""
FORGET_AFTER = 120.0
"""A node down this long is dropped from the table (its ``down`` status was published long ago)."""
ROLES = ("edge", "worker", "client")


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


def register_problem(msg: Register) -> str | None:
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


@dataclass(frozen=True)
class Request:
    """Who sent a control message: its connection, with CURVE its key's name, its remote address."""

    ident: bytes
    user: str = ""
    address: str = ""
    now: float = 0.0
    """When it was read (monotonic)."""


Reply = Callable[[bytes, object], Awaitable[None]]


class Control:
    """The node table and the answers to control requests (``handle`` looks the handler up in ``HANDLERS``)."""

    def __init__(
        self,
        *,
        clock: Clock,
        desk: EventDesk,
        placement: PlacementOwner,
        reply: Reply,
        refuse: Callable[..., Awaitable[None]],
        down_after: float,
        reserved: frozenset[str],
        curve: bool,
    ) -> None:
        self.clock = clock
        self.desk = desk
        self.placement = placement
        self.reply = reply
        self.refuse = refuse
        self.down_after = down_after
        self.reserved = reserved
        self.curve = curve
        """Connections come with a key's name (CURVE): a key registers only as its own node."""
        self.directory: KeyDirectory | None = None
        self.nodes: dict[str, NodeInfo] = {}

    async def handle(self, msg: object, req: Request) -> None:
        handler = HANDLERS.get(type(msg))
        if handler is None:
            await self.refuse(
                req.ident, f"unexpected {type(msg).__name__} on the control socket", getattr(msg, "request_id", 0)
            )
            return
        await handler(self, msg, req)

    async def status(self, node: NodeInfo, state: str, detail: str) -> None:
        node.state = state
        log.info("node %s (%s) is %s%s", node.name, node.role, state, f": {detail}" if detail else "")
        await self.desk.publish_own(
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

    # ------------------------------------------------------------------ one handler per request class

    async def heartbeat(self, msg: Heartbeat, req: Request) -> None:
        node = self.nodes.get(msg.node)
        if node is None or node.ident != req.ident:  # only the connection that registered the name
            await self.reply(req.ident, ControlError(time=self.clock.now(), reason="unregistered"))
            return
        if msg.leaving:
            await self.status(node, "down", "left")
            node.ident = b""
            return
        await self.reply(req.ident, HeartbeatAck(sent=msg.sent, hub_time=self.clock.now()))
        node.last_seen = req.now
        node.offset_ms = msg.offset_ms
        if node.state == "down":
            await self.status(node, "up", "heartbeats resumed")
        await self.placement.heartbeat(msg.node, frozenset(msg.exhausted[:64]), bool(msg.serving))
        detail = msg.detail[:500]
        if detail != node.detail:
            node.detail = detail
            if detail.startswith(("degraded", "error")):
                await self.status(node, "degraded" if detail.startswith("degraded") else "error", detail)

    async def register(self, msg: Register, req: Request) -> None:
        why = register_problem(msg) or self._name_problem(msg, req) or self._quota_problem(msg, req)
        if why is None and msg.node not in self.nodes and len(self.nodes) >= MAX_NODES:
            why = self._make_room(msg.node)
        if why is not None:
            await self.refuse(req.ident, f"register refused: {why}", kind="register")
            return
        for other in [n for n in self.nodes.values() if n.ident == req.ident and n.name != msg.node]:
            del self.nodes[other.name]  # one name per connection: a connection that renames frees the old
        old = self.nodes.get(msg.node)
        self.nodes[msg.node] = NodeInfo(
            msg.node,
            msg.role,
            msg.room,
            list(msg.stages),
            req.now,
            ident=req.ident,
            instance=msg.instance,
            key=req.user,
            address=req.address,
        )
        if old is None or old.state != "up":
            await self.status(self.nodes[msg.node], "up", "registered" if old is None else "re-registered")
        await self.placement.registered(msg.node)

    async def placement_request(self, msg: PlacementRequest, req: Request) -> None:
        if msg.action != "get":
            if msg.worker not in self.placement.workers:
                known = ", ".join(sorted(self.placement.workers)) or "none: no stage runs on more than one worker"
                await self.refuse(
                    req.ident,
                    f"{msg.action}: {msg.worker[:64]!r} runs no replicated stage (known: {known})",
                    msg.request_id,
                )
                return
            await self.placement.drain(msg.worker, msg.action == "drain")
        await self.reply(req.ident, self.placement.table(msg.request_id))

    async def events(self, msg: EventsRequest, req: Request) -> None:
        if len(msg.prefixes) > MAX_PREFIXES:
            await self.refuse(
                req.ident, f"events request with {len(msg.prefixes)} prefixes, limit {MAX_PREFIXES}", msg.request_id
            )
            return
        long = next((p for p in msg.prefixes if len(p.encode()) > MAX_PREFIX_BYTES), None)
        if long is not None:
            await self.refuse(
                req.ident,
                f"events request prefix of {len(long.encode())} bytes ({long[:32]!r}…), limit {MAX_PREFIX_BYTES}",
                msg.request_id,
            )
            return
        log_ = self.desk.log
        entries = log_.since(msg.since, msg.prefixes, max_bytes=MAX_REPLY_BYTES, max_events=MAX_REPLY_EVENTS)
        await self.reply(req.ident, self._events_reply([e.json for e in entries], msg.request_id))

    async def snapshot(self, msg: SnapshotRequest, req: Request) -> None:
        events, size = [], 0
        for js in reversed(self.desk.presence.values()):  # the newest, as many as one reply carries
            size += len(js) + 8
            if size > MAX_REPLY_BYTES:
                break
            events.append(js)
        await self.reply(req.ident, self._events_reply(events[::-1], msg.request_id))

    def _events_reply(self, events: list[bytes], request_id: int) -> EventsReply:
        log_ = self.desk.log
        return EventsReply(
            time=self.clock.now(),
            events=events,
            first_seq=log_.first_seq,
            last_seq=log_.last_seq,
            request_id=request_id,
            epoch=log_.epoch,
        )

    # ------------------------------------------------------------------ the node table

    def _name_problem(self, msg: Register, req: Request) -> str | None:
        """Why this connection may not have this name now, or None."""
        if self.curve and req.user != "hub":
            enrolled = self.directory is not None and self.directory.enrolled(msg.node)
            if not may_speak_as(req.user, msg.node, msg.role, enrolled):
                return f"the key {req.user!r} may not speak as {msg.node!r} (a key registers only as its own node)"
        old = self.nodes.get(msg.node)
        if old is None or old.ident in (req.ident, b"") or old.state == "down":
            return None
        if msg.instance and msg.instance == old.instance:
            return None  # the same link, back on a new connection
        return (
            f"the name {msg.node!r} is in use by a running {old.role} (last heartbeat "
            f"{req.now - old.last_seen:.1f} s ago); stop that process or choose another name (it is free once "
            f"that node leaves, or after {self.down_after:g} s without its heartbeats)"
        )

    def _quota_problem(self, msg: Register, req: Request) -> str | None:
        """A flood from one key or one remote address: more names than it may hold, or None."""
        if msg.node in self.nodes and self.nodes[msg.node].ident == req.ident:
            return None
        held = [n for n in self.nodes.values() if n.ident != req.ident and n.state != "down"]
        user, address = req.user, req.address
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

    async def watch_health(self, heartbeat: float) -> None:
        """Mark nodes down whose heartbeats stopped; forget nodes down for long."""
        while True:
            await asyncio.sleep(heartbeat / 2)
            now = time.monotonic()
            for node in [n for n in self.nodes.values() if n.state == "down" and now - n.last_seen > FORGET_AFTER]:
                del self.nodes[node.name]
            for node in list(self.nodes.values()):
                if node.state != "down" and now - node.last_seen > self.down_after:
                    await self.status(node, "down", f"no heartbeat for {now - node.last_seen:.1f}s")

    # ------------------------------------------------------------------ placement


Handler = Callable[[Control, Any, Request], Awaitable[None]]
HANDLERS: dict[type, Handler] = {
    Heartbeat: Control.heartbeat,
    Register: Control.register,
    PlacementRequest: Control.placement_request,
    EventsRequest: Control.events,
    SnapshotRequest: Control.snapshot,
}
"""The control socket's requests and their handlers; anything else is refused."""
