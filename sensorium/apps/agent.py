"""The built-in offline agent: answers final transcripts in the room they were spoken in.

It knows the time and date, who is home and where (the hub's presence snapshot), repeats what it is
asked to say, and politely declines everything else. ``BuiltinAgent.answer`` is a pure function
(transcript text + presence → answer text) so it is tested without a bus; ``run_agent`` wires it to a
``pipeline.client.Client``. The demo uses it; a real deployment puts an LLM in its place (see
``examples/openai_agent.py``), with the same loop.

Continued conversation: a reply that asks back (ends with "?") is followed by listening without a wake
word, but only once the edge reports the reply played (``PlaybackStatus`` "ended"): the loop then claims
that node's microphone (``Listen``) from the end of the playback on, so the reply's own sound in the room
is no part of what it hears, and answers the next thing said there. A reply cut off by a barge-in opens
nothing (the person already woke it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sensorium.pipeline.messages import PlaybackStatus, Presence, Transcript, WakeArbitrated

log = logging.getLogger("sensorium.agent")

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
_ONES += "seventeen eighteen nineteen"
_SMALL = _ONES.split()
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty"}
_COUNTS = ["no one", "one person", "two people", "three people", "four people", "five people"]


def number_words(n: int) -> str:
    """0–59 in words ("forty two")."""
    if n < 20:
        return _SMALL[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_SMALL[ones]}" if ones else "")


def time_in_words(now: dt.datetime) -> str:
    """ "It is twenty past nine in the morning." — spoken form, so every voice reads it right."""
    h, m = now.hour, now.minute
    part = (
        "at night"
        if h < 5 or h >= 21
        else "in the morning"
        if h < 12
        else "in the afternoon"
        if h < 18
        else "in the evening"
    )
    h12 = h % 12 or 12
    nxt = (h + 1) % 12 or 12
    if m == 0:
        spoken = f"{number_words(h12)} o'clock"
    elif m == 15:
        spoken = f"a quarter past {number_words(h12)}"
    elif m == 30:
        spoken = f"half past {number_words(h12)}"
    elif m == 45:
        spoken = f"a quarter to {number_words(nxt)}"
    elif m < 30:
        spoken = f"{number_words(m)} {'minute' if m == 1 else 'minutes'} past {number_words(h12)}"
    else:
        spoken = f"{number_words(60 - m)} {'minute' if 60 - m == 1 else 'minutes'} to {number_words(nxt)}"
    return f"It is {spoken} {part}."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _room_name(room: str) -> str:
    return room.replace("_", " ").replace("-", " ")


def who_is_where(presence: Iterable[Presence]) -> tuple[dict[str, str], dict[str, int]]:
    """(person → room, room → unknown people) from a presence snapshot (latest state per person)."""
    people: dict[str, str] = {}
    unknown: dict[str, int] = {}
    for p in sorted(presence, key=lambda p: p.time):
        if p.person == "unknown" or not p.person:
            if p.state == "left" or p.unknown <= 0:
                unknown.pop(p.room, None)
            else:
                unknown[p.room] = p.unknown
        elif p.state == "left":
            if people.get(p.person) == p.room:
                del people[p.person]
        else:
            people[p.person] = p.room
    return people, unknown


@dataclass
class BuiltinAgent:
    """Rule-based answers; no network, no model."""

    now: Callable[[], dt.datetime] = dt.datetime.now
    """Clock for time questions (tests pass a fixed one)."""
    name: str = "Jarvis"
    """What the assistant calls itself."""

    def needs_presence(self, text: str) -> bool:
        """True if answering ``text`` needs the presence snapshot."""
        t = _norm(text)
        return bool(_WHO.search(t) or _WHERE.search(t))

    def answer(self, text: str, *, speaker: str | None = None, presence: Iterable[Presence] = ()) -> str:
        """The reply to one final transcript."""
        t = _norm(text)
        if not t:
            return ""
        m = _ECHO.match(t)
        if m:
            said = _ECHO_RAW.sub("", text.strip())
            said = said.strip(" ,:")
            return said[:1].upper() + said[1:] if said else "You didn't tell me what to say."
        if _TIME.search(t):
            return time_in_words(self.now())
        if _DATE.search(t):
            return f"Today is {self.now():%A, %B} {self.now().day}."
        m = _WHERE.search(t)
        if m:
            who = m.group(1)
            people, _ = who_is_where(presence)
            match = next((p for p in people if p.lower() == who), None)
            if match:
                return f"{match} is in the {_room_name(people[match])}."
            return f"I haven't seen {who.capitalize()} recently."
        if _WHO.search(t):
            return self._who_is_home(presence)
        if _HELLO.match(t):
            known = speaker and speaker != "unknown"
            return f"Hello {speaker}! How can I help?" if known else "Hello! How can I help?"
        return (
            "Sorry, I can't help with that yet. You can ask me the time, who is home, "
            "or where someone is, or ask me to say something."
        )

    def _who_is_home(self, presence: Iterable[Presence]) -> str:
        people, unknown = who_is_where(presence)
        by_room: dict[str, list[str]] = {}
        for person, room in sorted(people.items()):
            by_room.setdefault(room, []).append(person)
        parts = [
            f"{_join(names)} {'is' if len(names) == 1 else 'are'} in the {_room_name(r)}"
            for r, names in by_room.items()
        ]
        strangers = [
            f"{_COUNTS[min(n, 5)]} I don't recognize in the {_room_name(r)}" for r, n in sorted(unknown.items())
        ]
        if not parts and not strangers:
            return "I don't see anyone at home right now."
        if not parts:
            return f"There {'is' if sum(unknown.values()) == 1 else 'are'} {_join(strangers)}."
        text = _join(parts)
        if strangers:
            text += f", and there {'is' if sum(unknown.values()) == 1 else 'are'} {_join(strangers)}"
        return text[0].upper() + text[1:] + "."


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()


_ECHO_RAW = re.compile(r"^\W*(?:repeat after me|please repeat|repeat|please say|say|echo)\b\W*", re.I)
_ECHO = re.compile(r"^(repeat after me|please repeat|repeat|please say|say|echo)\b")
_TIME = re.compile(r"\bwhat(?:'s| is)? the time\b|\btime is it\b|\bwhat time\b|\btell me the time\b|\bcurrent time\b")
_DATE = re.compile(r"\bwhat(?:'s| is)? (?:the )?date\b|\bwhat day is\b|\btoday's date\b")
_WHERE = re.compile(r"\bwhere(?:'s| is) ([a-z]+)\b")
_WHO = re.compile(r"\bwho(?:'s| is)? (?:at )?home\b|\bwho(?:'s| is) (?:here|in the house|around)\b|\bis anyone home\b")
_HELLO = re.compile(r"^(hello|hi|hey|good (morning|afternoon|evening))\b")


# ------------------------------------------------------------------------------------- bus loop


@dataclass
class Turn:
    """One question and answer, with the timing the voice-to-voice benchmark reports."""

    room: str
    question: str
    answer: str
    speaker: str | None
    utterance_id: str
    speech_end: float
    """End of the user's speech (transcript ``t1``), hub clock."""
    transcript_at: float
    """When the agent received the final transcript, hub clock."""
    said_at: float
    """When the agent sent its answer (its "first token"), hub clock."""
    answer_id: str = ""
    cut_off: str | None = None
    """Set when playback was stopped: what had been played (the rest was not heard)."""


