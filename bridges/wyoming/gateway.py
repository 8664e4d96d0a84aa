"""The Wyoming gateway's bus side: Home Assistant's requests and the stages' answers meet here.

It loads no model: the audio and text of Home Assistant's requests go over the bus to the stages the
deployment runs, wherever they are placed, and their answers come back over the bus
(``bridges.wyoming.bus``). :mod:`bridges.wyoming.server` opens the ports on top of it.

Requests and the bus meet here:

* ``requests``: speech-to-text requests by ``request_id`` (the stt stage's transcripts carry it);
* ``questions``: the texts Home Assistant was given recently, with the room and speaker behind them,
  so a conversation request for that text can say where it comes from and who asked;
* stream slots: the audio of Home Assistant's requests is published as streams
  ``<name>-wake-N`` / ``<name>-stt-N`` of the ``[wyoming] room``; a slot is reused, and its clock jumps
  on reuse so the stages restart the stream's state.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sensorium.bridges.wyoming.audio import RATE
from sensorium.bridges.wyoming.bus import Bus
from sensorium.bridges.wyoming.offer import Offer
from sensorium.bridges.wyoming.relayed import RelayedClaims
from sensorium.pipeline.bus import Endpoints
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import Deployment, WyomingConfig, parse_duration
from sensorium.pipeline.messages import AudioChunk as BusChunk
from sensorium.pipeline.messages import InputError, Listen, Message, Say, SpeakerIdentified, Transcript, TtsAudio
from sensorium.pipeline.security import CurveKeys

log = logging.getLogger("sensorium.wyoming")

MATCH_BYTES = 6400
AHEAD_S = 1.0
"""Home Assistant may send audio faster than real time; its stamps run at most this far ahead of the hub
clock (the workers refuse input stamped from further in the future, ``[workers] max_future``)."""
"""Audio (0.2 s) compared to recognise a satellite's stream coming back through Home Assistant's STT."""
QUESTION_TTL = 120.0
"""How long a transcript given to Home Assistant is remembered for its conversation request."""


def norm_text(text: str) -> str:
    """Text as a lookup key: lower case, words only."""
    return " ".join(re.findall(r"[\w']+", text.lower()))


@dataclass
class Request:
    """One speech-to-text request: the stt stage's transcripts for it, as they arrive."""

    request_id: str
    room: str
    final: Transcript | None = None
    items: list[Transcript] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    _queues: list[asyncio.Queue[Transcript]] = field(default_factory=list)

    def add(self, tr: Transcript) -> None:
        if self.final is not None:
            return
        self.items.append(tr)
        if tr.final:
            self.final = tr
        for q in self._queues:
            q.put_nowait(tr)

    def subscribe(self) -> asyncio.Queue[Transcript]:
        """A queue of this request's transcripts, starting with those already here."""
        q: asyncio.Queue[Transcript] = asyncio.Queue()
        for tr in self.items:
            q.put_nowait(tr)
        self._queues.append(q)
        return q


@dataclass
class Answer:
    """An answer of the agent to Home Assistant's conversation request, and the tts stage's audio of it."""

    answer_id: str
    text: str = ""
    complete: bool = False
    audio: list[TtsAudio] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Question:
    """Where a text Home Assistant got from us came from."""

    room: str
    speaker: str | None
    score: float
    at: float = field(default_factory=time.monotonic)


@dataclass
class Metrics:
    """The gateway's own cost, for the benchmark."""

    chunk_us: deque[float] = field(default_factory=lambda: deque(maxlen=20000))
    """Microseconds to take one Wyoming audio chunk in and publish it (convert, cut, encode, send)."""
    answer_us: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    """Microseconds from a stage's answer leaving the bus socket to its Wyoming event written."""
    request_us: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    """Microseconds of gateway work per request outside audio chunks (set-up, claim, answer, clean-up)."""
    cached_answers: int = 0
    """Synthesis requests answered with audio already made for the agent's answer."""
    relayed_commands: int = 0
    """Speech-to-text requests recognised as a command another client claimed (answered without a second
    transcription)."""


class PoolFull(RuntimeError):
    """Every stream name is in use: too many requests at once."""


class StreamPool:
    """Names for the audio streams of Home Assistant's requests, reused; each reuse starts later in time.

    The stages accept only the names the deployment lists (``WyomingConfig.stream_names``), so there
    are at most ``limit`` of each kind.
    """

    def __init__(self, prefix: str, clock: Clock, limit: int = 8) -> None:
        self.prefix = prefix
        self.clock = clock
        self.limit = limit
        self._used: set[str] = set()
        self._end: dict[str, float] = {}

    def acquire(self, kind: str) -> tuple[str, float]:
        """A free stream name and the hub time its first sample gets."""
        i = 0
        while f"{self.prefix}-{kind}-{i}" in self._used:
            i += 1
        if i >= self.limit:
            raise PoolFull(f"{self.limit} {kind} requests are running already ([wyoming] max_streams)")
        name = f"{self.prefix}-{kind}-{i}"
        self._used.add(name)
        # The stages restart a stream's state on a jump in capture time: make sure there is one.
        return name, max(self.clock.now(), self._end.get(name, 0.0) + 0.5)

    def release(self, name: str, end: float) -> None:
        self._used.discard(name)
        self._end[name] = max(end, self._end.get(name, 0.0))


