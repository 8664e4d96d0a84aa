"""The house as the bridge publishes it: derived from the hub's events, saved with the sequence number.

``House.apply(event)`` folds one event into the state: presence moves people between rooms and
sets each room's unknown count; speaker and final transcript events set a room's last speaker.
``retained(house, …)`` renders every state topic with its payload, so publishing "on change
only" is a diff against what was last published, and a reconnect re-publishes the whole map.
``forwarded(event, …)`` gives the event's own (not retained) messages.

The state file (``save`` / ``load``) holds the state together with the last hub sequence number
whose messages reached the broker: a restart resumes the event stream right after it, with the
state as it was then, so it neither repeats nor skips a change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from sensorium.bridges.mqtt.topics import Topics
from sensorium.pipeline.codec import to_json
from sensorium.pipeline.messages import Event, FaceRecognized, Presence, SpeakerIdentified, Transcript, WakeDetected

UNKNOWN = "unknown"
NOT_HOME = "not_home"
#: Public event types the bridge follows (everything it forwards or derives states from).
EVENT_TYPES = ("presence", "speaker", "transcript", "wake", "face")
#: Events published on ``events/<type>/<room>``.
FORWARDED = (Presence, SpeakerIdentified, Transcript, WakeDetected, FaceRecognized)
STATE_VERSION = 1


class PersonState(msgspec.Struct, kw_only=True):
    """Where one person is."""

    room: str = ""
    """The room they are in; "" when not home."""
    since: float = 0.0
    """Hub time they entered it (or left the last one)."""


class RoomState(msgspec.Struct, kw_only=True):
    """One room's counts and last speaker."""

    unknown: int = 0
    """Unknown people in the room (the presence stage's count)."""
    last_speaker: str = ""
    """Who spoke last: a name, "unknown", or "" before anyone spoke."""
    text: str = ""
    """What they said (the final transcript of that utterance, "" if it has not come)."""
    utterance_id: str = ""
    """The utterance ``last_speaker`` and ``text`` belong to."""
    score: float = 0.0
    """Speaker ID's similarity score."""
    spoke: float = 0.0
    """Hub time of the utterance."""
    heard_id: str = ""
    """A final transcript still waiting for its speaker event."""
    heard_text: str = ""
    """Its text."""


class Saved(msgspec.Struct, kw_only=True):
    """The state file."""

    version: int = STATE_VERSION
    """File layout version."""
    seq: int = 0
    """Hub sequence number of the last event whose messages reached the broker."""
    people: dict[str, PersonState] = {}
    """Everyone the presence stage placed, by name."""
    rooms: dict[str, RoomState] = {}
    """Per room."""
    announced: list[str] = []
    """People whose discovery configs are on the broker (to clear them when they leave the gallery)."""


class StateFileError(ValueError):
    """The state file cannot be read; the text names it and what was wrong."""


class House:
    """Rooms and people, folded from events."""

    def __init__(self, rooms: Iterable[str], saved: Saved | None = None) -> None:
        saved = saved or Saved()
        self.seq = saved.seq
        self.people: dict[str, PersonState] = dict(saved.people)
        self.rooms: dict[str, RoomState] = {r: saved.rooms.get(r, RoomState()) for r in rooms}
        self.announced: list[str] = list(saved.announced)

    def saved(self) -> Saved:
        return Saved(seq=self.seq, people=self.people, rooms=self.rooms, announced=sorted(self.announced))

    # ------------------------------------------------------------------------------------ events

    def apply(self, ev: Event) -> None:
        """Fold one event in (events the state does not depend on change nothing)."""
        if isinstance(ev, Presence):
            self._presence(ev)
        elif isinstance(ev, SpeakerIdentified):
            room = self.rooms.get(ev.room)
            if room is not None:
                text = room.heard_text if room.heard_id == ev.utterance_id else ""
                if room.utterance_id == ev.utterance_id and room.text:
                    text = room.text
                room.last_speaker, room.utterance_id, room.score = ev.person, ev.utterance_id, ev.score
                room.text, room.spoke = text, ev.time
        elif isinstance(ev, Transcript) and ev.final:
            room = self.rooms.get(ev.room)
            if room is None:
                return
            if ev.speaker:
                room.last_speaker, room.score = ev.speaker, ev.speaker_score
                room.utterance_id, room.text, room.spoke = ev.utterance_id, ev.text, ev.t0 or ev.time
            elif ev.utterance_id == room.utterance_id:
                room.text = ev.text  # the speaker event came first
            else:
                room.heard_id, room.heard_text = ev.utterance_id, ev.text  # the speaker event follows
        if ev.seq > self.seq:
            self.seq = ev.seq

    def _presence(self, ev: Presence) -> None:
        room = self.rooms.get(ev.room)
        if room is not None:
            room.unknown = max(ev.unknown, 0)  # every presence event carries the room's current count
        if ev.person == UNKNOWN or not ev.person:
            return
        p = self.people.setdefault(ev.person, PersonState())
        if ev.state == "left":
            if p.room == ev.room:
                p.room, p.since = "", ev.time
        elif p.room != ev.room:
            p.room, p.since = ev.room, ev.time

    def rebase(self, snapshot: Iterable[Presence]) -> None:
        """Take who is where from the hub's presence snapshot (a bridge without a state file)."""
        for p in self.people.values():
            p.room = ""
        for room in self.rooms.values():
            room.unknown = 0
        for ev in snapshot:
            self._presence(ev)

    # ------------------------------------------------------------------------------------ views

    def where(self, person: str) -> str:
        """The person's room, "" when not home."""
        p = self.people.get(person)
        return p.room if p is not None else ""

    def names(self, room: str) -> list[str]:
        return sorted(n for n, p in self.people.items() if p.room == room)

    def count(self, room: str) -> int:
        return len(self.names(room)) + self.rooms[room].unknown