@dataclass
class AgentLoop:
    """Runs ``BuiltinAgent`` (or any object with its ``answer``) against a hub client."""

    client: Any
    """A connected ``pipeline.client.Client``."""
    agent: BuiltinAgent = field(default_factory=BuiltinAgent)
    rooms: list[str] | None = None
    """Only answer utterances from these rooms (None = all)."""
    turns: list[Turn] = field(default_factory=list)
    on_turn: Callable[[Turn], None] | None = None
    stood_down: list[tuple[str, float]] = field(default_factory=list)
    """(room, wake time) of detections the arbiter told to stand down (another room answers, or echo)."""
    skipped: list[Transcript] = field(default_factory=list)
    """Final transcripts not answered because their room stood down."""
    follow_up: bool = True
    """After a reply that asks back has played, listen for the answer without a wake word."""
    follow_tail: float = 0.3
    """Seconds after the edge's "ended" the listening starts (the room's reverberation of the reply)."""
    asking: dict[str, str] = field(default_factory=dict)
    """answer_id → room of replies that asked back, still playing."""
    following: dict[str, str] = field(default_factory=dict)
    """request_id → room of microphones claimed for a follow-up answer."""

    async def run(self, since: int | None = None, stop: asyncio.Event | None = None) -> None:
        """Answer until ``stop`` is set (or forever)."""

        async def loop() -> None:
            # All rooms: an arbitration event is published in the winner's room but concerns the losers' too.
            async for ev in self.client.events(["transcript", "playback", "arbitration"], since=since):
                await self.handle(ev)

        task = asyncio.create_task(loop(), name="agent-loop")
        waits: set[asyncio.Future[Any]] = {task}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _stood_down(self, ev: Transcript) -> bool:
        # The utterance opened on a wake the arbiter gave to another room (or took for the room's own
        # speaker): that wake lies between the utterance's start (pre-roll before it) and its end.
        t0 = ev.t0 or ev.time
        t1 = ev.t1 or t0 + 30.0
        return any(room == ev.room and t0 - 0.25 <= t <= t1 for room, t in self.stood_down)

    async def handle(self, ev: Any) -> Turn | None:
        """React to one event: answer a final transcript, note what a barge-in cut off."""
        if isinstance(ev, PlaybackStatus):
            room = self.asking.pop(ev.answer_id, None) if ev.state != "started" else None
            if room is not None and ev.state == "ended" and ev.source:
                rid = f"follow-{ev.answer_id}"
                self.following[rid] = room
                while len(self.following) > 64:
                    self.following.pop(next(iter(self.following)))
                await self.client.listen(room, ev.source, ev.time + self.follow_tail, rid)
                log.info("listening in %s on %s without a wake word (the reply asked back)", room, ev.source)
            if ev.state == "stopped":
                for turn in reversed(self.turns):
                    if turn.answer_id == ev.answer_id:
                        turn.cut_off = ev.played_text
                        log.info("answer %s cut off after: %r", ev.answer_id, ev.played_text)
                        break
            return None
        if isinstance(ev, WakeArbitrated):
            self.stood_down += [(room, ev.wake_time) for room in ev.loser_rooms]
            del self.stood_down[:-64]
            return None
        if not isinstance(ev, Transcript) or not ev.final or not ev.text.strip():
            return None
        if ev.request_id and self.following.pop(ev.request_id, None) is None:
            return None  # a client's speech-to-text request (Home Assistant): that client answers it
        if self.rooms is not None and ev.room not in self.rooms:
            return None
        if self._stood_down(ev):
            log.info("not answering %r in %s: the room stood down for this wake word", ev.text, ev.room)
            self.skipped.append(ev)
            del self.skipped[:-64]
            return None
        received = self.client.clock.now()
        presence: list[Presence] = []
        if self.agent.needs_presence(ev.text):
            try:
                presence = await self.client.snapshot()
            except Exception as exc:  # answer anyway: "I haven't seen …" beats silence
                log.warning("presence snapshot failed: %s", exc)
        reply = self.agent.answer(ev.text, speaker=ev.speaker, presence=presence)
        if not reply:
            return None
        said = self.client.clock.now()
        answer_id = await self.client.answer(ev, reply)
        if self.follow_up and not ev.reply_to and reply.rstrip().endswith("?"):
            self.asking[answer_id] = ev.room
            while len(self.asking) > 64:
                self.asking.pop(next(iter(self.asking)))
        turn = Turn(ev.room, ev.text, reply, ev.speaker, ev.utterance_id, ev.t1, received, said, answer_id)
        self.turns.append(turn)
        del self.turns[:-200]
        if self.on_turn is not None:
            self.on_turn(turn)
        return turn


async def run_builtin_agent(
    address: Any,
    *,
    clock: Any = None,
    rooms: list[str] | None = None,
    since: int | None = None,
    on_turn: Callable[[Turn], None] | None = None,
    stop: asyncio.Event | None = None,
    name: str = "builtin-agent",
    turns: list[Turn] | None = None,
) -> list[Turn]:
    """Connect to the hub at ``address`` (string or ``Endpoints``) and answer until cancelled or ``stop``.

    Returns the turns answered; pass ``turns`` to watch them while it runs (the demo's breakdown).
    """
    from sensorium.pipeline.client import Client

    async with Client(address, name=name, clock=clock) as client:
        if not await client.wait_connected(10):
            raise ConnectionError(f"hub at {address} is not answering")
        loop = AgentLoop(client, rooms=rooms, on_turn=on_turn)
        if turns is not None:
            loop.turns = turns
        await loop.run(since=since, stop=stop)
        return loop.turns
