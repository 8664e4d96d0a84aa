"""Replay a session onto the bus as its edge nodes published it, and collect what the pipeline answers.

Only what edge nodes and the reasoning loop sent is published again: microphone ``AudioChunk``s,
camera ``VideoFrame``s and the ``Say``/``StopPlayback`` commands; the events in a recording are
what the pipeline answered then (``Session.recorded_events``) and are compared, not replayed.

Capture times are re-stamped to the hub clock of this run, keeping the session's own spacing
(``stamp = t0 + (t_k - t_first)``): stages rely on a stream's chunks being contiguous in time.

- ``speed`` > 0: message k is published at ``start + (t_k - t_first) / speed``. At speed 1 the
  stamps are true capture times, and the report shows the runtime's own per-stage latency,
  violations and degrade steps. Faster, stamps run ahead of the clock, so the report measures
  each stage from when its input was published to when its answer was seen.
- ``speed`` = 0 ("max"): as fast as the pipeline takes it. Stamps are anchored after the
  session's end (``future_margin``), so the runtime never sees an input as late: nothing is
  dropped or degraded on synthetic ages, and two replays see the same inputs. Against an embedded
  deployment the replay waits while a stage that consumes the topic still has inputs outstanding
  (``flow_limit``; one frame per camera for droppable video); against a remote hub it publishes as
  fast as the bus takes it, waiting only for each camera's previous frame to be answered by the
  detector (``Detections.frame_seq``).

Session time of any stamp is ``stamp - t0 + t_first``, so the report matches events to labels on
the session's own timeline whatever the speed.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time as _time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorium.evaluation.report import RunResult, StageRun
from sensorium.pipeline import codec
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.messages import (
    EVENTS,
    AudioChunk,
    Detections,
    FaceRecognized,
    McpCall,
    Message,
    Presence,
    Say,
    SpeakerIdentified,
    StopPlayback,
    Transcript,
    TtsAudio,
    VideoFrame,
    WakeDetected,
)
from sensorium.pipeline.recorder import Recorded, RecordingError, read_all

log = logging.getLogger("sensorium.replay")

#: Topic prefixes the replay listens to for answers: every event family plus TTS audio, except the audit
#: events of agents' calls (``mcp_call``): an agent polling the MCP server while a session replays is not the
#: pipeline answering, and would keep the replay from ever settling.
ANSWER_PREFIXES: tuple[str, ...] = tuple(
    sorted({f"{cls.kind}/" for cls in EVENTS if cls is not McpCall} | {"tts_audio/"})
)
_PUBLISHED = (AudioChunk, VideoFrame, Say, StopPlayback)


class ReplayError(ValueError):
    """The session cannot be replayed as asked (no streams, unknown room …)."""


@dataclass
class Session:
    """A recording or built session loaded for replay."""

    paths: list[Path]
    """Files it came from (rotated parts in order)."""
    items: list[Recorded]
    """Messages to publish (streams and commands), in capture order."""
    labels: list[Any] = field(default_factory=list)
    """Ground truth (built sessions), session time."""
    recorded_events: list[Message] = field(default_factory=list)
    """Events the pipeline produced when the session was recorded (live recordings)."""
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    """MCAP metadata records."""
    damage: str = ""
    """Why reading stopped early ("" if the files were read to the end)."""
    rooms: list[str] = field(default_factory=list)
    """Rooms of the session."""

    @property
    def start(self) -> float:
        """Session time of the first published message."""
        return min(r.log_time for r in self.items) if self.items else 0.0

    @property
    def duration(self) -> float:
        """Seconds from the first to the last published message."""
        return ready_time(self.items[-1]) - self.start if self.items else 0.0

    @property
    def name(self) -> str:
        """Session name from the metadata, else the file name."""
        return self.metadata.get("sensorium.session", {}).get("name") or self.paths[0].stem


def load(paths: str | Path | Iterable[str | Path], rooms: Iterable[str] | None = None) -> Session:
    """Read a session; ``RecordingError`` if a file is not MCAP, ``ReplayError`` if nothing can be replayed.

    A damaged file loads up to the damage (``Session.damage`` says where).
    """
    from sensorium.evaluation.session import decode_label

    plist = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not plist:
        raise ReplayError("no session file given")
    if len(plist) == 1:
        plist += rotated_parts(plist[0])
    recs, res = read_all(plist)
    labels, events, items = [], [], []
    for r in recs:
        if r.label is not None:
            try:
                labels.append(decode_label(r.label))
            except Exception as exc:  # a label from a newer builder: skip it, keep the rest
                log.warning("skipped a label record: %s", exc)
        elif isinstance(r.msg, _PUBLISHED):
            items.append(r)
        elif r.msg is not None and r.msg.is_event:
            events.append(r.msg)
    meta_rooms: list[str] = []
    if "sensorium.session" in res.metadata and res.metadata["sensorium.session"].get("rooms"):
        meta_rooms = list(json.loads(res.metadata["sensorium.session"]["rooms"]))
    all_rooms = meta_rooms or sorted({r.msg.room for r in items if r.msg is not None and r.msg.room})
    wanted = list(rooms or [])
    for room in wanted:
        if room not in all_rooms:
            raise ReplayError(f"room {room!r} is not in the session (rooms: {', '.join(all_rooms) or 'none'})")
    if wanted:
        items = [r for r in items if r.msg is not None and r.msg.room in wanted]
        labels = [lb for lb in labels if lb.room in wanted]
        events = [e for e in events if e.room in wanted]
    items.sort(key=ready_time)
    if not items:
        where = f" before the damage ({res.damage})" if res.damage else ""
        raise ReplayError(f"{plist[0]}: no audio, video or commands to replay{where}")
    return Session(
        paths=plist,
        items=items,
        labels=labels,
        recorded_events=events,
        metadata=res.metadata,
        damage=res.damage,
        rooms=wanted or all_rooms,
    )


def rotated_parts(first: Path) -> list[Path]:
    """The recorder's later parts of a rotated recording (``x.1.mcap``, ``x.2.mcap`` … after ``x.mcap``)."""
    parts = []
    n = 1
    while (p := first.with_name(f"{first.stem}.{n}{first.suffix}")).exists():
        parts.append(p)
        n += 1
    if parts:
        log.info("%s was rotated: also reading %s", first, ", ".join(p.name for p in parts))
    return parts


