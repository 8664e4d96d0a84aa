"""Presence: who is in which room, fused from faces, voices and person tracks.

Evidence: a recognized face (``face``), an identified speaker or a final transcript with a speaker
(``voice``), and a person track that a face was recognized on (``track``: once a face names a track,
every frame that still shows the track keeps the person present without recognizing again).

A person ``entered`` a room on evidence of at least ``enter_confidence``; moving to another room
needs face or voice evidence of ``move_confidence`` there (a lingering track cannot pull anyone
back); ``left`` comes after ``left_after`` without any evidence. ``present`` repeats every
``present_every``.

Counting: only confirmed person tracks count (the detect stage gives a box ``track`` >= 0 once it has
found the track in a few frames; ``track=-1`` boxes never count). Unknown people in a room are the
confirmed tracks no face named, less the people present by voice alone (a named voice in the room
is most likely one of the unnamed tracks there, not one more person), taken per camera as the most
seen over ``count_window`` (so one missed detection does not make a person "leave"); people = the
named people present + unknown. A ``person="unknown"`` event goes out whenever the unknown count
changes; every presence event carries both counts (the MQTT bridge's ``people`` entities read them).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import ClassVar

import msgspec

from sensorium.pipeline.messages import (
    Detections,
    FaceRecognized,
    Message,
    Presence,
    SpeakerIdentified,
    Transcript,
)
from sensorium.pipeline.stage import Duration, Stage, StageContext, StageOptions

UNKNOWN = "unknown"


class PresenceOptions(StageOptions):
    """``[stages.presence]``."""

    left_after: Duration = "30s"
    """Time without any evidence after which a person has left the room."""
    present_every: Duration = "60s"
    """Interval of periodic ``present`` events per person (0 = off)."""
    enter_confidence: float = 0.5
    """Evidence needed to mark a person entered (staying needs any evidence: hysteresis)."""
    move_confidence: float = 0.6
    """Face or voice evidence needed in another room to move a person there."""
    track_factor: float = 0.9
    """Confidence of track evidence relative to the face that named the track."""
    count_window: Duration = "3s"
    """People counts are the most seen over this window."""
    settle: Duration = "1s"
    """Unknown counts lag this much, so a face can name a new track before it counts as a stranger."""
    tick: Duration = "250ms"
    """How often timers (left, present) are checked."""


@dataclass
class _Person:
    room: str
    entered: float
    last: float
    last_present: float
    sources: dict[str, tuple[float, float]] = field(default_factory=dict)
    """source → (last time, confidence)."""

    def confidence(self, since: float) -> float:
        """Combined confidence of the sources seen since ``since`` (independent-evidence rule)."""
        miss = 1.0
        for t, c in self.sources.values():
            if t >= since:
                miss *= 1.0 - min(max(c, 0.0), 1.0)
        return round(1.0 - miss, 4)


class PresenceStage(Stage):
    """Fuses face, voice and track evidence into per-room presence events."""

    Options: ClassVar[type[msgspec.Struct]] = PresenceOptions
    name: ClassVar[str] = "presence"
    consumes: ClassVar[tuple[type[Message], ...]] = (
        FaceRecognized,
        SpeakerIdentified,
        Transcript,
        Detections,
    )
    emits: ClassVar[tuple[type[Message], ...]] = (Presence,)
    answers: ClassVar[tuple[type[Message], ...]] = (Presence,)
    droppable: ClassVar[bool] = False
    default_budget_ms: ClassVar[float] = 3000.0  # from the frame's capture: detect + face are in it

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        o: PresenceOptions = ctx.options
        self.left_after = o.left_after
        self.present_every = o.present_every
        self.count_window = o.count_window
        self.settle = o.settle
        self.tick = max(o.seconds("tick"), 0.01)
        self.opts = o
        self._people: dict[str, _Person] = {}
        self._tracks: dict[tuple[str, str, int], tuple[str, float]] = {}
        """(room, camera, track) → (person or "unknown", face confidence)."""
        self._frames: dict[tuple[str, str], list[tuple[float, tuple[int, ...]]]] = {}
        """(room, camera) → recent (time, track ids in the frame; -1 = untracked)."""
        self._counts: dict[str, tuple[int, int]] = {}
        """room → (people, unknown) last reported."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._timers(), name="presence-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -------------------------------------------------------------------------------------- input

    async def handle(self, msg: Message) -> None:
        if msg.room and (problem := self.ctx.room_problem(msg.room)):
            await self.ctx.reject(msg, problem)
            return
        if isinstance(msg, FaceRecognized):
            self._tracks[(msg.room, msg.camera, msg.track)] = (msg.person, msg.score)
            if msg.person != UNKNOWN:
                await self._evidence(msg.person, msg.room, "face", msg.score, msg.time)
            await self._report_counts(msg.room, msg.time)
        elif isinstance(msg, SpeakerIdentified):
            if msg.person != UNKNOWN:
                await self._evidence(msg.person, msg.room, "voice", msg.score, msg.time)
        elif isinstance(msg, Transcript):
            if msg.final and msg.speaker and msg.speaker != UNKNOWN:
                await self._evidence(msg.speaker, msg.room, "voice", msg.speaker_score, msg.t1 or msg.time)
        elif isinstance(msg, Detections):
            await self._on_detections(msg)
        else:
            await self.ctx.reject(msg, f"presence does not take {type(msg).__name__}")

    async def _on_detections(self, det: Detections) -> None:
        for b in det.boxes:
            person, conf = self._tracks.get((det.room, det.camera, b.track), (UNKNOWN, 0.0))
            if b.track >= 0 and b.score > 0 and person != UNKNOWN:  # score 0: a counted track held, not seen
                await self._evidence(person, det.room, "track", conf * self.opts.track_factor, det.time)
        # Track names outlive an empty frame: the frames before it still count, and a person who walked out
        # must not turn into a stranger there. The timers forget a name once no frame in the window has it.
        self._frames.setdefault((det.room, det.camera), []).append((det.time, tuple(b.track for b in det.boxes)))
        await self._report_counts(det.room, det.time)

    async def _evidence(self, person: str, room: str, source: str, conf: float, t: float) -> None:
        p = self._people.get(person)
        if p is not None and p.room == room:
            p.last = max(p.last, t)
            p.sources[source] = (t, conf)
            return
        if p is None:
            if conf < self.opts.enter_confidence or source == "track":
                return
        else:
            # Somewhere else already: only strong face/voice evidence moves them (hysteresis against flapping).
            if source == "track" or conf < self.opts.move_confidence:
                return
            await self._left(p, person, t)
        p = _Person(room=room, entered=t, last=t, last_present=t, sources={source: (t, conf)})
        self._people[person] = p
        await self._emit(person, p, "entered", t)

    # ------------------------------------------------------------------------------------- timers

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.check(self.ctx.clock.now())
            except Exception:  # a timer bug must not end presence for good
                self.ctx.log.exception("presence timers")

    async def check(self, now: float) -> None:
        """Emit what is due at ``now``: ``left`` after silence, periodic ``present``, count changes."""
        for person, p in list(self._people.items()):
            if now - p.last >= self.left_after:
                await self._left(p, person, now)
            elif self.present_every > 0 and now - p.last_present >= self.present_every:
                p.last_present = now
                await self._emit(person, p, "present", now)
        for room in {r for r, _ in self._frames}:
            await self._report_counts(room, now)
        # A track's name is kept while its frames can still count (so a person who left is not a stranger).
        live = {(r, c, tr) for (r, c), frames in self._frames.items() for _, trs in frames for tr in trs}
        for key in [k for k in self._tracks if k not in live]:
            del self._tracks[key]

    async def _left(self, p: _Person, person: str, t: float) -> None:
        self._people.pop(person, None)
        await self._emit(person, p, "left", t)

    # ------------------------------------------------------------------------------------- counts

    def counts(self, room: str, now: float) -> tuple[int, int]:
        """(people, unknown) in ``room`` at ``now``.

        Unknown = boxes whose track no face named (with today's names, so a face recognized later
        also clears the frames before it), the most seen per camera over the settled window.
        """
        unknown = 0
        end = now - self.settle
        for (r, cam), frames in self._frames.items():
            if r != room:
                continue

            def unnamed(tracks: tuple[int, ...], cam: str = cam) -> int:
                return sum(
                    1 for tr in tracks if tr >= 0 and self._tracks.get((room, cam, tr), (UNKNOWN, 0.0))[0] == UNKNOWN
                )

            settled = [f for f in frames if f[0] <= end]
            recent = [unnamed(tr) for t, tr in settled if end - t <= self.count_window]
            if recent:
                unknown += max(recent)
            elif settled and end - settled[-1][0] < self.left_after:
                unknown += unnamed(settled[-1][1])  # no new frame: detect sends none while a room stays empty
            # Keep only what the window or the last-frame rule can still use.
            last = settled[-1:] if settled else []
            frames[:] = [f for f in frames if end - f[0] <= self.count_window] or last
        here = {name for name, p in self._people.items() if p.room == room}
        on_tracks = {
            self._tracks[(r, c, tr)][0]
            for (r, c), frames in self._frames.items()
            if r == room
            for _, trs in frames
            for tr in trs
            if (r, c, tr) in self._tracks
        }
        # Present but on no track here (named by voice alone): most likely one of the unnamed tracks.
        unknown = max(0, unknown - len(here - on_tracks))
        return len(here) + unknown, unknown

    async def _report_counts(self, room: str, t: float) -> None:
        people, unknown = self.counts(room, max(t, self.ctx.clock.now()))
        before = self._counts.get(room, (0, 0))
        if (people, unknown) == before:
            return
        self._counts[room] = (people, unknown)
        if unknown == before[1]:
            return  # only the known count changed; those events carry the counts themselves
        state = "entered" if before[1] == 0 else "left" if unknown == 0 else "present"
        await self.ctx.publish(
            Presence(
                time=t,
                room=room,
                person=UNKNOWN,
                state=state,
                confidence=1.0 if unknown else 0.0,
                sources=["track"],
                people=people,
                unknown=unknown,
            )
        )

    async def _emit(self, person: str, p: _Person, state: str, t: float) -> None:
        people, unknown = self.counts(p.room, max(t, self.ctx.clock.now()))
        since = t - self.left_after
        sources = sorted(s for s, (ts, _) in p.sources.items() if ts >= since)
        await self.ctx.publish(
            Presence(
                time=t,
                room=p.room,
                person=person,
                state=state,  # type: ignore[arg-type]
                confidence=p.confidence(since) if state != "left" else 0.0,
                sources=sources,
                people=people,
                unknown=unknown,
            )
        )
