"""The reasoning loop's API: sequenced events in, ``say`` out.

``Client.events()`` yields every event exactly once, in hub order: it listens to the hub's event
stream and asks the hub's log for anything it missed (on start with ``since``, after a
reconnect, or when it sees a gap in the sequence numbers). Pass the last ``seq`` you handled as
``since`` after a restart and nothing is lost or repeated. Events the log no longer holds (the
subscriber was away longer than the log's bound) are announced in their place by an
``EventsLost`` item whose ``seq`` is the last one lost, so persisting and resuming stay correct.

Answer a final transcript with ``answer``: it is spoken in the transcript's room, unless the question
came from a client that speaks the answer itself (``reply_to``: Home Assistant's conversation agent
through the Wyoming gateway). Transcripts with ``request_id`` were asked for by such a client (its
speech-to-text) and are not questions for the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import zmq

from sensorium.pipeline.bus import Endpoints, Publisher, context
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.codec import CodecError, from_json
from sensorium.pipeline.messages import (
    OLD_KINDS,
    ControlError,
    Event,
    EventsLost,
    EventsReply,
    EventsRequest,
    Listen,
    PlacementRequest,
    PlacementTable,
    Presence,
    Say,
    SnapshotRequest,
    StartConversation,
    StopPlayback,
    Transcript,
)
from sensorium.pipeline.node import NodeLink
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.client")
NEW_KINDS = {old: new for new, old in OLD_KINDS.items()}


def prefixes_for(types: Iterable[str] | None, rooms: Iterable[str] | None = None) -> list[str]:
    """Topic prefixes for event ``types`` (public names, which are their topic kinds) in ``rooms``.

    An old topic kind (``status`` for ``node_status``) is still understood during the transition."""
    kinds = [NEW_KINDS.get(t, t) for t in types] if types else [""]
    rooms = list(rooms or [])
    if not rooms:
        return [f"{k}/" if k else "" for k in kinds]
    return [f"{k}/{r}/" for k in kinds for r in rooms]


class Client:
    """Connect to a hub as the reasoning loop (or any event consumer)."""

    def __init__(
        self,
        address: str | Endpoints,
        *,
        name: str = "",
        curve: CurveKeys | None = None,
        clock: Clock | None = None,
        heartbeat: float = 0.5,
    ) -> None:
        self.endpoints = address if isinstance(address, Endpoints) else Endpoints.from_address(address)
        self.name = name or f"client-{uuid.uuid4().hex[:8]}"
        self.curve = curve
        self.clock = clock or Clock()
        self.link = NodeLink(self.name, "client", self.endpoints, clock=self.clock, curve=curve, heartbeat=heartbeat)
        self._publisher: Publisher | None = None
        self.last_seq = 0
        """Hub sequence number of the last event yielded."""
        self.epoch = ""
        """The epoch of the hub's log that ``last_seq`` counts in (persist it with the number)."""

    async def __aenter__(self) -> Client:
        await self.link.start()
        self._publisher = Publisher(self.endpoints, curve=self.curve)
        await self._publisher.wait_ready()  # so a command sent at once is not dropped by the PUB socket
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect."""
        await self.link.close()
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    async def wait_connected(self, timeout: float = 10.0, *, raise_refused: bool = False) -> bool:
        """Wait until the hub answers (``NodeLink.wait_connected``)."""
        return await self.link.wait_connected(timeout, raise_refused=raise_refused)

    # ---------------------------------------------------------------- events

    async def _backlog(self, since: int, prefixes: list[str]) -> list[Event]:
        """What the log holds after ``since``, with ``EventsLost`` items in place of what it no longer holds.

        If the log is another one than ``since`` counts in (another epoch, or it ends before ``since``), the
        client re-bases: an ``EventsLost`` with the new ``epoch`` whose ``seq`` is the new base comes first,
        ``last_seq`` is set to it, and the new log's events follow."""
        out: list[Event] = []
        while True:
            reply = await self.link.request(EventsRequest(since=since, prefixes=[p for p in prefixes if p]), 10.0)
            if not isinstance(reply, EventsReply):
                raise RuntimeError(f"hub answered {type(reply).__name__} to an events request")
            batch: list[Event] = []
            other_epoch = bool(self.epoch and reply.epoch and reply.epoch != self.epoch)
            if other_epoch or reply.last_seq < since:
                base = reply.first_seq - 1
                log.warning(
                    "the hub's event log was replaced (epoch %s -> %s, it ends at %d; this client was at %d): "
                    "re-basing on the new log from %d; what happened in between is lost",
                    self.epoch or "?",
                    reply.epoch or "?",
                    reply.last_seq,
                    since,
                    base,
                )
                self.epoch = reply.epoch
                self.last_seq = since = base
                out.append(
                    EventsLost(
                        seq=base, time=self.clock.now(), source="hub", first_seq=0, last_seq=base, epoch=reply.epoch
                    )
                )
                continue
            self.epoch = reply.epoch or self.epoch
            if reply.first_seq > since + 1:
                log.warning("events %d..%d are no longer in the hub's log", since + 1, reply.first_seq - 1)
                batch.append(
                    EventsLost(
                        seq=reply.first_seq - 1,
                        time=self.clock.now(),
                        source="hub",
                        first_seq=since + 1,
                        last_seq=reply.first_seq - 1,
                    )
                )
            for raw in reply.events:
                try:
                    ev = from_json(raw)
                except CodecError as exc:
                    log.warning("skipping unreadable logged event: %s", exc)
                    continue
                batch.append(ev)  # type: ignore[arg-type]
            out.extend(batch)
            if not batch or batch[-1].seq >= reply.last_seq:
                return out
            since = max(since, batch[-1].seq)

    def _fresh(self, ev: Event) -> bool:
        """True (and ``last_seq`` moved) for an event after ``last_seq``, or a re-base announcement."""
        if isinstance(ev, EventsLost) and ev.epoch:
            return True  # last_seq was set to its base by _backlog
        if ev.seq > self.last_seq:
            self.last_seq = ev.seq
            return True
        return False

    async def events(
        self,
        types: Iterable[str] | None = None,
        *,
        rooms: Iterable[str] | None = None,
        since: int | None = None,
        epoch: str = "",
    ) -> AsyncIterator[Event]:
        """Yield events (optionally of ``types`` in ``rooms``) exactly once, oldest first.

        ``since=None`` starts with new events only; ``since=N`` first replays the log after N (``epoch``: the
        log's epoch N counts in, as ``self.epoch`` or an ``EventsLost.epoch`` said). Where the log no longer
        holds what was asked for, an ``EventsLost`` item stands in for it; one with ``epoch`` set says the log
        was replaced and numbering restarted at its ``seq``.
        """
        if epoch:
            self.epoch = epoch
        prefixes = prefixes_for(types, rooms)
        sock = context().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # events are at most 60 KiB of JSON
        if self.curve is not None:
            self.curve.apply_client(sock)
        for p in prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, p.encode())
        sock.connect(self.endpoints.events)
        try:
            if not await self.link.wait_connected(30.0):
                raise ConnectionError(f"hub at {self.endpoints.control} is not answering")
            if since is None:
                reply = await self.link.request(EventsRequest(since=2**62), 10.0)
                since = reply.last_seq if isinstance(reply, EventsReply) else 0
                self.epoch = reply.epoch if isinstance(reply, EventsReply) else ""
            self.last_seq = since
            await asyncio.sleep(0.05)  # let the SUB connect before the backlog closes the gap
            for ev in await self._backlog(self.last_seq, prefixes):
                if self._fresh(ev):
                    yield ev
            checked = time.monotonic()
            while True:
                try:
                    async with asyncio.timeout(2.0):
                        _, raw = await sock.recv_multipart()
                except TimeoutError:
                    # quiet or disconnected: ask the log whether we missed anything
                    checked = time.monotonic()
                    for ev in await self._backlog(self.last_seq, prefixes):
                        if self._fresh(ev):  # never twice, never backwards
                            yield ev
                    continue
                try:
                    ev = from_json(raw)
                except CodecError as exc:
                    log.warning("skipping unreadable event: %s", exc)
                    continue
                if ev.seq <= self.last_seq:
                    if time.monotonic() - checked > 2.0:  # old numbers for a while: a new log? the log says
                        checked = time.monotonic()
                        for missed in await self._backlog(self.last_seq, prefixes):
                            if self._fresh(missed):
                                yield missed
                    continue
                if ev.seq > self.last_seq + 1:
                    checked = time.monotonic()
                    for missed in await self._backlog(self.last_seq, prefixes):
                        if (isinstance(missed, EventsLost) and missed.epoch) or self.last_seq < missed.seq < ev.seq:
                            self._fresh(missed)
                            yield missed
                if self._fresh(ev):  # type: ignore[arg-type]
                    yield ev  # type: ignore[misc]
        finally:
            sock.close(0)

    async def backlog(
        self, since: int = 0, types: Iterable[str] | None = None, rooms: Iterable[str] | None = None
    ) -> list[Event]:
        """The hub log's events (optionally of ``types`` in ``rooms``) after ``since``, oldest first; an
        ``EventsLost`` item first where the log no longer holds some of them. ``events(since=…)`` continues live."""
        return await self._backlog(since, prefixes_for(types, rooms))

    async def snapshot(self) -> list[Presence]:
        """Who is where now: the latest presence of every person (and unknown counts) per room."""
        reply = await self.link.request(SnapshotRequest(), 10.0)
        if not isinstance(reply, EventsReply):
            raise RuntimeError(f"hub answered {type(reply).__name__} to a snapshot request")
        return [ev for ev in (from_json(r) for r in reply.events) if isinstance(ev, Presence)]

    async def placement(self, action: str = "get", worker: str = "") -> PlacementTable:
        """The hub's placement table (which worker serves each stream of a replicated stage), after
        ``action`` "drain" or "undrain" of ``worker`` if given; ``ValueError`` with the hub's reason if refused."""
        reply = await self.link.request(PlacementRequest(action=action, worker=worker), 10.0)  # type: ignore[arg-type]
        if isinstance(reply, ControlError):
            raise ValueError(reply.reason)
        if not isinstance(reply, PlacementTable):
            raise RuntimeError(f"hub answered {type(reply).__name__} to a placement request")
        return reply

    # ---------------------------------------------------------------- talking back

    async def say(self, room: str, text: str, voice: str | None = None, person: str = "", reply_to: str = "") -> str:
        """Speak ``text`` in ``room`` (or wherever ``person`` is when room is ""); returns the answer id.

        ``reply_to`` (a question's ``Transcript.reply_to``) sends the answer back to the client that asked
        instead: it speaks the answer itself, so no room's loudspeaker does. ``answer`` sets it for you.
        """
        answer_id = uuid.uuid4().hex[:12]
        await self._send(Say(room=room, text=text, voice=voice, person=person, answer_id=answer_id, reply_to=reply_to))
        return answer_id

    async def say_stream(
        self,
        room: str,
        pieces: AsyncIterable[str],
        voice: str | None = None,
        person: str = "",
        reply_to: str = "",
    ) -> str:
        """Stream an answer as it is generated (LLM tokens); TTS speaks each sentence as soon as it is complete."""
        answer_id = uuid.uuid4().hex[:12]
        common = {"room": room, "voice": voice, "person": person, "answer_id": answer_id, "reply_to": reply_to}
        async for piece in pieces:
            if piece:
                await self._send(Say(text=piece, more=True, **common))
        await self._send(Say(text="", more=False, **common))
        return answer_id

    async def answer(self, question: Transcript, text: str, voice: str | None = None) -> str:
        """Answer a final transcript: spoken in its room, or returned to the client that asked (``reply_to``)."""
        return await self.say(question.room, text, voice=voice, reply_to=question.reply_to)

    async def answer_stream(self, question: Transcript, pieces: AsyncIterable[str], voice: str | None = None) -> str:
        """``answer`` streamed piece by piece (see ``say_stream``)."""
        return await self.say_stream(question.room, pieces, voice=voice, reply_to=question.reply_to)

    async def start_conversation(self, room: str, text: str, person: str = "", cooldown: float = 3600.0) -> str:
        """Say ``text`` in ``room`` (or, with ``room=""``, wherever ``person`` is) and listen there without a
        wake word: the reply goes to Home Assistant's pipeline through the room's ESPHome device
        (``sensorium esphome`` must run). A person addressed within ``cooldown`` seconds is not addressed
        again (0: always). Returns the prompt's answer id."""
        answer_id = uuid.uuid4().hex[:12]
        await self._send(StartConversation(room=room, text=text, person=person, answer_id=answer_id, cooldown=cooldown))
        return answer_id

    async def stop(self, room: str, answer_id: str = "", reason: str = "agent") -> None:
        """Stop what is playing in ``room``."""
        await self._send(StopPlayback(room=room, answer_id=answer_id, reason=reason))

    async def listen(self, room: str, node: str, at: float, request_id: str, action: str = "open") -> None:
        """Claim the speech of ``node``'s microphone from hub time ``at`` on, without a wake word (``Listen``):
        its transcripts carry ``request_id``; "drop" gives the claim up."""
        await self._send(Listen(room=room, node=node, action=action, request_id=request_id), at)  # type: ignore[arg-type]

    async def _send(self, msg: Say | StopPlayback | Listen | StartConversation, at: float | None = None) -> None:
        if self._publisher is None:
            raise RuntimeError("use 'async with Client(...)' before sending")
        msg.time = self.clock.now() if at is None else at
        msg.source = self.name
        await self._publisher.publish(msg)


async def collect(agen: AsyncIterator[Event], n: int, timeout: float) -> list[Event]:
    """Take ``n`` events from ``agen`` or as many as arrive within ``timeout`` seconds."""
    out: list[Event] = []

    async def take() -> None:
        async for ev in agen:
            out.append(ev)
            if len(out) >= n:
                return

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await take()
    return out
