"""Who may publish what on the bus, and the hub's forwarder that holds every message to it.

The hub's bus is an XSUB → XPUB forwarder. libzmq's own proxy moves messages in C but drops the ZAP
metadata on the way, so nothing downstream can tell who sent a message. ``BusForwarder`` moves them in
Python instead (frames are not copied) and checks each message's topic (``kind/room/source``) against
its sender before it goes on:

- with CURVE the sender is known: the ZAP handler names each connection by its key (the ``User-Id``
  property of every frame it delivers). A key publishes only as its own node (``source`` is its name,
  or ``<name>-<anything>`` not itself an enrolled key's: a client's processes, the Wyoming gateway's
  streams); a worker's stage may also publish on the topic of a stream it read (``detections/<room>/
  <camera>``); node status about the hub, placement and the hub's own control traffic only from the
  hub's key. Then the deployment's ``PublishPolicy`` applies to that node.
- without CURVE (loopback development setups) the sender is not known: the forwarder checks what the
  topic claims (the policy against the claimed ``source``): no stream from a node that is not an edge of
  that room, no event of a kind its claimed sender may not publish. A local process that names a real
  node as its source passes; the hub's tap still refuses node status and placement it did not send.

Streams other than audio and video (utterances, synthesized speech, stage stats) and commands (say,
stop, listen) are not checked by the policy; with CURVE their ``source`` is still bound to the key
when they name one. Refused messages are counted and handed to the hub, which reports them as
rate-limited ``error`` events.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from sensorium.pipeline.messages import EVENT_KINDS, Event, InputError

STREAM_KINDS = frozenset({"audio", "video"})
"""Streams only an edge (or the Wyoming gateway, for Home Assistant's audio) publishes, in its own room."""
HUB_KINDS = frozenset({"placement", "placement_table", "assign", "ctl"})
"""Topics only the hub publishes (placement events and tables, its own bus probe)."""
PER_STREAM_KINDS = frozenset({"detections"})
"""Events a stage publishes on the topic of the stream it read (``detections/<room>/<camera>``, so that a
latest-wins consumer keeps each camera's), not under its worker's name."""
_EVENT_KINDS = frozenset(EVENT_KINDS)
MAX_VERDICTS = 8192
"""Verdicts the forwarder keeps per (sender, topic); a deployment has a few dozen topics, a fuzzer more."""
MAX_PENDING = 10000
"""Refusals held for the hub's report (beyond it only counted)."""


@dataclass(frozen=True)
class PublishPolicy:
    """Who may publish which events and streams, from the deployment (``sensorium.deployment.publish_policy``).

    An edge publishes only its own node's status and its room's playback and input errors, and audio and
    video of its own room; a worker only the events of the stages placed on it (and its status, budget and
    input errors); nobody but the hub node status about another node or placement. Events in a room the
    deployment does not have are refused too."""

    rooms: frozenset[str]
    kinds: dict[str, frozenset[str]]
    """Node name → the event kinds (topic kinds) it may publish."""
    edge_room: dict[str, str]
    """Edge node → its room (its events are for that room only)."""
    sources: dict[str, frozenset[str]] = field(default_factory=dict)
    """Room → its audio and video sources (its edges, their cameras, the Wyoming gateway's streams); default:
    its edges."""
    owners: dict[str, str] = field(default_factory=dict)
    """Stream source → the node that publishes it, where they differ (a camera → its edge, a Wyoming gateway
    stream → the gateway)."""
    _per_stream: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        if not self.sources:
            by_room: dict[str, set[str]] = {}
            for node, room in self.edge_room.items():
                by_room.setdefault(room, set()).add(node)
            object.__setattr__(self, "sources", {r: frozenset(n) for r, n in by_room.items()})
        # kinds a worker may publish on a stream's own topic (detections/<room>/<camera>)
        per_stream = {k for n, ks in self.kinds.items() if n not in self.edge_room for k in ks & PER_STREAM_KINDS}
        object.__setattr__(self, "_per_stream", frozenset(per_stream))

    def problem(self, msg: Event) -> str | None:
        """Why ``msg`` may not be logged, or None (by its claimed ``source``)."""
        return self.event_problem(msg.source, msg.kind, msg.room, any_room=isinstance(msg, InputError))

    def event_problem(
        self, node: str, kind: str, room: str, *, any_room: bool = False, claimed: bool = True
    ) -> str | None:
        """Why node ``node`` may not publish a ``kind`` event in ``room``, or None. ``claimed``: ``node`` is only
        the event's claimed source (so it may be the stream a worker's stage read, ``PER_STREAM_KINDS``)."""
        allowed = self.kinds.get(node)
        if allowed is None or kind not in allowed:
            if claimed and kind in self._per_stream and node in self.sources.get(room, ()):
                return None  # a stage's event on the topic of the stream it read
            if allowed is None:
                return f"{node[:64]!r} is no node of the deployment"
            return f"{node[:64]!r} may not publish {kind[:32]} events (it may: {', '.join(sorted(allowed))})"
        if any_room:
            return None  # input it refused may name any room (a fuzzed one, too)
        if room and room not in self.rooms:
            return f"room {room[:64]!r} is not in the deployment"
        edge_room = self.edge_room.get(node)
        if edge_room is not None and room not in ("", edge_room):
            return f"edge {node[:64]!r} is in {edge_room!r}, not {room[:64]!r}"
        return None

    def stream_problem(self, node: str, kind: str, room: str) -> str | None:
        """Why ``node`` may not publish a ``kind`` (audio, video) stream in ``room``, or None."""
        if node in self.sources.get(room, ()):
            return None
        where = self.edge_room.get(node)
        if where is not None:
            return f"edge {node[:64]!r} is in {where!r}, not {room[:64]!r}"
        return f"{node[:64]!r} is no {kind} source of room {room[:64]!r}"


class BusGuard:
    """The verdict on one message from its sender's key name (None without CURVE) and its topic."""

    def __init__(self, policy: PublishPolicy | None, enrolled: Callable[[str], bool] | None = None) -> None:
        self.policy = policy
        self.enrolled = enrolled or (lambda name: False)

    def check(self, sender: str | None, topic: bytes) -> str | None:
        """Why this message may not go on, or None."""
        if sender == "hub":
            return None
        try:
            kind, room, source = topic.decode().split("/", 2)
        except (UnicodeDecodeError, ValueError):
            return None  # not a topic of ours: every receiver's codec refuses such a message
        if kind in HUB_KINDS:
            # without CURVE the tap checks placement against the hub's own numbers; only the hub reads the rest
            return None if sender is None else f"key {sender[:64]!r} may not publish {kind} (only the hub)"
        is_event, is_stream = kind in _EVENT_KINDS, kind in STREAM_KINDS
        room = "" if room == "-" else room
        source = "" if source == "-" else source
        if sender is None and source == "hub":
            return None  # the hub's tap knows its own events by topic and number (and refuses the rest)
        node = source
        policy = self.policy
        if sender is not None and source != sender:
            owner = policy.owners.get(source) if policy is not None else None
            if owner is not None:
                own = owner == sender
            else:
                own = bool(source) and source.startswith(f"{sender}-") and not self.enrolled(source)
            if own:
                pass
            elif (
                kind in PER_STREAM_KINDS
                and policy is not None
                and sender not in policy.edge_room
                and kind in policy.kinds.get(sender, ())
                and source in policy.sources.get(room, ())
            ):
                return None  # a worker's stage on the topic of a stream it read (detections/<room>/<camera>)
            elif is_event or is_stream or source:
                return f"key {sender[:64]!r} may not publish as {source[:64] or 'nobody'!r}"
        if policy is None or not (is_event or is_stream):
            return None
        if is_stream:
            return policy.stream_problem(node, kind, room)
        return policy.event_problem(node, kind, room, any_room=kind == InputError.kind, claimed=sender is None)


class BusForwarder:
    """XSUB → XPUB on its own thread, each message checked by ``BusGuard`` (subscriptions go back unchecked).

    Refusals are counted (``dropped``) and held (topic, sender, reason) for the hub to report."""

    def __init__(self, xsub: zmq.Socket, xpub: zmq.Socket, guard: BusGuard, curve: bool) -> None:
        self.xsub, self.xpub, self.guard, self.curve = xsub, xpub, guard, curve
        self.forwarded = 0
        self.dropped = 0
        self.pending: deque[tuple[bytes, str]] = deque(maxlen=MAX_PENDING)
        """Refused messages not yet reported: (topic, why)."""
        self._lock = threading.Lock()
        self._verdicts: dict[tuple[str | None, bytes], str | None] = {}
        ctx = zmq.Context.instance()
        addr = f"inproc://hub-forwarder-{uuid.uuid4().hex}"
        self._stop_peer = ctx.socket(zmq.PAIR)
        self._stop_peer.bind(addr)
        self._stop = ctx.socket(zmq.PAIR)
        self._stop.connect(addr)
        self.thread = threading.Thread(target=self._run, name="hub-forwarder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def take_refusals(self) -> list[tuple[bytes, str]]:
        with self._lock:
            out = list(self.pending)
            self.pending.clear()
        return out

    def _verdict(self, sender: str | None, topic: bytes) -> str | None:
        key = (sender, topic)
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        why = self.guard.check(sender, topic)
        if len(self._verdicts) >= MAX_VERDICTS:
            self._verdicts.clear()
        self._verdicts[key] = why
        return why

    def _run(self) -> None:
        xsub, xpub, stop = self.xsub, self.xpub, self._stop_peer
        poller = zmq.Poller()
        for s in (xsub, xpub, stop):
            poller.register(s, zmq.POLLIN)
        curve = self.curve
        again = zmq.Again
        try:
            while True:
                ready = dict(poller.poll())
                if stop in ready:
                    return
                if xpub in ready:  # subscriptions, to the publishers
                    for _ in range(1000):
                        try:
                            xsub.send_multipart(xpub.recv_multipart(zmq.NOBLOCK))
                        except again:
                            break
                if xsub in ready:
                    for _ in range(1000):
                        try:
                            frames = xsub.recv_multipart(zmq.NOBLOCK, copy=False)
                        except again:
                            break
                        first = frames[0]
                        sender = None
                        if curve:
                            try:
                                sender = first.get("User-Id") or ""
                            except zmq.ZMQError:
                                sender = ""
                        topic = first.bytes
                        why = self._verdict(sender, topic)
                        if why is None:
                            xpub.send_multipart(frames, copy=False)
                            self.forwarded += 1
                        else:
                            self.dropped += 1
                            with self._lock:
                                self.pending.append((topic[:128], why))
        except zmq.ContextTerminated:
            pass
        finally:
            for s in (xsub, xpub, stop):
                s.close(0)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (it closes both bus sockets: every connection to them ends)."""
        with contextlib.suppress(zmq.ZMQError):
            self._stop.send(b"STOP")
        self.thread.join(timeout)
        self._stop.close(0)