class HasRun(Protocol):
    """A room satellite as the gateway sees it: its current pipeline run (``head``, ``linked``, …), if any."""

    run: Any


class Gateway:
    """The bus side of Home Assistant's voice: its requests, the stages' answers routed to them, stream names.

    :class:`bridges.wyoming.server.Server` opens the ports on top of it; handlers and satellites use it.
    """

    def __init__(
        self,
        deployment: Deployment,
        offer: Offer,
        *,
        config: WyomingConfig | None = None,
        endpoints: Endpoints | None = None,
        clock: Clock | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        cfg = config or deployment.wyoming
        if cfg is None:
            raise ValueError(f"{deployment.path}: no [wyoming] table")
        self.deployment = deployment
        self.config = cfg
        self.offer = offer
        self.name = cfg.name
        self.room = cfg.room or next(iter(deployment.rooms), "")
        self.timeout = parse_duration(cfg.timeout, "[wyoming] timeout")
        self.block = 16 * cfg.block_ms
        self.clock = clock or Clock()
        endpoints = endpoints or Endpoints.from_address(deployment.hub.address)
        self.speaker_wait = parse_duration(cfg.speaker_wait, "[wyoming] speaker_wait")
        prefixes = ["wake/", "transcript/", "speaker/", "say/", "tts_audio/-/", "error/", "arbitration/", "playback/"]
        prefixes += ["listen/"]
        # Every room with a microphone: its satellite's ring, and the commands other clients claim there.
        mic_rooms = {e.room for e in deployment.edges.values() if e.microphone is not None} | set(cfg.satellites)
        prefixes += [f"audio/{room}/" for room in sorted(mic_rooms)]
        self.bus = Bus(
            endpoints,
            cfg.name,
            prefixes,
            clock=self.clock,
            curve=curve,
            heartbeat=parse_duration(deployment.hub.heartbeat),
        )
        self.pool = StreamPool(cfg.name, self.clock, cfg.max_streams)
        self.metrics = Metrics()
        self.requests: dict[str, Request] = {}
        self.questions: OrderedDict[str, Question] = OrderedDict()
        self.replies: dict[str, asyncio.Queue[Say]] = {}
        """Conversation requests waiting for the agent: reply_to token → its ``Say`` pieces."""
        self.audio: dict[str, list[asyncio.Queue[Message]]] = {}
        """Synthesis requests waiting for the tts stage: answer id → queues of its ``TtsAudio`` (or ``InputError``)."""
        self.answers: OrderedDict[str, Answer] = OrderedDict()
        """The agent's recent answers to Home Assistant's conversation requests, with their audio (see ``Answer``)."""
        self.speakers: OrderedDict[str, SpeakerIdentified] = OrderedDict()
        """Recent speaker events by utterance id (a final that came without its speaker may wait for one)."""
        self._speaker_waits: dict[str, asyncio.Future[SpeakerIdentified]] = {}
        self.satellites: dict[str, HasRun] = {}
        """The room satellites (the server makes them): their runs are matched to relayed STT requests."""
        self.relayed = RelayedClaims(lambda rid: rid in self.requests, MATCH_BYTES)
        """Commands the ESPHome device (or another client) claimed; Home Assistant relays them to our STT."""
        self._closers: list[Any] = []

    # --------------------------------------------------------------------------------- life

    async def connect(self) -> None:
        """Connect to the hub and route its messages to the requests (the server opens the ports)."""
        await self.bus.start()
        self._closers += [
            self.bus.listen(Transcript, self._on_transcript),
            self.bus.listen(SpeakerIdentified, self._on_speaker),
            self.bus.listen(Say, self._on_say),
            self.bus.listen(TtsAudio, self._on_tts),
            self.bus.listen(InputError, self._on_error),
            self.bus.listen(BusChunk, self.relayed.on_audio),
            self.bus.listen(Listen, self._on_listen),
        ]

    async def disconnect(self) -> None:
        """Stop routing and leave the hub."""
        for close in self._closers:
            close()
        self._closers.clear()
        await self.bus.close()

    # ------------------------------------------------------------------------------ requests

    async def publish_audio(self, node: str, t: float, block: bytes, live: Callable[[], bool] | None = None) -> None:
        """Publish a block of Home Assistant's 16 kHz audio as stream ``node``, stamped ``t``.

        Audio that arrives faster than real time is held back until its stamp is within ``AHEAD_S``
        of the clock: the stamps stay contiguous and never lie about the future. A block whose request
        ended while it was held back (``live()`` false: answered, so its stream name may be the next
        request's already) is dropped: sent late, it would land inside the next request's audio.
        """
        ahead = t - self.clock.now() - AHEAD_S
        if ahead > 0:
            await asyncio.sleep(ahead)
            if live is not None and not live():
                return
        await self.bus.publish(BusChunk(time=t, room=self.room, source=node, rate=RATE, data=block))

    def new_request(self, request_id: str, room: str) -> Request:
        self._expire()
        req = self.requests[request_id] = Request(request_id, room)
        return req

    def remember(self, text: str, room: str, speaker: str | None, score: float) -> None:
        """Home Assistant got ``text`` from us: a conversation request for it comes from ``room``/``speaker``."""
        q = Question(room, speaker, score)
        for key in {text.strip(), norm_text(text)}:
            self.questions[key] = q
            self.questions.move_to_end(key)
        while len(self.questions) > 64:
            self.questions.popitem(last=False)

    def recall(self, text: str) -> Question | None:
        """Where a question Home Assistant asks came from (None: not from us, or too long ago)."""
        for key in (text.strip(), norm_text(text)):
            q = self.questions.get(key)
            if q is not None and time.monotonic() - q.at < QUESTION_TTL:
                return q
        return None

    def _on_listen(self, msg: Message) -> None:
        claim = self.relayed.on_listen(msg)
        if claim is not None:  # its transcripts are kept from now on, for the STT request that may relay it
            self.new_request(claim.request_id, claim.room)

    def match_satellite(self, head: bytes) -> Any:
        """The satellite run or another client's claimed command whose audio ``head`` is (Home Assistant
        relaying it to our STT), or None."""
        best = None
        for sat in self.satellites.values():
            run = sat.run
            if run is None or run.linked or len(run.head) < min(len(head), MATCH_BYTES):
                continue
            n = min(len(head), len(run.head), MATCH_BYTES)
            if n >= 3200 and len(set(head[:n])) > 1 and run.head[:n] == head[:n]:
                if best is None or run.started > best.started:
                    best = run
        if best is None and len(head) >= 3200 and len(set(head)) > 1:
            best = next((c for c in reversed(self.relayed.candidates()) if c.matches(head[:MATCH_BYTES])), None)
        return best

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [r for r, q in self.requests.items() if now - q.created > 300.0]:
            del self.requests[rid]

    # ------------------------------------------------------------------------ bus → requests

    def _on_transcript(self, msg: Message) -> None:
        if isinstance(msg, Transcript) and msg.request_id:
            req = self.requests.get(msg.request_id)
            if req is not None:
                req.add(msg)

    def _on_speaker(self, msg: Message) -> None:
        if isinstance(msg, SpeakerIdentified) and msg.utterance_id:
            self.speakers[msg.utterance_id] = msg
            while len(self.speakers) > 64:
                self.speakers.popitem(last=False)
            fut = self._speaker_waits.get(msg.utterance_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def speaker_of(self, final: Transcript) -> SpeakerIdentified | None:
        """The speaker event of ``final``'s utterance, waiting up to ``speaker_wait`` for it when a speaker
        stage is up (the final went out without it: speaker ID was a little late), else None."""
        uid = final.utterance_id
        got = self.speakers.get(uid)
        if got is not None or self.speaker_wait <= 0 or not uid or not self.bus.stage_up("speaker"):
            return got
        fut = self._speaker_waits[uid] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.speaker_wait):
                return await fut
        except TimeoutError:
            return None
        finally:
            self._speaker_waits.pop(uid, None)

    def _on_say(self, msg: Message) -> None:
        if isinstance(msg, Say) and msg.reply_to:
            q = self.replies.get(msg.reply_to)
            if q is not None:
                q.put_nowait(msg)
            if msg.reply_to.startswith(f"{self.name}-") and not msg.voice:
                ans = self.answers.get(msg.answer_id)
                if ans is None:
                    ans = self.answers[msg.answer_id] = Answer(msg.answer_id)
                    while len(self.answers) > 16:
                        self.answers.popitem(last=False)
                ans.text += msg.text
                ans.complete = not msg.more

    def _on_tts(self, msg: Message) -> None:
        if isinstance(msg, TtsAudio):
            ans = self.answers.get(msg.answer_id)
            if ans is not None:
                ans.audio.append(msg)
            for q in self.audio.get(msg.answer_id, ()):
                q.put_nowait(msg)

    def spoken(self, text: str) -> Answer | None:
        """The agent's answer whose audio the tts stage is making (or made) for ``text``, if any.

        The agent's ``Say`` to Home Assistant (``reply_to``) is voiced by the tts stage for no room while
        Home Assistant is still processing its reply; when it then asks our TTS for that very text, the
        audio is already there.
        """
        key = norm_text(text)
        for ans in reversed(self.answers.values()):
            if ans.complete and norm_text(ans.text) == key and time.monotonic() - ans.at < 60.0:
                return ans
        return None

    def _on_error(self, msg: Message) -> None:
        # The tts stage names the Say it rejected by topic; each synthesis request has its own source.
        if isinstance(msg, InputError) and msg.input_topic.startswith("say/"):
            source = msg.input_topic.rsplit("/", 1)[-1]
            prefix = f"{self.name}-tts-"
            if source.startswith(prefix):
                for q in self.audio.get(source[len(prefix) :], ()):
                    q.put_nowait(msg)