def ready_time(rec: Recorded) -> float:
    """When the edge node could publish a message: audio once its whole chunk was captured."""
    msg = rec.msg
    if isinstance(msg, AudioChunk) and msg.rate > 0:
        return rec.log_time + len(msg.data) / (2 * max(msg.channels, 1) * msg.rate)
    return rec.log_time


#: Two capture stamps closer than this are the same instant (float stamps of the same timeline).
SAME_INSTANT = 1e-4


class TimeMap:
    """Per stream: what was captured when (stamp, end of its capture) → hub time it was published.

    Latency is measured from the input an answer is about (see ``published_at`` and
    ``evaluation.report.ANSWERED_FROM``).
    """

    def __init__(self) -> None:
        self._items: dict[str, list[tuple[float, float, float]]] = {}
        self._series: dict[str, tuple[list[float], list[float], list[float]]] = {}

    def add(self, topic: str, stamp: float, published: float, end: float | None = None) -> None:
        """Record one published message: captured from ``stamp`` to ``end`` (an instant for a frame)."""
        self._items.setdefault(topic, []).append((stamp, stamp if end is None else max(end, stamp), published))
        self._series.pop(topic, None)

    def _get(self, topic: str) -> tuple[list[float], list[float], list[float]]:
        if topic not in self._series:
            stamps, ends, pub, top = [], [], [], -1e300
            for st, en, pt in sorted(self._items[topic]):
                top = max(top, pt)  # an input is never available before an earlier one of its stream
                stamps.append(st)
                ends.append(en)
                pub.append(top)
            self._series[topic] = (stamps, ends, pub)
        return self._series[topic]

    def holding(self, topic: str, stamp: float, seen: float | None = None) -> tuple[int, float, float] | None:
        """The input of ``topic`` an answer stamped ``stamp`` is about, as (rank, gap s, publish time).

        Rank 0: an input whose capture ends at ``stamp`` (a frame's instant, the last chunk of an
        utterance); 1: a chunk whose capture spans ``stamp`` (the end of a wake word inside it); 2: no
        input holds it (a decision made later, e.g. by a timer): the newest input before it, ``gap``
        seconds earlier. Inputs published after ``seen`` cannot be what the answer is about.
        """
        stamps, ends, pub = self._get(topic)
        i = bisect.bisect_left(stamps, stamp - SAME_INSTANT)  # inputs [0, i) began before the instant
        if i < len(stamps) and abs(stamps[i] - stamp) <= SAME_INSTANT and ends[i] - stamps[i] <= SAME_INSTANT:
            i += 1  # a frame at exactly this instant
        while i > 0 and seen is not None and pub[i - 1] > seen + SAME_INSTANT:
            i -= 1
        if i == 0:
            return None
        k = i - 1
        if abs(ends[k] - stamp) <= SAME_INSTANT:
            return 0, 0.0, pub[k]
        if stamps[k] < stamp < ends[k]:
            return 1, 0.0, pub[k]
        return 2, max(0.0, stamp - ends[k]), pub[k]

    def published_at(self, stamp: float, msg: Message | None = None, seen: float | None = None) -> float:
        """When the input that an answer stamped ``stamp`` (and seen at ``seen``) is about was published.

        The streams looked at are the room's video for detections and faces (that camera), the
        room's audio for wake, transcripts and speakers (that node), the room's ``Say`` commands for
        synthesized speech, and every stream of the room otherwise (presence). Of those, the input
        holding the answer's capture time (``holding``) is the one it answers. When none holds it, a
        stamp on the hub clock (a timer's decision, a live agent's ``Say``) is its own start; else the
        newest earlier input's publish time is.
        """
        if not self._items:
            return stamp
        topics = list(self._items)
        if msg is not None and msg.room:
            room = [t for t in topics if t.split("/")[1:2] == [msg.room]]
            if isinstance(msg, Detections | FaceRecognized):
                cams = [t for t in room if t.startswith("video/") and (not msg.camera or t.endswith("/" + msg.camera))]
                room = cams or [t for t in room if t.startswith("video/")]
            elif isinstance(msg, WakeDetected | Transcript | SpeakerIdentified):
                node = getattr(msg, "node", "")
                mics = [t for t in room if t.startswith("audio/") and (not node or t.endswith("/" + node))]
                room = mics or [t for t in room if t.startswith("audio/")]
            elif isinstance(msg, TtsAudio):
                room = [t for t in room if t.startswith("say/")]
            topics = room
        found = [h for h in (self.holding(t, stamp, seen) for t in topics) if h is not None]
        best = min(found, key=lambda h: (h[0], h[1], -h[2])) if found else None
        if best is not None and best[0] < 2:
            return best[2]
        if seen is None or stamp <= seen:  # a stamp on the hub clock: the moment the answer was due
            return max(stamp, best[2]) if best is not None else stamp
        return best[2] if best is not None else stamp


