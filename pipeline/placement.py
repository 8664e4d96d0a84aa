"""Placement with replicas: which worker serves each stream of a stage placed on several workers.

A stage serves streams of one kind (its ``serves``): a room's microphone audio ("room": wake, stt,
speaker), a camera ("camera": detect, face), or the house as a whole ("house": arbiter, presence,
tts, one stream "*"). The hub hands every stream of a replicated stage to exactly one live worker
(``assign``, pure and unit-tested) and publishes the table; each worker feeds a stage only the
streams handed to it (``StreamGate``).

Rules of ``assign``, in order:

* **Sticky.** A stream stays where it is while its worker is live, usable and of the best rank
  available: a streaming decode or a tracker keeps its state.
* **Preferred.** Rank 0 are the workers that list the stage in ``stages``, rank 1 its standbys. A
  stream whose worker died (missed heartbeats) goes at once to the least loaded usable worker of
  the best rank (and stays where it was if there is none: no churn while everything is down). A
  drained worker, or one whose stage sits on the last step of its degrade ladder, gives its streams
  up at their next boundary (no utterance in flight).
* **Hand-back with hysteresis.** A better-ranked worker gets streams back only after it has been
  up ``handback_after`` without a break, and only at a boundary, so a flapping node never bounces
  them.
* **Balanced among equals.** Streams of one rank spread evenly (8 cameras over two detect workers:
  4/4); a settled worker that holds two or more fewer than another takes idle streams from it.

A standby keeps a short ring of the inputs of streams it may take over (``Stage.takeover_s``);
when it gets a stream it first replays what came after the last result the old worker published
for it, so an utterance in flight when the old worker died is decoded once, by the standby.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from sensorium.pipeline.messages import Assignment, Message, PlacementTable

Serves = Literal["room", "camera", "house"]
HOUSE = "*"
"""The one stream of a house-wide stage."""
ROOM_KINDS = frozenset({"audio", "wake", "listen", "utterance"})
"""Message kinds that belong to one room's stream; other inputs of a room stage reach every replica."""
CAMERA_KINDS = frozenset({"video", "detections"})
"""Message kinds that belong to one camera's stream."""


@dataclass(frozen=True)
class StageSpec:
    """What placement needs to know of one replicated stage."""

    serves: Serves
    """Kind of stream the stage serves."""
    streams: tuple[str, ...]
    """Its streams: rooms, cameras, or ("*",)."""
    replicas: tuple[tuple[str, int], ...]
    """(worker, rank) for every worker that runs it: rank 0 preferred, 1 standby."""


@dataclass
class WorkerState:
    """The hub's view of one worker, for placement."""

    live: bool = False
    """Heartbeats arrive (within ``takeover_after``) and say its stages are loaded."""
    up_since: float = 0.0
    """Monotonic time it became live this time (hysteresis)."""
    drained: bool = False
    """Drained by the user."""
    exhausted: frozenset[str] = frozenset()
    """Stages on the last step of their degrade ladder there."""


@dataclass(frozen=True)
class Move:
    """One change of the table."""

    stage: str
    stream: str
    old: str
    """Worker that served it ("" if none)."""
    new: str
    """Worker that serves it now ("" if none can)."""
    reason: str


def streams_for(serves: Serves, rooms: Iterable[str], cameras: Iterable[str]) -> tuple[str, ...]:
    """The streams of a stage that serves ``serves`` in a house with these rooms and cameras."""
    if serves == "room":
        return tuple(rooms)
    if serves == "camera":
        return tuple(cameras)
    return (HOUSE,)


def specs(
    replicas: Mapping[str, list[tuple[str, int]]],
    serves: Mapping[str, Serves],
    rooms: Iterable[str],
    cameras: Iterable[str],
) -> dict[str, StageSpec]:
    """Specs of the stages run by more than one worker (one worker needs no table: it serves everything)."""
    rooms, cameras = tuple(rooms), tuple(cameras)
    out = {}
    for stage, reps in replicas.items():
        if len(reps) > 1:
            kind = serves.get(stage, "house")
            out[stage] = StageSpec(kind, streams_for(kind, rooms, cameras), tuple(reps))
    return out


