"""Arbiter stage: room arbitration between nodes that hear one wake word, and barge-in.

**Arbitration.** A wake word spoken in an open-plan house is often heard by two or three nodes.
The first detection of a word opens a window (``window_ms``, default 400 ms); every detection of
the same word in it is a candidate. When the window closes the best candidate (highest wake score,
then highest audio level) wins and a ``WakeArbitrated`` event names the winner and the nodes that
must stand down. Scores within ``score_tie`` of the best count as equal: a wake model's score at its
threshold crossing says little about distance (measured on openWakeWord "hey jarvis": the node 14 dB
farther away often scores higher), while the level of the wake phrase does. The STT stage opens an
utterance on every raw wake (so arbitration adds nothing to the voice path) and drops the utterances
of the nodes that stand down.

**Barge-in.** A wake word in a room that is playing an answer stops it at once (``StopPlayback``
with reason "barge-in", published without waiting for the window): the edge goes quiet, the TTS
stage cancels the rest of the answer, and the edge's ``PlaybackStatus`` "stopped" tells the agent
what was said before the cut. Answers sent to the room (``Say``) that have not started playing yet
are cancelled too: the person is asking something new, an older answer must not follow it. Any room
that hears the wake word stops at once (the budget does not allow waiting for the window), so a
far node that loses the arbitration also stops its own playback.

**The room's own speech must not wake it.** While a room plays (and ``echo_tail_ms`` after, for
reverb and the status's travel time) its wake detections must pass two checks:

1. *text echo reference*: if the text being played contains the wake word ("… say hey Jarvis …")
   the detection is the loudspeaker, not a person, and is suppressed. The arbiter knows the text
   from the ``Say`` commands and the edge's ``PlaybackStatus``; this catches exactly the case a
   threshold cannot (TTS saying the wake word clearly and loudly).
2. *higher threshold*: otherwise the detection needs ``barge_in_threshold`` (default 0.7, above
   the wake stage's usual 0.5), since TTS speech that merely resembles the wake word scores low.

Suppressed detections are reported as losers in ``echo`` so the STT stage drops their utterances.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

from sensorium.pipeline.messages import Message, PlaybackStatus, Say, StopPlayback, WakeArbitrated, WakeDetected
from sensorium.pipeline.stage import Stage, StageContext, StageOptions

_FILLER = {"hey", "hi", "ok", "okay", "hello", "v0", "v1", "v2"}


def wake_phrase_words(word: str) -> list[str]:
    """Distinctive words of a wake word model name: "hey_jarvis_v0.1" → ["jarvis"]."""
    base = re.sub(r"_v\d+(\.\d+)*$", "", word.lower())
    parts = [p for p in re.split(r"[^a-z0-9]+", base) if p]
    distinct = [p for p in parts if p not in _FILLER]
    return distinct or parts


def says_wake_word(text: str, word: str) -> bool:
    """True if ``text`` contains the wake word's distinctive words (in order)."""
    tokens = re.findall(r"[a-z0-9]+", text.lower())
    want = wake_phrase_words(word)
    if not want:
        return False
    for i in range(len(tokens) - len(want) + 1):
        if tokens[i : i + len(want)] == want:
            return True
    return False


def rank(candidates: list[WakeDetected], score_tie: float) -> list[WakeDetected]:
    """Best first: scores within ``score_tie`` of the best are equal and the louder wins."""
    if not candidates:
        return []
    top = max(m.score for m in candidates)
    tied = sorted((m for m in candidates if m.score >= top - score_tie), key=lambda m: (m.level, m.score), reverse=True)
    rest = sorted((m for m in candidates if m.score < top - score_tie), key=lambda m: (m.score, m.level), reverse=True)
    return tied + rest


class ArbiterOptions(StageOptions):
    """``[stages.arbiter]``."""

    window_ms: int = 400
    """Detections of one wake word within this window are one utterance heard by several nodes."""
    score_tie: float = 0.15
    """Wake scores this close to the best count as a tie, decided by audio level."""
    barge_in: bool = True
    """Stop a room's playback when its wake word is heard there."""
    barge_in_threshold: float = 0.7
    """Wake score needed in a room that is playing (its own speech must not wake it)."""
    echo_text: bool = True
    """Suppress a playing room's detections while the played answer itself contains the wake word."""
    echo_tail_ms: int = 500
    """A room counts as playing this long after its playback ended (reverb, status delay)."""


@dataclass
class _Playing:
    answer_id: str
    since: float
    until: float = 0.0
    """Local monotonic time playback ended (0 while playing)."""