@dataclass
class ReplayOptions:
    """How to replay."""

    speed: float = 1.0
    """1 = real time, 2 = twice as fast, 0 = as fast as the pipeline takes it."""
    settle: float = 3.0
    """Seconds without new events after the last input before the replay ends (stages may still be
    finishing work they started in the background, e.g. a final transcript)."""
    timeout: float = 600.0
    """Give up waiting for the pipeline after this many seconds."""
    flow_limit: int = 4
    """At max speed (embedded): most inputs queued at a non-droppable stage before waiting."""
    frame_ack_timeout: float = 10.0
    """At max speed: longest wait for a camera's previous frame to be answered."""
    commands: bool = True
    """Also publish the recorded ``Say``/``StopPlayback`` commands."""
    future_margin: float = 120.0
    """At max speed: how far past the session's end the capture stamps are anchored (see module doc)."""


class _Collector:
    """Receives every answer on the bus, stamped with the hub time it arrived."""

    def __init__(self, subscriber: Any, clock: Clock) -> None:
        self.sub = subscriber
        self.clock = clock
        self.events: list[tuple[float, Message]] = []
        self.last = _time.monotonic()
        self.frames_answered: dict[str, int] = {}
        self.frames_sent: dict[str, int] = {}
        self.no_detector = False
        self.answered = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            msg = await self.sub.recv()
            self.events.append((self.clock.now(), msg))
            self.last = _time.monotonic()
            if isinstance(msg, Detections):
                key = f"{msg.room}/{msg.camera or msg.source}"
                self.frames_answered[key] = max(self.frames_answered.get(key, 0), msg.frame_seq)
                self.answered.set()


