"""The console's hub client: events into the store and the live state, samples of unknowns, user actions.

The console loads no model. Embedding a face or a voice and writing the gallery are the job of an
``Identity`` the caller hands in (``sensorium console`` builds one from ``sensorium.enrollment``
with the deployment's own speaker and face models, so a named cluster is enrolled exactly as
``sensorium enroll`` would). Besides the hub's events it listens on the bus to the camera frames
(the latest per camera, for the room view and for face crops), the utterances (voice clips of
unknown speakers) and the stages' stats (the health page).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import numpy as np

from sensorium.bridges.console.store import UNKNOWN, Store
from sensorium.pipeline.bus import Subscriber
from sensorium.pipeline.client import Client
from sensorium.pipeline.codec import to_json
from sensorium.pipeline.messages import (
    Detections,
    Event,
    EventsLost,
    FaceRecognized,
    NodeStatus,
    Presence,
    SpeakerIdentified,
    StageStats,
    Transcript,
    Utterance,
    VideoFrame,
)

log = logging.getLogger("sensorium.console")
#: Clusters this far below the recognition threshold are offered (ticked) to be named together.
SUGGEST_MARGIN = 0.1


@dataclass
class Embedding:
    """One embedded face or voice."""

    vector: np.ndarray
    model_id: str
    media: bytes | None = None
    """A JPEG crop of the face (faces; the console makes voice clips itself)."""


class Identity(Protocol):
    """The models and the gallery, as the console uses them (built in the wiring layer)."""

    face_threshold: float
    voice_threshold: float

    def embed_face(self, jpeg: bytes, box: tuple[float, float, float, float]) -> Embedding | None:
        """The face inside a person box of a frame, or None when no face is found there."""
        ...

    def embed_voice(self, pcm: np.ndarray, rate: int) -> Embedding:
        """A voice embedding of 16-bit mono samples."""
        ...

    def enroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        """Add embeddings of ``name`` to the gallery the stages read."""
        ...

    def unenroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        """Take back exactly these embeddings (undo of a naming)."""
        ...

    def remove(self, name: str) -> bool:
        """Forget a person in the gallery."""
        ...

    def people(self) -> dict[str, dict[str, int]]:
        """Enrolled people with their embedding counts per kind."""
        ...


@dataclass
class Here:
    """One person in one room."""

    since: float
    sources: list[str]
    confidence: float


@dataclass
class Room:
    people: dict[str, Here] = field(default_factory=dict)
    unknown: int = 0
    unknown_since: float = 0.0
    cameras: dict[str, float] = field(default_factory=dict)
    """Camera → time of its latest frame."""


@dataclass
class Live:
    """The house now, folded from events."""

    rooms: dict[str, Room] = field(default_factory=dict)
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    detections: dict[str, Detections] = field(default_factory=dict)
    """``room/camera`` → the latest detections."""
    names: dict[tuple[str, int], tuple[str, float]] = field(default_factory=dict)
    """``(room/camera, track)`` → (person, score) of the latest face recognition on that track."""
    stats: dict[str, StageStats] = field(default_factory=dict)
    history: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    """Stage → recent (time, p95 ms)."""
    placement: dict[str, Any] = field(default_factory=dict)
    hub_up: bool = False

    def room(self, name: str) -> Room:
        return self.rooms.setdefault(name, Room())

    def apply(self, ev: Event) -> None:
        if isinstance(ev, Presence):
            r = self.room(ev.room)
            if ev.person == UNKNOWN:
                if ev.unknown and not r.unknown:
                    r.unknown_since = ev.time
                r.unknown = ev.unknown
            elif ev.state == "left":
                r.people.pop(ev.person, None)
            else:
                prev = r.people.get(ev.person)
                r.people[ev.person] = Here(prev.since if prev else ev.time, list(ev.sources), ev.confidence)
                for other, ro in self.rooms.items():
                    if other != ev.room:
                        ro.people.pop(ev.person, None)
        elif isinstance(ev, NodeStatus):
            self.nodes[ev.node] = ev
        elif isinstance(ev, Detections):
            self.detections[f"{ev.room}/{ev.camera}"] = ev
            self.room(ev.room)
        elif isinstance(ev, FaceRecognized):
            self.names[(f"{ev.room}/{ev.camera}", ev.track)] = (ev.person, ev.score)
            if len(self.names) > 4096:
                self.names.pop(next(iter(self.names)))

    def known_alone(self, room: str, kind: str) -> str:
        """The known person an unknown ``kind`` sample in ``room`` most likely is, by the other sense, else "".

        An unknown voice: exactly one person is in the room, known by face, and the cameras see no
        unknown person. An unknown face: exactly one known person is in the room, known by voice only,
        and the cameras see at most that one unknown face.
        """
        r = self.rooms.get(room)
        if r is None or len(r.people) != 1:
            return ""
        person, here = next(iter(r.people.items()))
        if kind == "voice" and r.unknown == 0 and "face" in here.sources:
            return person
        if kind == "face" and r.unknown <= 1 and "voice" in here.sources and "face" not in here.sources:
            return person
        return ""


def event_person(ev: Event) -> str:
    if isinstance(ev, Presence | FaceRecognized | SpeakerIdentified):
        return ev.person
    if isinstance(ev, Transcript):
        return ev.speaker or ""
    return ""


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


class Console:
    """Runs the hub client and keeps the store and the live state; the web app reads both."""

    def __init__(
        self,
        client: Client,
        store: Store,
        identity: Identity | None,
        *,
        clip_s: float = 5.0,
        face_every: float = 10.0,
        retention: float = 7 * 86400.0,
        subscriber: Callable[[list[str]], Subscriber] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.identity = identity
        self.clip_s = clip_s
        self.face_every = face_every
        self.retention = retention
        self.live = Live()
        self.frames: dict[str, VideoFrame] = {}
        self.utterances: OrderedDict[str, Utterance] = OrderedDict()
        self._face_seen: dict[tuple[str, int], float] = {}
        self._subscriber = subscriber
        self._listeners: set[asyncio.Queue[tuple[str, Any]]] = set()
        self._pending: list[tuple[int, str, str, str, float, str]] = []
        self._work: asyncio.Queue[Event] = asyncio.Queue(maxsize=256)
        self.samples_dropped = 0

    # ------------------------------------------------------------------------- live listeners

    def listen(self) -> asyncio.Queue[tuple[str, Any]]:
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=512)
        self._listeners.add(q)
        return q

    def unlisten(self, q: asyncio.Queue[tuple[str, Any]]) -> None:
        self._listeners.discard(q)

    def notify(self, kind: str, data: Any = None) -> None:
        for q in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait((kind, data))

    # ------------------------------------------------------------------------------- the loops

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            for p in await self.client.snapshot():
                self.live.apply(p)
        tasks = [
            asyncio.create_task(self._events(), name="console-events"),
            asyncio.create_task(self._bus(), name="console-bus"),
            asyncio.create_task(self._samples(), name="console-samples"),
            asyncio.create_task(self._housekeeping(), name="console-housekeeping"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _events(self) -> None:
        since = self.store.last_seq
        while True:
            try:
                async for ev in self.client.events(since=since):
                    since = ev.seq
                    self.on_event(ev)
            except (ConnectionError, RuntimeError) as exc:
                log.warning("console: hub event stream: %s; retrying", exc)
                await asyncio.sleep(1.0)

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, EventsLost):
            return
        self.live.apply(ev)
        raw = to_json(ev).decode()
        self.store.add_events([(ev.seq, ev.__struct_config__.tag, ev.room, event_person(ev), ev.time, raw)])  # type: ignore[misc]
        if isinstance(ev, FaceRecognized | SpeakerIdentified) and self.identity is not None:
            try:
                self._work.put_nowait(ev)
            except asyncio.QueueFull:
                self.samples_dropped += 1
        if isinstance(ev, Presence | NodeStatus):
            self.notify("rooms")
        self.notify("event", ev)

    async def _bus(self) -> None:
        prefixes = ["video/", "utterance/", "stats/"]
        if self._subscriber is not None:
            sub = self._subscriber(prefixes)
        else:
            sub = Subscriber(self.client.endpoints, prefixes, curve=self.client.curve, hwm=200)
        last_rooms = 0.0
        try:
            while True:
                msg = await sub.recv()
                if isinstance(msg, VideoFrame):
                    self.frames[f"{msg.room}/{msg.source}"] = msg
                    self.live.room(msg.room).cameras[msg.source] = msg.time
                elif isinstance(msg, Utterance):
                    self.utterances[msg.utterance_id] = msg
                    while len(self.utterances) > 32:
                        self.utterances.popitem(last=False)
                elif isinstance(msg, StageStats):
                    key = f"{msg.stage}@{msg.source}"
                    self.live.stats[key] = msg
                    self.live.history.setdefault(key, deque(maxlen=120)).append((msg.time, msg.p95_ms))
                    self.notify("stats")
                now = time.monotonic()
                if now - last_rooms > 1.0:
                    last_rooms = now
                    self.notify("frame")
        finally:
            sub.socket.close(0)

    async def _housekeeping(self) -> None:
        placed = expired = -1e9
        while True:
            up = self.client.link.connected
            if up != self.live.hub_up:
                self.live.hub_up = up
                self.notify("hub", up)
            if up and time.monotonic() - placed > 5.0:
                placed = time.monotonic()
                with contextlib.suppress(Exception):
                    table = await self.client.placement()
                    self.live.placement = msgspec.to_builtins(table)
            if time.monotonic() - expired > 60.0:
                expired = time.monotonic()
                n = await asyncio.to_thread(self.store.expire_media, time.time() - self.retention)
                if n:
                    log.info("console: deleted %d crops and clips older than the retention", n)
            await asyncio.sleep(0.5)

    async def _samples(self) -> None:
        while True:
            ev = await self._work.get()
            try:
                await self.sample(ev)
            except Exception as exc:  # a bad frame or clip must not stop the console
                log.warning("console: could not keep a sample of event %d: %s", ev.seq, exc)

    async def sample(self, ev: Event) -> int | None:
        """Embed the unknown face or voice behind ``ev`` and cluster it; the cluster id, or None."""
        assert self.identity is not None
        if isinstance(ev, FaceRecognized):
            cam = f"{ev.room}/{ev.camera}"
            key = (cam, ev.track)
            if ev.time - self._face_seen.get(key, -1e18) < self.face_every:
                return None
            det = self.live.detections.get(cam)
            frame = self.frames.get(cam)
            box = next((b for b in det.boxes if b.track == ev.track), None) if det else None
            if frame is None or box is None:
                return None
            emb = await asyncio.to_thread(self.identity.embed_face, frame.data, (box.x1, box.y1, box.x2, box.y2))
            if emb is None:
                return None
            self._face_seen[key] = ev.time
            if len(self._face_seen) > 4096:  # tracks end; keep only the recent ones
                horizon = ev.time - max(self.face_every, 60.0)
                self._face_seen = {k: t for k, t in self._face_seen.items() if t >= horizon}
            return await self.keep(ev, "face", emb, "jpg")
        if isinstance(ev, SpeakerIdentified):
            utt = self.utterances.get(ev.utterance_id)
            if utt is None:
                return None
            pcm = utt.pcm()
            emb = await asyncio.to_thread(self.identity.embed_voice, pcm, utt.rate)
            emb.media = wav_bytes(pcm[: int(self.clip_s * utt.rate)], utt.rate)
            return await self.keep(ev, "voice", emb, "wav")
        return None

    async def keep(self, ev: Event, kind: str, emb: Embedding, suffix: str) -> int:
        """Cluster one embedded sample of an unknown; notes the one known person in the room, if any
        (the evidence for a cross-modal proposal). Returns the cluster id."""
        assert self.identity is not None
        threshold = self.identity.face_threshold if kind == "face" else self.identity.voice_threshold
        person = getattr(ev, "person", UNKNOWN)
        person = "" if person == UNKNOWN else person
        alone = "" if person else self.live.known_alone(ev.room, kind)
        _, cid = await asyncio.to_thread(
            lambda: self.store.add_sample(
                kind=kind,
                model_id=emb.model_id,
                vector=emb.vector,
                time_=ev.time,
                room=ev.room,
                seq=ev.seq,
                media=emb.media,
                suffix=suffix,
                alone=alone,
                threshold=threshold,
                group=f"{ev.room}/{ev.camera}@{ev.time:.3f}" if isinstance(ev, FaceRecognized) else "",
                person=person,
            )
        )
        if not person:
            self.notify("inbox")
        return cid

    async def reassign(self, sid: int, name: str) -> None:
        """A recognition was wrong: its embedding goes to ``name`` in the gallery (and leaves the person it was
        given to, where a naming had put it there); ``ValueError`` saying what was wrong."""
        name = name.strip()
        if not name or name.lower() == UNKNOWN or len(name) > 64:
            raise ValueError(f"{name!r} is not a name for a person (1-64 characters, not 'unknown')")
        got = self.store.sample(sid)
        if got is None or not got[2]:
            raise ValueError(f"sample {sid} is not a kept recognition")
        kind, model_id, wrong, vec = got
        if wrong == name:
            raise ValueError(f"sample {sid} is already {name}'s")
        assert self.identity is not None
        await asyncio.to_thread(self.identity.unenroll, wrong, kind, model_id, [vec])
        await asyncio.to_thread(self.identity.enroll, name, kind, model_id, [vec])
        self.store.set_sample_person(sid, name)
        self.store.log_action(
            "reassign", {"sample": sid, "from": wrong, "to": name, "kind": kind, "model_id": model_id}
        )

    # ---------------------------------------------------------------------------- user actions

    def similar(self, cid: int) -> list[tuple[int, float]]:
        """Open clusters that are probably the same person as ``cid``: within ``SUGGEST_MARGIN`` below the
        recognition threshold, never sharing a frame. The page offers them ticked when naming ``cid``."""
        c = self.store.cluster(cid)
        if c is None or self.identity is None:
            return []
        threshold = self.identity.face_threshold if c.kind == "face" else self.identity.voice_threshold
        return self.store.similar(cid, threshold - SUGGEST_MARGIN)

    async def name(self, cid: int, name: str, consent: str, also: list[int] | None = None) -> None:
        """Enrol a cluster as ``name`` (consent recorded), with the clusters ``also`` merged into it first;
        ``ValueError`` saying what was wrong."""
        name = name.strip()
        if not name or name.lower() == UNKNOWN or len(name) > 64:
            raise ValueError(f"{name!r} is not a name for a person (1-64 characters, not 'unknown')")
        if not consent.strip():
            raise ValueError("record the person's consent before enrolling them")
        c = self.store.cluster(cid)
        if c is None or c.status != "open":
            raise ValueError(f"cluster {cid} is not in the inbox")
        merged: list[tuple[int, list[int]]] = []
        for other in also or []:
            o = self.store.cluster(other)
            if o is None or o.status != "open" or o.kind != c.kind or o.model_id != c.model_id or other == cid:
                raise ValueError(f"cluster {other} is not another {c.kind} cluster in the inbox")
        for other in also or []:
            merged.append((other, self.store.merge(other, cid)))
        assert self.identity is not None
        vectors = self.store.vectors(cid)
        await asyncio.to_thread(self.identity.enroll, name, c.kind, c.model_id, vectors)
        self.store.set_status(cid, "named", name)
        self.store.record_consent(name, consent.strip())
        self.store.log_action(
            "name", {"cluster": cid, "name": name, "kind": c.kind, "model_id": c.model_id, "merged": merged}
        )
        self.notify("inbox")

    def ignore(self, cid: int) -> None:
        c = self.store.cluster(cid)
        if c is None or c.status != "open":
            raise ValueError(f"cluster {cid} is not in the inbox")
        self.store.set_status(cid, "ignored")
        self.store.log_action("ignore", {"cluster": cid})
        self.notify("inbox")

    def merge(self, src: int, dst: int) -> None:
        a, b = self.store.cluster(src), self.store.cluster(dst)
        if a is None or b is None or a.status != "open" or b.status != "open" or src == dst:
            raise ValueError(f"clusters {src} and {dst} are not two clusters in the inbox")
        if a.kind != b.kind or a.model_id != b.model_id:
            raise ValueError(f"cluster {src} holds {a.kind}s and cluster {dst} {b.kind}s: only like merges with like")
        moved = self.store.merge(src, dst)
        self.store.log_action("merge", {"src": src, "dst": dst, "moved": moved})
        self.notify("inbox")

    async def undo(self) -> str:
        """Undo the last action; says what was undone ("" when nothing was left to undo)."""
        last = self.store.last_action()
        if last is None:
            return ""
        aid, action, p = last
        if action == "name":
            assert self.identity is not None
            vectors = self.store.vectors(p["cluster"])
            await asyncio.to_thread(self.identity.unenroll, p["name"], p["kind"], p["model_id"], vectors)
            self.store.set_status(p["cluster"], "open")
            for other, moved in p.get("merged", []):
                self.store.unmerge(other, moved)
            said = f"naming of cluster {p['cluster']} as {p['name']}"
        elif action == "reassign":
            assert self.identity is not None
            got = self.store.sample(p["sample"])
            if got is not None:
                await asyncio.to_thread(self.identity.unenroll, p["to"], p["kind"], p["model_id"], [got[3]])
                self.store.set_sample_person(p["sample"], p["from"])
            said = f"re-assigning a recognition of {p['from']} to {p['to']}"
        elif action == "ignore":
            self.store.set_status(p["cluster"], "open")
            said = f"ignoring cluster {p['cluster']}"
        elif action == "merge":
            self.store.unmerge(p["src"], p["moved"])
            said = f"merging cluster {p['src']} into {p['dst']}"
        else:
            said = action
        self.store.mark_undone(aid)
        self.notify("inbox")
        return said

    async def remove_person(self, name: str) -> int:
        """Forget ``name`` in the gallery and everything the console keeps about them."""
        assert self.identity is not None
        in_gallery = await asyncio.to_thread(self.identity.remove, name)
        n = await asyncio.to_thread(self.store.forget_person, name)
        for r in self.live.rooms.values():
            r.people.pop(name, None)
        self.notify("rooms")
        self.notify("inbox")
        return n + int(in_gallery)