def _iso(t: float) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") if t else None


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def retained(house: House, topics: Topics, people: Iterable[str]) -> dict[str, bytes]:
    """Every retained state topic → payload: each room of the house, each of ``people`` (the enrolled)."""
    out: dict[str, bytes] = {}
    for name, room in house.rooms.items():
        # attributes before their state: an automation triggered by the state reads fresh attributes
        count = house.count(name)
        out[topics.room(name, "people/attributes")] = _json({"names": house.names(name), "unknown": room.unknown})
        out[topics.room(name, "people")] = str(count).encode()
        out[topics.room(name, "occupancy")] = b"ON" if count else b"OFF"
        if room.last_speaker:
            out[topics.room(name, "last_speaker/attributes")] = _json(
                {
                    "text": room.text,
                    "score": round(room.score, 3),
                    "utterance_id": room.utterance_id,
                    "time": _iso(room.spoke),
                }
            )
            out[topics.room(name, "last_speaker")] = room.last_speaker.encode()
    for person in people:
        where = house.where(person)
        p = house.people.get(person)
        out[topics.person(person, "attributes")] = _json(
            {"room": where or None, "since": _iso(p.since) if p is not None else None}
        )
        out[topics.person(person, "room")] = (where or NOT_HOME).encode()
        out[topics.person(person, "home")] = b"home" if where else NOT_HOME.encode()
    return out


def person_state_topics(topics: Topics, person: str) -> list[str]:
    """The retained topics of one person (cleared when they leave the gallery)."""
    return [topics.person(person, leaf) for leaf in ("room", "home", "attributes")]


def forwarded(ev: Event, topics: Topics) -> list[tuple[str, bytes]]:
    """The event's own messages (not retained): its JSON on ``events/<type>/<room>``, and the room's
    ``voice`` message (Home Assistant's event entity) for wake words and final transcripts."""
    if not isinstance(ev, FORWARDED) or (isinstance(ev, Transcript) and not ev.final):
        return []
    kind = msgspec.json.decode(to_json(ev))["type"]
    out = [(topics.event(kind, ev.room), to_json(ev))]
    if ev.room and isinstance(ev, WakeDetected):
        voice = {"event_type": "wake", "word": ev.word, "score": round(ev.score, 3), "node": ev.node}
        out.append((topics.room(ev.room, "voice"), _json(voice)))
    elif ev.room and isinstance(ev, Transcript):
        voice = {"event_type": "transcript", "text": ev.text, "speaker": ev.speaker, "utterance_id": ev.utterance_id}
        out.append((topics.room(ev.room, "voice"), _json(voice)))
    return out


# ------------------------------------------------------------------------------------ the file


def save(path: Path, saved: Saved) -> None:
    """Write the state file atomically with mode 0600."""
    save_bytes(path, msgspec.json.encode(saved))


def save_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (a temporary file, fsync, rename) with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file may have other bits
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(path: Path) -> Saved | None:
    """The saved state, None if there is no file; ``StateFileError`` if it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read the MQTT bridge's state: {exc}") from None
    try:
        saved = msgspec.json.decode(raw, type=Saved)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFileError(f"{path}: damaged MQTT bridge state ({exc})") from None
    if saved.version != STATE_VERSION:
        raise StateFileError(f"{path}: state file version {saved.version}, this bridge reads {STATE_VERSION}")
    return saved