class Flow:
    """Inputs published to each stage of an embedded deployment and not yet handled (flow control at max speed)."""

    def __init__(self, env: Any) -> None:
        self.runners = [r for w in env.workers for r in w.runners]
        self.sent = {id(r): 0 for r in self.runners}
        self.base = {id(r): self._handled(r) for r in self.runners}

    @staticmethod
    def _handled(r: Any) -> int:
        return int(r.inputs + r.dropped + r.errors)

    def published(self, topic: str) -> None:
        """Count one message published on ``topic``."""
        for r in self.runners:
            if r.wants(topic):
                self.sent[id(r)] += 1

    def pending(self, topic: str) -> int:
        """Most inputs outstanding at a stage that consumes ``topic``."""
        return max(
            (self.sent[id(r)] - (self._handled(r) - self.base[id(r)]) for r in self.runners if r.wants(topic)),
            default=0,
        )


async def publish_session(
    session: Session,
    opts: ReplayOptions,
    publish: Callable[[Message], Awaitable[None]],
    clock: Clock,
    collector: _Collector | None = None,
    flow: Flow | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[TimeMap, float]:
    """Publish the session's streams and commands with re-stamped capture times.

    Capture stamps keep the session's own spacing (``t0 + offset``) at every speed: stages rely on
    a stream's chunks being contiguous in time. ``speed`` only sets the pace. At max speed every
    stream is pumped on its own, so a slow camera stage never stalls a microphone (a stalled
    stream looks like a stopped one to the stages). Returns the publish-time map and ``t0``.
    """
    tmap = TimeMap()
    first = session.start
    t0 = clock.now() + 0.05
    if opts.speed <= 0:
        # As fast as possible: stamps must not fall behind the clock, or the runtime would drop and
        # degrade on synthetic ages and two replays would differ. Anchored past the session's end, the
        # runtime sees every input as fresh; the report measures latency from publish time instead.
        t0 += session.duration + opts.future_margin
    mono0 = _time.monotonic() + 0.05
    items = [r for r in session.items if opts.commands or not isinstance(r.msg, Say | StopPlayback)]
    done = 0
    next_note = 0.0

    async def send(rec: Recorded) -> None:
        nonlocal done, next_note
        assert rec.msg is not None
        out = _clone(rec.msg)  # the session keeps its original times for another replay
        out.time = t0 + (rec.log_time - first)
        topic = out.topic()
        await publish(out)
        if flow is not None:
            flow.published(topic)
        tmap.add(topic, out.time, clock.now(), out.time + ready_time(rec) - rec.log_time)
        done += 1
        if progress is not None and _time.monotonic() >= next_note:
            progress(
                f"  {done}/{len(items)} messages, session time {rec.log_time - first:.1f}s of {session.duration:.1f}s"
            )
            next_note = _time.monotonic() + 5.0

    if opts.speed > 0:
        for rec in items:
            delay = mono0 + (ready_time(rec) - first) / opts.speed - _time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(rec)
        return tmap, t0

    async def pump(stream: list[Recorded]) -> None:
        for k, rec in enumerate(stream):
            msg = rec.msg
            assert msg is not None
            if flow is not None:
                limit = 0 if isinstance(msg, VideoFrame) else opts.flow_limit
                deadline = _time.monotonic() + opts.timeout
                while flow.pending(msg.topic()) > limit and _time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
            elif isinstance(msg, VideoFrame) and collector is not None:
                await _await_frame(collector, msg, opts.frame_ack_timeout)
            if k % 8 == 0:
                await asyncio.sleep(0)  # let the stages, the collector and the other streams run
            await send(rec)

    streams: dict[str, list[Recorded]] = {}
    for rec in items:
        assert rec.msg is not None
        key = "commands" if isinstance(rec.msg, Say | StopPlayback) else rec.msg.topic()
        streams.setdefault(key, []).append(rec)
    await asyncio.gather(*(pump(v) for v in streams.values()))
    return tmap, t0


def _clone(msg: Message) -> Message:
    # re-decode the header and attach the same payload object: PCM/JPEG bytes are not copied
    topic, header, payload = codec.encode(msg)
    return codec.decode([topic, header, payload])


async def _await_frame(collector: _Collector, frame: VideoFrame, timeout: float) -> None:
    """Wait until the previous frame of this camera was answered (or ``timeout``; then stop waiting)."""
    key = f"{frame.room}/{frame.source}"
    prev = collector.frames_sent.get(key)
    collector.frames_sent[key] = frame.seq
    if prev is None or timeout <= 0 or collector.no_detector:
        return
    deadline = _time.monotonic() + timeout
    while collector.frames_answered.get(key, -1) < prev:
        left = deadline - _time.monotonic()
        if left <= 0:
            log.warning(
                "no detections for %s frame %d within %.0fs; not waiting for frames any more", key, prev, timeout
            )
            collector.no_detector = True
            return
        collector.answered.clear()
        try:
            async with asyncio.timeout(min(left, 0.5)):
                await collector.answered.wait()
        except TimeoutError:
            pass


async def _settle(collector: _Collector, opts: ReplayOptions, drain: Callable[[], Awaitable[None]] | None) -> None:
    if drain is not None:
        await drain()
    deadline = _time.monotonic() + opts.timeout
    while _time.monotonic() < deadline:
        quiet = _time.monotonic() - collector.last
        if quiet >= opts.settle:
            return
        await asyncio.sleep(min(opts.settle - quiet, 0.5) + 0.01)


async def replay_on(
    session: Session,
    opts: ReplayOptions,
    publisher: Any,
    subscriber: Any,
    clock: Clock,
    flow: Flow | None = None,
    drain: Callable[[], Awaitable[None]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Replay through an existing publisher/subscriber pair (the core of both modes)."""
    collector = _Collector(subscriber, clock)
    task = asyncio.create_task(collector.run(), name="replay-collector")
    wall0 = _time.monotonic()
    try:
        tmap, t0 = await publish_session(session, opts, publisher.publish, clock, collector, flow, progress)
        collector.last = _time.monotonic()
        await _settle(collector, opts, drain)
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    wall = _time.monotonic() - wall0
    first = session.start
    info = {
        "session": session.name,
        "files": [str(p) for p in session.paths],
        "rooms": session.rooms,
        "speed": "max" if opts.speed <= 0 else opts.speed,
        "published": len(session.items),
        "session_s": round(session.duration, 3),
        "wall_s": round(wall, 3),
        "session_start": first,
        "damage": session.damage,
    }
    # answers to inputs of an earlier replay into the same deployment can arrive late: their capture
    # stamps lie before this run's, so they are left out (events stamped "now" are kept)
    stale = (WakeDetected, Transcript, SpeakerIdentified, Detections, FaceRecognized, Presence)
    events = [(seen, m) for seen, m in collector.events if not (isinstance(m, stale) and 0 < m.time < t0 - 1.0)]
    return RunResult(
        events=events,
        to_session=lambda t: t - t0 + first,
        published_at=tmap.published_at,
        info=info,
    )


def stage_runs(env: Any, marks: dict[str, int] | None = None) -> dict[str, StageRun]:
    """The runtime's per-stage numbers of an embedded deployment (samples after ``marks``)."""
    out: dict[str, StageRun] = {}
    for w in env.workers:
        for r in w.runners:
            samples = w.metrics.samples[r.name].since((marks or {}).get(r.name, 0))
            out[r.name] = StageRun(
                samples_ms=[s * 1000 for s in samples],
                budget_ms=r.budget * 1000,
                violations=r.violations - (marks or {}).get(f"{r.name}.violations", 0),
                dropped=r.dropped - (marks or {}).get(f"{r.name}.dropped", 0),
                ladder=list(r.ladder)[(marks or {}).get(f"{r.name}.ladder", 0) :],
                device=r.ctx.device,
                source="runtime",
            )
    return out


def _marks(env: Any) -> dict[str, int]:
    m: dict[str, int] = {}
    for w in env.workers:
        for r in w.runners:
            m[r.name] = w.metrics.samples[r.name].total
            m[f"{r.name}.violations"] = r.violations
            m[f"{r.name}.dropped"] = r.dropped
            m[f"{r.name}.ladder"] = len(r.ladder)
    return m


async def replay_embedded(
    session: Session, opts: ReplayOptions, env: Any, progress: Callable[[str], None] | None = None
) -> RunResult:
    """Replay into a running embedded deployment (``sensorium.embedded.embedded``)."""
    from sensorium.pipeline.bus import Publisher, Subscriber

    pub = Publisher(env.endpoints)
    sub = Subscriber(env.endpoints, ANSWER_PREFIXES)
    for w in env.workers:  # the stages must take what a replay sends:
        for r in w.runners:
            r.ctx.sources = {}  # the recording's own edge nodes, not necessarily this deployment's
            if opts.speed != 1:
                r.ctx.max_future = None  # stamps run ahead of the clock on purpose (module doc)
    try:
        await asyncio.sleep(0.2)  # subscriptions propagate through the proxy
        marks = _marks(env)
        flow = Flow(env) if opts.speed <= 0 else None
        result = await replay_on(session, opts, pub, sub, env.clock, flow, lambda: env.drain(opts.timeout), progress)
        if opts.speed == 1:  # capture stamps are true only in real time; otherwise measure from publish
            result.stages = stage_runs(env, marks)
        else:
            for name, run in stage_runs(env, marks).items():
                result.budgets[name] = run.budget_ms
        result.info["mode"] = "embedded"
        result.info["stages"] = sorted(r.name for w in env.workers for r in w.runners)
        return result
    finally:
        pub.close()
        sub.close()


async def replay_hub(
    session: Session,
    opts: ReplayOptions,
    address: str,
    curve: Any = None,
    name: str = "replay",
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Replay against a running deployment's hub at ``address`` (clock synced with the hub)."""
    from sensorium.pipeline.bus import Endpoints, Publisher, Subscriber
    from sensorium.pipeline.node import NodeLink

    endpoints = Endpoints.from_address(address)
    clock = Clock()
    link = NodeLink(name, "edge", endpoints, clock=clock, curve=curve)
    await link.start()
    pub = Publisher(endpoints, curve=curve)
    sub = Subscriber(endpoints, ANSWER_PREFIXES, curve=curve)
    try:
        if not await link.wait_connected(15.0):
            raise ReplayError(f"hub at {address} is not answering")
        await asyncio.sleep(0.3)
        result = await replay_on(session, opts, pub, sub, clock, None, None, progress)
        result.info["mode"] = f"hub {address}"
        return result
    finally:
        pub.close()
        sub.close()
        await link.close()


def default_deployment(
    session: Session,
    data_dir: str | Path = ".sensorium",
    stages: Iterable[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """A one-box CPU deployment serving the session's rooms with ``stages`` (default: every available one).

    ``options`` holds ``[stages.<name>]`` tables (budgets included), validated like a deployment file.
    """
    from sensorium.deployment import deployment_from_dict, stage_options

    known, _ = stage_options()
    names = list(stages or known)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise ReplayError(f"unknown stage {', '.join(map(repr, unknown))} (available: {', '.join(known)})")
    # the session's own microphones and cameras become the deployment's edge nodes
    edges: dict[str, dict[str, Any]] = {}
    topics = sorted({r.topic for r in session.items}, key=lambda t: (not t.startswith("audio/"), t))
    for topic in topics:
        kind, room, source = topic.split("/", 2)
        if room not in session.rooms:
            continue
        if kind == "audio":
            edges.setdefault(source, {"room": room})
        elif kind == "video":
            edge = next((e for e in edges.values() if e["room"] == room), None)
            if edge is None:
                edge = edges.setdefault(f"{room}-cameras", {"room": room})
            edge.setdefault("cameras", {})[source] = {"source": 0}
    for room in session.rooms:
        if not any(e["room"] == room for e in edges.values()):
            edges[f"{room}-replay"] = {"room": room}
    raw = {
        "hub": {"address": "inproc://replay"},
        "rooms": {room: {} for room in session.rooms},
        "edges": edges,
        "workers": {"cpu": {"stages": names, "device": "cpu"}},
        "stages": dict(options or {}),
        "data_dir": str(data_dir),
    }
    return deployment_from_dict(raw, "<replay default deployment>")


async def replay(
    session: Session,
    opts: ReplayOptions,
    deployment: Any = None,
    hub: str | None = None,
    curve: Any = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Replay against ``hub`` if given, else in an embedded ``deployment`` (default: all stages on CPU)."""
    if hub:
        return await replay_hub(session, opts, hub, curve, progress=progress)
    from sensorium.embedded import embedded

    deployment = deployment if deployment is not None else default_deployment(session)
    async with embedded(deployment) as env:
        return await replay_embedded(session, opts, env, progress)


__all__ = [
    "ANSWER_PREFIXES",
    "RecordingError",
    "ReplayError",
    "ReplayOptions",
    "Session",
    "TimeMap",
    "load",
    "replay",
    "replay_embedded",
    "replay_hub",
    "replay_on",
]
