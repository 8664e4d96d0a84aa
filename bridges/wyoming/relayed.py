"""Rooms' commands that another client claimed and Home Assistant relays to our speech-to-text.

The ESPHome device (another process) streams a room's command to Home Assistant, whose pipeline then sends
that audio to our Wyoming STT service. The stt stage is already transcribing the command for the device's
claim (``Listen`` with the device's ``request_id``); transcribing Home Assistant's copy again costs the time
of a second utterance. The gateway hears the claim on the bus, rebuilds the audio the device sent from the
room's own chunks (the same cut at the wake time as :mod:`bridges.rooms`), and its STT handler recognises
Home Assistant's copy by its first bytes, as it does its own satellites', and answers with the claim's
transcript.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sensorium.pipeline.messages import AudioChunk, Listen, Message

RATE = 16000
RING_S = 3.0
"""Room audio kept per microphone for a claim that names a time before it arrived."""
LEAD_S = 0.5
"""Audio kept from before a claim's time (a client may start its stream with a chunk that began earlier)."""
KEEP = 16
"""Claims remembered at once (the newest)."""
TTL_S = 30.0
"""A claim Home Assistant has not relayed for this long is forgotten."""


@dataclass
class Claim:
    """A command another client claimed: the room's audio around where its stream to Home Assistant starts."""

    room: str
    """The room."""
    node: str
    """The microphone node whose audio it streams."""
    wake_time: float
    """Where its audio starts (hub clock): the wake word, or when a conversation began listening."""
    request_id: str
    """The claim's request: the stt stage's transcripts carry it."""
    head_bytes: int
    """How much of the command's start must be here before Home Assistant's copy can be recognised."""
    audio: bytearray = field(default_factory=bytearray)
    """The node's audio (16-bit mono at 16 kHz) from ``LEAD_S`` before the wake time on (``limit`` bytes)."""
    linked: bool = False
    """Home Assistant's copy was recognised (one STT request per claim)."""
    started: float = field(default_factory=time.monotonic)
    """When the claim was heard (monotonic)."""

    def take(self, t: float, data: bytes) -> None:
        """Add a chunk of the node's audio stamped ``t``."""
        if len(self.audio) >= self.limit or t + len(data) / (2 * RATE) <= self.wake_time - LEAD_S:
            return
        part = data[max(0, round((self.wake_time - LEAD_S - t) * RATE)) * 2 :]
        self.audio += part[: self.limit - len(self.audio)]

    @property
    def limit(self) -> int:
        return round(2 * LEAD_S * RATE) * 2 + self.head_bytes  # the lead, the head, and as much slack again

    def matches(self, head: bytes) -> bool:
        """``head`` (the first audio of an STT request) is where this command starts.

        The client's cut at the start may differ by part of a chunk (a run from the ring starts at the
        wake time, one that starts listening now starts with the next whole chunk): the head is looked
        for anywhere in the audio kept, sample-aligned.
        """
        at = self.audio.find(head)
        while at >= 0 and at % 2:
            at = self.audio.find(head, at + 1)
        return at >= 0


class RelayedClaims:
    """Other clients' claims on the rooms' microphones, with the start of each claimed command."""

    def __init__(self, own: Callable[[str], bool], head_bytes: int) -> None:
        self.own = own
        """True for a request id of this gateway (its own claims are its satellites' and services')."""
        self.head_bytes = head_bytes
        self.rings: dict[tuple[str, str], deque[tuple[float, bytes]]] = {}
        self.claims: OrderedDict[str, Claim] = OrderedDict()

    def on_audio(self, msg: Message) -> None:
        if not isinstance(msg, AudioChunk) or msg.rate != RATE or msg.channels != 1:
            return
        ring = self.rings.setdefault((msg.room, msg.source), deque())
        ring.append((msg.time, msg.data))
        while ring and ring[0][0] < msg.time - RING_S:
            ring.popleft()
        for claim in self.claims.values():
            if claim.room == msg.room and claim.node == msg.source:
                claim.take(msg.time, msg.data)

    def on_listen(self, msg: Message) -> Claim | None:
        """A new claim by another client (None: not one, or this gateway's own)."""
        if not isinstance(msg, Listen) or msg.action != "open" or not msg.request_id or self.own(msg.request_id):
            return None
        if msg.request_id in self.claims:
            return None
        claim = Claim(msg.room, msg.node, msg.time, msg.request_id, self.head_bytes)
        for t, data in self.rings.get((msg.room, msg.node), ()):
            claim.take(t, data)
        self.claims[msg.request_id] = claim
        now = time.monotonic()
        while self.claims and (len(self.claims) > KEEP or now - next(iter(self.claims.values())).started > TTL_S):
            self.claims.popitem(last=False)
        return claim

    def candidates(self) -> list[Claim]:
        """Claims not yet recognised."""
        return [c for c in self.claims.values() if not c.linked]