@dataclass
class _Window:
    word: str
    opened: float
    first_time: float
    candidates: dict[str, WakeDetected] = field(default_factory=dict)
    echo: dict[str, WakeDetected] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class ArbiterStage(Stage):
    """Picks the room that answers a wake word, and stops playback on barge-in."""

    Options = ArbiterOptions
    name = "arbiter"
    consumes: ClassVar[tuple[type[Message], ...]] = (
        WakeDetected,
        PlaybackStatus,
        Say,
    )
    emits: ClassVar[tuple[type[Message], ...]] = (
        WakeArbitrated,
        StopPlayback,
    )
    droppable = False
    default_budget_ms = 100.0

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: ArbiterOptions = ctx.options
        self.playing: dict[str, _Playing] = {}
        """Room → what it plays (or played until ``until``)."""
        self.texts: OrderedDict[str, str] = OrderedDict()
        """Answer id → its text so far (from ``Say``), for the text echo reference."""
        self.pending: dict[str, dict[str, float]] = {}
        """Room → answers sent to it (``Say``) that have not ended yet → when first seen (monotonic)."""
        self.windows: dict[str, _Window] = {}
        self.decisions: list[WakeArbitrated] = []
        """The last 100 decisions (for tests and ``sensorium top``)."""
        self.barge_ins: list[tuple[str, str, float]] = []
        """The last 100 barge-ins: (room, answer id, seconds from wake arrival to the stop being published)."""

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, Say):
            self._on_say(msg)
        elif isinstance(msg, PlaybackStatus):
            self._on_playback(msg)
        elif isinstance(msg, WakeDetected):
            await self._on_wake(msg)

    async def stop(self) -> None:
        for w in list(self.windows.values()):
            if w.task is not None:
                w.task.cancel()
            await self._decide(w)

    # ----------------------------------------------------------------------------------- state

    def _on_say(self, msg: Say) -> None:
        if not msg.answer_id or msg.reply_to:
            return  # an answer for a client (reply_to) plays in no room
        self.texts[msg.answer_id] = self.texts.get(msg.answer_id, "") + msg.text
        self.texts.move_to_end(msg.answer_id)
        while len(self.texts) > 64:
            self.texts.popitem(last=False)
        if msg.room:
            room = self.pending.setdefault(msg.room, {})
            room.setdefault(msg.answer_id, time.monotonic())
            for aid in [a for a, t in room.items() if time.monotonic() - t > 120.0]:
                del room[aid]  # never played (rejected, or its edge is down)

    def _on_playback(self, msg: PlaybackStatus) -> None:
        if msg.state == "started":
            self.playing[msg.room] = _Playing(msg.answer_id, time.monotonic())
        else:
            self.pending.get(msg.room, {}).pop(msg.answer_id, None)
            cur = self.playing.get(msg.room)
            if cur is not None and cur.answer_id == msg.answer_id:
                cur.until = time.monotonic()

    def playing_in(self, room: str) -> _Playing | None:
        """What ``room`` is playing now (or just finished, within the echo tail)."""
        p = self.playing.get(room)
        if p is None:
            return None
        if p.until and time.monotonic() - p.until > self.opts.echo_tail_ms / 1000:
            del self.playing[room]
            return None
        return p

    # ------------------------------------------------------------------------------------ wake

    async def _on_wake(self, msg: WakeDetected) -> None:
        arrived = time.monotonic()
        node = msg.node or msg.source
        playing = self.playing_in(msg.room)
        echo = False
        if playing is not None:
            text = self.texts.get(playing.answer_id, "")
            if self.opts.echo_text and says_wake_word(text, msg.word):
                echo = True
                self.ctx.log.info("arbiter: %s wake in %s ignored: the answer playing says it", node, msg.room)
            elif msg.score < self.opts.barge_in_threshold:
                echo = True
                self.ctx.log.info(
                    "arbiter: %s wake in %s ignored during playback (score %.2f < %.2f)",
                    node,
                    msg.room,
                    msg.score,
                    self.opts.barge_in_threshold,
                )
        if not echo and self.opts.barge_in:
            # The person wants to talk now: stop what plays and what is still on its way to the room.
            active = set(self.pending.pop(msg.room, {}))
            if playing is not None and not playing.until:
                active.add(playing.answer_id)
            if active:
                aid = next(iter(active)) if len(active) == 1 else ""
                await self.ctx.publish(StopPlayback(room=msg.room, time=msg.time, answer_id=aid, reason="barge-in"))
                self.barge_ins.append((msg.room, aid, time.monotonic() - arrived))
                del self.barge_ins[:-100]
        window = self.windows.get(msg.word)
        if window is not None and msg.time - window.first_time > self.opts.window_ms / 1000:
            # A detection long after the window's first one is a new utterance: settle the old one first.
            if window.task is not None:
                window.task.cancel()
            await self._decide(window)
            window = None
        if window is None:
            window = _Window(msg.word, arrived, msg.time)
            self.windows[msg.word] = window
            window.task = asyncio.create_task(self._close_later(window), name=f"arbiter-{msg.word}")
        bucket = window.echo if echo else window.candidates
        best = bucket.get(node)
        if best is None or (msg.score, msg.level) > (best.score, best.level):
            bucket[node] = msg

    async def _close_later(self, window: _Window) -> None:
        await asyncio.sleep(self.opts.window_ms / 1000)
        await self._decide(window)

    async def _decide(self, window: _Window) -> None:
        if self.windows.get(window.word) is window:
            del self.windows[window.word]
        else:
            return  # already decided
        ranked = rank(list(window.candidates.values()), self.opts.score_tie)
        winner = ranked[0] if ranked else None
        losers = ranked[1:]
        echo = [m for n, m in window.echo.items() if n not in window.candidates]
        decision = WakeArbitrated(
            room=winner.room if winner else "",
            time=winner.time if winner else window.first_time,
            word=window.word,
            node=(winner.node or winner.source) if winner else "",
            score=winner.score if winner else 0.0,
            level=winner.level if winner else 0.0,
            wake_time=winner.time if winner else window.first_time,
            losers=[m.node or m.source for m in losers + echo],
            loser_rooms=[m.room for m in losers + echo],
            echo=[m.node or m.source for m in echo],
        )
        self.decisions.append(decision)
        del self.decisions[:-100]
        await self.ctx.publish(decision)
