"""What the MCP server answers from: the house folded from the hub's events.

``House.apply(event)`` folds one event in: presence moves people between rooms and sets each room's
unknown count; presence, faces and identified speakers update when and where a person was last
seen; final transcripts (with their speaker, once it is known) go into a bounded list. Every
change returns the resource keys it touched (``room:<name>``, ``person:<name>``), so the server
notifies exactly the subscribers of what changed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sensorium.pipeline.messages import Event, FaceRecognized, Presence, SpeakerIdentified, Transcript

UNKNOWN = "unknown"
#: Public event types the server follows.
EVENT_TYPES = ("presence", "speaker", "transcript", "face")


@dataclass
class PersonState:
    """Where one person is, and where they were last seen."""

    room: str = ""
    """The room they are in; "" when not home."""
    since: float = 0.0
    """Hub time they entered it (or left the last one)."""
    seen_room: str = ""
    """Room they were last seen or heard in."""
    seen_at: float = 0.0
    """Hub time of that (0 = never)."""
    seen_by: str = ""
    """What saw them: "presence", "face" or "voice"."""


@dataclass
class Heard:
    """One final transcript."""

    seq: int
    time: float
    room: str
    text: str
    utterance_id: str
    speaker: str = UNKNOWN
    """Who said it: an enrolled name, or "unknown" (not identified, or not yet)."""


@dataclass
class House:
    """Rooms and people, folded from events."""

    rooms: list[str]
    max_transcripts: int = 200
    people: dict[str, PersonState] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    transcripts: deque[Heard] = field(default_factory=deque)
    seq: int = 0
    _speakers: dict[str, tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.unknown = {r: 0 for r in self.rooms}
        self.transcripts = deque(maxlen=self.max_transcripts)

    # ------------------------------------------------------------------------------------ events

    def apply(self, ev: Event) -> set[str]:
        """Fold one event in; returns the resource keys whose state changed."""
        self.seq = max(self.seq, ev.seq)
        if isinstance(ev, Presence):
            return self._presence(ev)
        if isinstance(ev, FaceRecognized):
            return self._seen(ev.person, ev.room, ev.time, "face")
        if isinstance(ev, SpeakerIdentified):
            self._speakers[ev.utterance_id] = (ev.person, ev.time)
            if len(self._speakers) > 256:
                self._speakers.pop(next(iter(self._speakers)))
            for h in reversed(self.transcripts):
                if h.utterance_id == ev.utterance_id:
                    h.speaker = ev.person or UNKNOWN
                    break
            return self._seen(ev.person, ev.room, ev.time, "voice")
        if isinstance(ev, Transcript) and ev.final and ev.text.strip():
            speaker = ev.speaker or self._speakers.get(ev.utterance_id, (UNKNOWN, 0.0))[0]
            self.transcripts.append(Heard(ev.seq, ev.time, ev.room, ev.text.strip(), ev.utterance_id, speaker))
        return set()

    def _presence(self, ev: Presence) -> set[str]:
        changed: set[str] = set()
        if ev.room in self.unknown and self.unknown[ev.room] != max(ev.unknown, 0):
            self.unknown[ev.room] = max(ev.unknown, 0)  # every presence event carries the room's current count
            changed.add(f"room:{ev.room}")
        if ev.person in ("", UNKNOWN):
            return changed
        p = self.people.setdefault(ev.person, PersonState())
        before = p.room
        if ev.state == "left":
            if p.room == ev.room:
                p.room, p.since = "", ev.time
        elif p.room != ev.room:
            p.room, p.since = ev.room, ev.time
        if ev.state != "left":
            changed |= self._seen(ev.person, ev.room, ev.time, "presence")
        if p.room != before:
            changed |= {f"person:{ev.person}", *(f"room:{r}" for r in (before, p.room) if r)}
        return changed

    def _seen(self, person: str, room: str, t: float, how: str) -> set[str]:
        if person in ("", UNKNOWN) or not room:
            return set()
        p = self.people.setdefault(person, PersonState())
        if t >= p.seen_at:
            p.seen_room, p.seen_at, p.seen_by = room, t, how
        return set()  # last-seen times change constantly: not a subscription update

    def rebase(self, snapshot: Iterable[Presence]) -> set[str]:
        """Take who is where from the hub's presence snapshot; returns what changed."""
        before = {n: p.room for n, p in self.people.items()}
        unknown_before = dict(self.unknown)
        for p in self.people.values():
            p.room = ""
        self.unknown = {r: 0 for r in self.rooms}
        for ev in snapshot:
            self._presence(ev)
        changed = {f"person:{n}" for n, p in self.people.items() if before.get(n, "") != p.room}
        rooms = {before.get(n, "") for n in self.people} | {p.room for p in self.people.values()}
        changed |= {f"room:{r}" for r in rooms if r and any(f"person:{n}" in changed for n in self.people)}
        changed |= {f"room:{r}" for r in self.rooms if unknown_before.get(r) != self.unknown[r]}
        return changed

    # ------------------------------------------------------------------------------------- views

    def where(self, person: str) -> str:
        """The person's room, "" when not home."""
        p = self.people.get(person)
        return p.room if p is not None else ""

    def occupants(self, room: str) -> list[str]:
        """Known people in ``room``, sorted."""
        return sorted(n for n, p in self.people.items() if p.room == room)

    def home(self) -> dict[str, str]:
        """Person → room, for everyone at home."""
        return {n: p.room for n, p in sorted(self.people.items()) if p.room}