def assign(
    spec: Mapping[str, StageSpec],
    workers: Mapping[str, WorkerState],
    current: Mapping[tuple[str, str], str],
    now: float,
    handback_after: float,
    busy: Callable[[str, str], bool] = lambda stage, stream: False,
) -> tuple[dict[tuple[str, str], str], list[Move]]:
    """The new table (``(stage, stream) → worker``, "" for none) and the moves from ``current`` to it."""
    table: dict[tuple[str, str], str] = {}
    moves: list[Move] = []
    for stage, sp in spec.items():
        rank = dict(sp.replicas)
        order = {w: i for i, (w, _) in enumerate(sp.replicas)}

        def state(w: str) -> WorkerState:
            return workers.get(w, WorkerState())

        live = [w for w, _ in sp.replicas if state(w).live]
        usable = [w for w in live if not state(w).drained and stage not in state(w).exhausted]
        if not usable:  # everyone on its last step: degraded service beats none
            usable = [w for w in live if not state(w).drained]
        best = min((rank[w] for w in usable), default=None)
        top = [w for w in usable if rank[w] == best]
        settled = [w for w in top if now - state(w).up_since >= handback_after]
        load = {w: 0 for w in live}
        pending: list[tuple[str, str, str]] = []  # (stream, old owner, reason)

        for stream in sp.streams:
            cur = current.get((stage, stream), "")
            if cur in usable:
                better = rank[cur] > best and settled  # type: ignore[operator]
                if better and not busy(stage, stream):
                    pending.append((stream, cur, "handback"))
                else:
                    table[(stage, stream)] = cur
                    load[cur] += 1
            elif cur in live and busy(stage, stream) and usable:
                table[(stage, stream)] = cur  # drained or degraded: it finishes the utterance first
                load[cur] += 1
            elif not cur:
                pending.append((stream, "", "start"))
            elif cur not in live:
                pending.append((stream, cur, "down"))
            else:
                pending.append((stream, cur, "drained" if state(cur).drained else "degraded"))

        for stream, old, reason in pending:
            pool = (settled or top) if reason == "handback" else top
            if not pool and reason == "down":
                table[(stage, stream)] = old  # nobody else can: it stays put and resumes if its worker returns
                continue
            new = min(pool, key=lambda w: (load[w], order[w])) if pool else ""
            table[(stage, stream)] = new
            if new:
                load[new] += 1
            if new != old:
                moves.append(Move(stage, stream, old, new, reason if new else "none-left"))

        # Even out equals: a settled worker two or more streams short takes idle ones from the busiest.
        while settled:
            low = min(settled, key=lambda w: (load[w], order[w]))
            high = max(top, key=lambda w: (load[w], -order[w]))
            if load[high] - load[low] < 2:
                break
            idle = [s for s in sp.streams if table[(stage, s)] == high and not busy(stage, s)]
            if not idle:
                break
            stream = idle[-1]
            table[(stage, stream)] = low
            load[high] -= 1
            load[low] += 1
            moves.append(Move(stage, stream, high, low, "balance"))
    return table, moves


def to_message(
    table: Mapping[tuple[str, str], str],
    version: int,
    live: Iterable[str],
    drained: Iterable[str],
    busy: Iterable[str] = (),
    request_id: int = 0,
    epoch: str = "",
) -> PlacementTable:
    """The table as the message the hub publishes and answers with."""
    return PlacementTable(
        source="hub",
        epoch=epoch,
        version=version,
        assignments=[Assignment(stage, stream, w) for (stage, stream), w in sorted(table.items())],
        live=sorted(live),
        drained=sorted(drained),
        busy=sorted(busy),
        request_id=request_id,
    )


def stream_of(serves: Serves, msg: Message) -> str | None:
    """The stream ``msg`` belongs to for a stage serving ``serves``; None for inputs every replica gets
    (speaker events, arbitration: each replica keys them by utterance or node and ignores the rest)."""
    if serves == "house":
        return HOUSE
    if serves == "room":
        return msg.room if msg.kind in ROOM_KINDS else None
    if msg.kind == "video":
        return msg.source
    if msg.kind == "detections":
        return getattr(msg, "camera", "") or msg.source
    return None


@dataclass
class StreamGate:
    """On a worker: which inputs of one replicated stage reach it, and the takeover ring of the rest."""

    worker: str
    stage: str
    serves: Serves
    takeover_s: float = 0.0
    """Seconds of input kept per stream this worker does not serve (0: none)."""
    owned: set[str] = field(default_factory=set)
    """Streams the hub handed to this worker."""
    version: int = -1
    """Version of the table applied last."""
    epoch: str = ""
    """Epoch of the hub that sent it (a restarted hub counts versions from 1 again)."""
    _rings: dict[str, deque[tuple[float, Message]]] = field(default_factory=dict)
    _done: dict[str, float] = field(default_factory=dict)
    """Per stream, the end of the last result another worker published (nothing before it is replayed)."""

    def owns(self, stream: str) -> bool:
        """Does the hub's table hand ``stream`` to this worker now?"""
        return stream in self.owned

    def admit(self, msg: Message) -> bool:
        """True if the stage gets ``msg`` now; otherwise it may be kept for a takeover."""
        stream = stream_of(self.serves, msg)
        if stream is None or stream in self.owned:
            return True
        if self.takeover_s > 0:
            ring = self._rings.setdefault(stream, deque())
            now = time.monotonic()
            ring.append((now, msg))
            while ring and ring[0][0] < now - self.takeover_s:
                ring.popleft()
        return False

    def observe(self, msg: Message) -> None:
        """Note a result another worker published (its ``t1`` ends what is done for that stream)."""
        end = getattr(msg, "t1", 0.0)
        if msg.is_event and end and msg.source != self.worker:
            stream = stream_of(self.serves, msg) if self.serves != "room" else msg.room
            if stream is not None:
                self._done[stream] = max(self._done.get(stream, 0.0), end)

    def update(self, table: PlacementTable) -> tuple[list[Message], set[str], set[str]]:
        """Apply a newer table: the inputs to replay for streams gained (oldest first), and the streams
        gained and lost. An older or equal version of the same hub changes nothing."""
        if table.epoch == self.epoch and table.version <= self.version:
            return [], set(), set()
        self.version, self.epoch = table.version, table.epoch
        owned = {a.stream for a in table.assignments if a.stage == self.stage and a.worker == self.worker}
        gained, lost = owned - self.owned, self.owned - owned
        self.owned = owned
        replay: list[Message] = []
        for stream in sorted(gained):
            done = self._done.get(stream, 0.0)
            for _, msg in self._rings.pop(stream, ()):
                if _end(msg) > done:
                    replay.append(msg)
        for stream in lost:
            self._rings.pop(stream, None)
        return replay, gained, lost


def _end(msg: Message) -> float:
    """End of what ``msg`` covers on the hub clock (audio: the end of the chunk)."""
    rate = getattr(msg, "rate", 0)
    data = getattr(msg, "data", b"")
    if msg.kind == "audio" and rate > 0:
        return msg.time + len(data) / (2 * max(getattr(msg, "channels", 1), 1) * rate)
    return msg.time
