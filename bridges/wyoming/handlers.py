"""One Wyoming connection to a service port: wake word, speech-to-text, text-to-speech, conversation.

Each request becomes bus traffic for the stages the deployment runs, and their answers become Wyoming
events:

* ``detect`` + audio → the audio is published as a stream of the ``[wyoming] room``; each
  ``WakeDetected`` of that stream (the wake stage's refractory makes one per spoken wake word) →
  ``detection``; ``not-detected`` after ``audio-stop`` if none came. Every ``audio-start`` starts a
  fresh stream (the wake stage restarts its state).
* ``transcribe`` + audio → ``Listen`` opens an utterance at the first sample (no wake word: Home
  Assistant's stream is the command) and the audio follows; the stt stage endpoints it with its own
  VAD, so ``transcript`` may come before ``audio-stop``. Partials go out as ``transcript-start`` /
  ``transcript-chunk`` (words two partials agree on, never retracted), then ``transcript`` with the
  speaker in its data, then ``transcript-stop``. Audio that is a satellite's stream relayed by Home
  Assistant is recognised by its first 0.2 s and gets the transcript the stage already made for it.
* ``synthesize`` → a ``Say`` for no room (``reply_to``): the tts stage's audio comes back as one
  ``audio-start/chunk/stop``. Streaming: ``synthesize-start`` and ``synthesize-chunk`` stream text
  into one answer and every sentence comes back as its own audio stream while text still arrives (the
  compatibility ``synthesize`` in between is ignored); ``synthesize-stop`` flushes, then
  ``synthesize-stopped``. All sentences share one audio format (the tts stage's rate).
* ``transcript`` (conversation) → a final ``Transcript`` with ``reply_to`` for the agent attached to
  the hub, carrying the room and speaker the text came from; its answer → ``handled`` (streamed as
  ``handled-start/chunk/stop`` around it).

Bad input gets an ``error`` event that says what was wrong; a request that cannot go on is answered
with the error and its connection closed (Home Assistant's clients only stop reading on a result or a
closed connection). Other connections are never affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped
from wyoming.wake import Detect, Detection, NotDetected

from bridges.wyoming.audio import RATE, AudioFormatError, AudioIn, check_format
from bridges.wyoming.gateway import MATCH_BYTES, Answer, Gateway, PoolFull, Request
from pipeline.messages import InputError, Listen, Message, Say, TtsAudio, WakeDetected
from pipeline.messages import Transcript as BusTranscript

log = logging.getLogger("sensorium.wyoming")

ROLE_NAMES = {"wake": "wake word", "stt": "speech-to-text", "tts": "text-to-speech", "handle": "conversation"}
OUT_SAMPLES = 2048
"""Samples per ``audio-chunk`` sent to clients."""
WAKE_GRACE = 0.3
"""After ``audio-stop``, how long a detection of the last audio may still come before ``not-detected``."""
_PREFIX = re.compile(r"^\s*\[([^\]]{1,64})\]\s*")


def wake_key(name: str) -> str:
    """Wake word name as compared: "Hey Jarvis", "hey_jarvis_v0.1" → "hey_jarvis"."""
    return re.sub(r"_v\d+(\.\d+)*$", "", name.strip().lower().replace(" ", "_").replace("-", "_"))


def speakable(text: str) -> bool:
    """True if ``text`` has something a voice can say (a letter or a digit)."""
    return bool(re.search(r"[^\W_]", text))


def stable_words(prev: list[str], cur: list[str]) -> list[str]:
    """The words two consecutive partials agree on, from the start."""
    k = 0
    while k < min(len(prev), len(cur)) and prev[k].lower().strip(".,!?") == cur[k].lower().strip(".,!?"):
        k += 1
    return cur[:k]


class RequestFailed(Exception):
    """A request cannot go on; the text says why (sent as an ``error`` event)."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


class ServiceHandler(AsyncEventHandler):
    """A client of one service port (Home Assistant, or any Wyoming client)."""

    def __init__(self, gw: Gateway, roles: tuple[str, ...], reader: Any, writer: Any) -> None:
        super().__init__(reader, writer)
        self.gw = gw
        self.roles = roles
        self.info = gw.offer.info(roles).event()
        audio_roles = [r for r in roles if r in ("wake", "stt")]
        # A port with one audio role needs no detect/transcribe first (they are optional in the protocol).
        self.mode: str | None = audio_roles[0] if len(audio_roles) == 1 else None
        self.wake_names: list[str] | None = None
        self.language: str | None = None
        self.stream: WakeStream | SttStream | None = None
        """The audio stream being received (between audio-start and audio-stop)."""
        self.streams: list[WakeStream | SttStream] = []
        """Every stream of this connection still waiting for its answer."""
        self.tts: TtsStream | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        self._warned_no_start = False

    # ----------------------------------------------------------------------------- plumbing

    async def write(self, event: Event) -> None:
        """Send ``event``; a client that went away is not an error of ours."""
        if self.closed:
            return
        try:
            await self.write_event(event)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: client gone while writing %s: %s", self.gw.name, event.type, exc)
            self.closed = True

    async def fail(self, text: str, code: str) -> None:
        """Answer with an error and close this connection (the request cannot go on)."""
        log.warning("%s: %s (%s)", self.gw.name, text, code)
        await self.write(Error(text=text, code=code).event())
        self.closed = True
        with contextlib.suppress(Exception):
            await self.stop()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it ran: not "never awaited"
        return task

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except RequestFailed as exc:
            await self.fail(str(exc), exc.code)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: request failed", self.gw.name)
            await self.fail(f"sensorium gateway error: {type(exc).__name__}: {exc}", "internal")

    async def disconnect(self) -> None:
        """The client went away (maybe mid-stream): drop what it started."""
        self.closed = True
        self.stream = None
        for stream in self.streams:
            await stream.abandon()
        self.streams.clear()
        if self.tts is not None:
            self.tts.close()
            self.tts = None
        for task in list(self.tasks):
            task.cancel()

    # ------------------------------------------------------------------------------- events

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except RequestFailed as exc:
            await self.fail(str(exc), exc.code)
            return False
        except (KeyError, TypeError, ValueError) as exc:
            await self.write(
                Error(text=f"malformed {event.type!r} event: {type(exc).__name__}: {exc}", code="bad-event").event()
            )
            return True

    async def _handle(self, event: Event) -> bool:
        t = event.type
        if AudioChunk.is_type(t):
            return await self._audio_chunk(event)
        if Describe.is_type(t):
            await self.write(self.info)
            return True
        if Ping.is_type(t):
            await self.write(Pong(text=Ping.from_event(event).text).event())
            return True
        t0 = time.perf_counter()
        try:
            if Detect.is_type(t):
                self._need("wake", t)
                self._detect(Detect.from_event(event))
            elif Transcribe.is_type(t):
                self._need("stt", t)
                self._transcribe(Transcribe.from_event(event))
            elif AudioStart.is_type(t):
                await self._audio_start(AudioStart.from_event(event))
            elif AudioStop.is_type(t):
                if self.stream is not None:
                    stream, self.stream = self.stream, None
                    self.spawn(stream.stop())
            elif Synthesize.is_type(t):
                self._need("tts", t)
                if self.tts is None:  # during a stream it is the compatibility copy: ignored
                    self.spawn(self._synthesize(Synthesize.from_event(event)))
            elif SynthesizeStart.is_type(t):
                self._need("tts", t)
                await self._synthesize_start(SynthesizeStart.from_event(event))
            elif SynthesizeChunk.is_type(t):
                self._need("tts", t)
                if self.tts is None:
                    raise RequestFailed("synthesize-chunk without synthesize-start", "bad-order")
                await self.tts.feed(SynthesizeChunk.from_event(event).text)
            elif SynthesizeStop.is_type(t):
                self._need("tts", t)
                if self.tts is None:
                    raise RequestFailed("synthesize-stop without synthesize-start", "bad-order")
                await self.tts.finish()
                self.tts = None
            elif Transcript.is_type(t):
                self._need("handle", t)
                tr = Transcript.from_event(event)
                self.spawn(self._converse(tr.text, tr.context))
            else:
                log.debug("%s: ignoring %s event", self.gw.name, t)
        finally:
            self.gw.metrics.request_us.append((time.perf_counter() - t0) * 1e6)
        return not self.closed

    def _need(self, role: str, event_type: str) -> None:
        if role in self.roles:
            return
        port = self.gw.config.ports().get(role)
        where = f"it is on port {port}" if port else "it is off in [wyoming]"
        raise RequestFailed(
            f"{event_type!r}: this port serves {', '.join(ROLE_NAMES[r] for r in self.roles)}, "
            f"not {ROLE_NAMES[role]} ({where})",
            "wrong-port",
        )

    # --------------------------------------------------------------------------------- wake

    def _detect(self, detect: Detect) -> None:
        known = {wake_key(w): w for w in self.gw.offer.wake_words}
        names = []
        for name in detect.names or []:
            if wake_key(name) not in known:
                raise RequestFailed(
                    f"unknown wake word {name!r} (this gateway detects: {', '.join(self.gw.offer.wake_words)})",
                    "unknown-wake-word",
                )
            names.append(known[wake_key(name)])
        self.wake_names = names or None
        self.mode = "wake"

    def _transcribe(self, req: Transcribe) -> None:
        lang = (req.language or "").strip()
        if lang and lang.split("-")[0].split("_")[0].lower() not in {x.lower() for x in self.gw.offer.languages}:
            raise RequestFailed(
                f"language {lang!r} is not supported (this STT speaks {', '.join(self.gw.offer.languages)})",
                "unsupported-language",
            )
        self.language = lang or self.gw.offer.languages[0]
        self.mode = "stt"

    async def _audio_start(self, start: AudioStart) -> None:
        if self.mode is None:
            raise RequestFailed("audio-start before detect or transcribe: say what the audio is for", "bad-order")
        problem = check_format(start.rate, start.width, start.channels)
        if problem:
            raise RequestFailed(f"audio-start: {problem}", "unsupported-audio")
        if self.stream is not None:  # a new audio-start without audio-stop: the old stream is over
            await self.stream.abandon()
        self._warned_no_start = False
        if self.mode == "wake":
            self.stream = WakeStream(self, self.wake_names, start)
        else:
            self.stream = SttStream(self, self.language or self.gw.offer.languages[0], start)
        self.streams = [s for s in self.streams if not s.over] + [self.stream]

    async def _audio_chunk(self, event: Event) -> bool:
        t0 = time.perf_counter()
        if self.stream is None:
            if not self._warned_no_start:  # once per stray burst, not once per chunk
                self._warned_no_start = True
                await self.write(
                    Error(text="audio-chunk before audio-start: send audio-start first", code="bad-order").event()
                )
            return not self.closed
        try:
            await self.stream.feed(AudioChunk.from_event(event))
        except AudioFormatError as exc:
            await self.stream.abandon()
            self.stream = None
            raise RequestFailed(f"audio-chunk: {exc}", "unsupported-audio") from None
        self.gw.metrics.chunk_us.append((time.perf_counter() - t0) * 1e6)
        return not self.closed

    # ---------------------------------------------------------------------------------- tts

    def _voice(self, voice: Any) -> str | None:
        """``Say.voice`` for a requested voice (name, or language only); unknown names are refused."""
        offer = self.gw.offer
        name = getattr(voice, "name", None) if voice is not None else None
        if not name:
            return offer.voices[offer.default_voice()]
        if name not in offer.voices:
            raise RequestFailed(f"unknown voice {name!r} (known: {', '.join(offer.voices)})", "unknown-voice")
        return offer.voices[name]

    async def _synthesize(self, req: Synthesize) -> None:
        voice = self._voice(req.voice)
        if not speakable(req.text):
            raise RequestFailed(f"nothing to speak in {req.text[:80]!r}: no letters or digits", "empty-text")
        made = self.gw.spoken(req.text) if voice is None else None
        stream = TtsStream(self, voice, per_sentence=False, answer=made)
        try:
            stream.text = req.text
            if made is None:
                await stream.finish(req.text)
            else:  # the agent's answer, already being voiced: no second synthesis
                self.gw.metrics.cached_answers += 1
                stream.finished_at = time.monotonic()
            await stream.done
        finally:
            stream.close()

    async def _synthesize_start(self, req: SynthesizeStart) -> None:
        if self.tts is not None:
            self.tts.close()
        self.tts = TtsStream(self, self._voice(req.voice), per_sentence=True)

    # ------------------------------------------------------------------------- conversation

    async def _converse(self, text: str, context: dict[str, Any] | None) -> None:
        gw = self.gw
        t0 = time.perf_counter()
        ctx = dict(context or {})
        asked = gw.recall(text)
        room, speaker, score = (asked.room, asked.speaker, asked.score) if asked else (gw.room, None, 0.0)
        m = _PREFIX.match(text)
        if m:  # "[alice] turn on the lights": our own speaker prefix, or one Home Assistant's user added
            text = text[m.end() :]
            speaker = speaker or m.group(1)
        if not text.strip():
            await self.write(NotHandled(text="I did not hear a question.", context=ctx).event())
            return
        token = f"{gw.name}-{uuid.uuid4().hex[:12]}"
        queue: asyncio.Queue[Say] = asyncio.Queue()
        gw.replies[token] = queue
        try:
            now = gw.clock.now()
            await gw.bus.publish(
                BusTranscript(
                    time=now,
                    room=room,
                    source=gw.name,
                    utterance_id=token,
                    final=True,
                    text=text.strip(),
                    t0=now,
                    t1=now,
                    speaker=speaker,
                    speaker_score=score,
                    reply_to=token,
                )
            )
            gw.metrics.request_us.append((time.perf_counter() - t0) * 1e6)
            pieces: list[str] = []
            started = False
            while True:
                try:
                    async with asyncio.timeout(gw.timeout):
                        say = await queue.get()
                except TimeoutError:
                    if pieces:
                        break  # the agent stopped streaming: answer with what it said
                    await self.write(
                        NotHandled(
                            text=f"No agent answered within {gw.timeout:g} s. Is an agent (sensorium agent) "
                            "connected to the hub?",
                            context=ctx,
                        ).event()
                    )
                    return
                if say.text:
                    if not started:
                        started = True
                        await self.write(HandledStart(context=ctx).event())
                    pieces.append(say.text)
                    await self.write(HandledChunk(text=say.text).event())
                if not say.more:
                    break
            answer = "".join(pieces).strip()
            await self.write(Handled(text=answer, context=ctx).event())
            if started:
                await self.write(HandledStop().event())
        finally:
            gw.replies.pop(token, None)


# ------------------------------------------------------------------------------------ streams


class WakeStream:
    """One ``audio-start`` … ``audio-stop`` of a wake word request."""

    def __init__(self, h: ServiceHandler, names: list[str] | None, start: AudioStart) -> None:
        self.h = h
        gw = h.gw
        self.names = set(names) if names else None
        try:
            self.node, self.t0 = gw.pool.acquire("wake")
        except PoolFull as exc:
            raise RequestFailed(str(exc), "busy") from None
        self.start_ts = start.timestamp or 0
        self.audio = AudioIn(gw.block)
        self.sent = 0
        self.detections = 0
        self.failed = False
        self.over = False
        """Stopped or abandoned: nothing more to do."""
        self._remove = gw.bus.listen("wake", self._on_wake)
        self._check = h.spawn(self._check_stage())

    async def _check_stage(self) -> None:
        reason = await self.h.gw.bus.stage_down("wake")
        if reason:
            self.failed = True
            raise RequestFailed(reason, "stage-down")

    async def feed(self, chunk: AudioChunk) -> None:
        for block in self.audio.feed(chunk):
            await self._publish(block)

    async def _publish(self, block: bytes) -> None:
        t = self.t0 + self.sent / RATE
        self.sent += len(block) // 2
        await self.h.gw.publish_audio(self.node, t, block, lambda: not self.over)

    def _on_wake(self, msg: Message) -> None:
        gw = self.h.gw
        if not isinstance(msg, WakeDetected) or msg.room != gw.room or (msg.node or msg.source) != self.node:
            return
        if self.names is not None and msg.word not in self.names:
            return
        received = time.perf_counter()
        self.detections += 1
        stamp = self.start_ts + round((msg.time - self.t0) * 1000)
        # The stt stage opened an utterance on this wake word; it is Home Assistant's to follow up, not ours.
        listen = Listen(room=gw.room, node=self.node, action="drop", time=msg.time)

        async def send() -> None:
            await self.h.write(Detection(name=msg.word, timestamp=stamp).event())
            gw.metrics.answer_us.append((time.perf_counter() - received) * 1e6)
            await gw.bus.publish(listen)

        self.h.spawn(send())

    async def stop(self) -> None:
        rest = self.audio.flush()
        if rest:
            await self._publish(rest)
        if not self.detections and not self.failed:
            deadline = time.monotonic() + WAKE_GRACE
            while not self.detections and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not self.detections:
                await self.h.write(NotDetected().event())
        self._release()

    async def abandon(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.over:
            return
        self.over = True
        self._remove()
        self.h.gw.pool.release(self.node, self.t0 + self.sent / RATE)


class SttStream:
    """One ``audio-start`` … ``audio-stop`` of a speech-to-text request."""

    def __init__(self, h: ServiceHandler, language: str, start: AudioStart) -> None:
        self.h = h
        self.language = language
        self.audio = AudioIn(h.gw.block)
        self.head = bytearray()
        self.request: Request | None = None
        self.linked = False
        """The audio is a satellite's, relayed by Home Assistant: its transcript is already being made."""
        self.node = ""
        self.t0 = 0.0
        self.sent = 0
        self.stopped_at: float | None = None
        self.answered = False
        self.over = False
        """Answered or abandoned: nothing more to do."""
        self._decided = asyncio.Event()
        self._task = h.spawn(self._forward())

    async def feed(self, chunk: AudioChunk) -> None:
        blocks = self.audio.feed(chunk)
        if self.answered or not blocks:
            return
        if self.request is None:
            self.head += b"".join(blocks)
            if len(self.head) >= MATCH_BYTES:
                await self._decide()
            return
        if not self.linked:
            for block in blocks:
                await self._publish(block)

    async def _decide(self) -> None:
        gw = self.h.gw
        t0 = time.perf_counter()
        run = gw.match_satellite(bytes(self.head))
        if run is not None:
            run.linked = True
            self.linked = True
            self.request = gw.requests.get(run.request_id) or gw.new_request(run.request_id, run.room)
            log.info("%s: speech-to-text request is satellite %s's command", gw.name, run.room)
        else:
            try:
                self.node, self.t0 = gw.pool.acquire("stt")
            except PoolFull as exc:
                raise RequestFailed(str(exc), "busy") from None
            rid = uuid.uuid4().hex[:16]
            self.request = gw.new_request(rid, gw.room)
            await gw.bus.publish(Listen(room=gw.room, node=self.node, action="open", time=self.t0, request_id=rid))
            head = bytes(self.head)
            step = gw.block * 2
            for i in range(0, len(head), step):
                await self._publish(head[i : i + step])
        self.head = bytearray()
        self._decided.set()
        gw.metrics.request_us.append((time.perf_counter() - t0) * 1e6)

    async def _publish(self, block: bytes) -> None:
        t = self.t0 + self.sent / RATE
        self.sent += len(block) // 2
        await self.h.gw.publish_audio(self.node, t, block, lambda: not self.over)

    async def stop(self) -> None:
        """``audio-stop``: the client sent everything; the stage finishes the utterance now."""
        gw = self.h.gw
        if self.request is None:
            await self._decide()
        if not self.linked and not self.answered:
            rest = self.audio.flush()
            if rest:
                await self._publish(rest)
            assert self.request is not None
            await gw.bus.publish(
                Listen(
                    room=gw.room,
                    node=self.node,
                    action="close",
                    time=self.t0 + self.sent / RATE,
                    request_id=self.request.request_id,
                )
            )
        self.stopped_at = time.monotonic()
        await self._task

    async def abandon(self) -> None:
        """The client went away or started over: the stage drops the utterance."""
        gw = self.h.gw
        if self.over:
            return
        self.over = True
        self._task.cancel()
        if self.node and not self.answered and self.request is not None:
            await gw.bus.publish(
                Listen(
                    room=gw.room,
                    node=self.node,
                    action="drop",
                    time=self.t0 + self.sent / RATE,
                    request_id=self.request.request_id,
                )
            )
        self._release()

    def _release(self) -> None:
        if self.node:
            self.h.gw.pool.release(self.node, self.t0 + self.sent / RATE)
            self.node = ""

    async def _forward(self) -> None:
        """Transcripts of this request → transcript-start/chunk, transcript, transcript-stop."""
        h, gw = self.h, self.h.gw
        reason = await gw.bus.stage_down("stt")
        if reason:
            raise RequestFailed(reason, "stage-down")
        await self._decided.wait()
        assert self.request is not None
        queue = self.request.subscribe()
        sent: list[str] = []
        prev: list[str] = []
        started = False
        while True:
            try:
                async with asyncio.timeout(0.25):
                    tr = await queue.get()
            except TimeoutError:
                if self.stopped_at is not None and time.monotonic() - self.stopped_at > gw.timeout:
                    raise RequestFailed(
                        f"the stt stage did not answer within {gw.timeout:g} s after audio-stop", "timeout"
                    ) from None
                continue
            received = time.perf_counter()
            words = tr.text.split()
            new = (words if tr.final else stable_words(prev, words))[len(sent) :]
            if tr.final and [w.lower() for w in words[: len(sent)]] != [w.lower() for w in sent]:
                new = []  # the final revised words already streamed: the transcript event has the truth
            if new and tr.text:
                if not started:
                    started = True
                    await h.write(TranscriptStart(language=self.language).event())
                await h.write(TranscriptChunk(text=(" " if sent else "") + " ".join(new)).event())
                sent += new
            prev = words
            if tr.final:
                await self._answer(tr, started)
                gw.metrics.answer_us.append((time.perf_counter() - received) * 1e6)
                return

    async def _answer(self, final: BusTranscript, started: bool) -> None:
        gw = self.h.gw
        self.answered = True
        self.over = True
        self._release()
        text = final.text
        who, score = final.speaker, final.speaker_score
        if who is None and text:
            ev = await gw.speaker_of(final)
            if ev is not None:
                who, score = ev.person, ev.score
        if gw.config.speaker_prefix and who and who != "unknown" and text:
            text = f"[{who}] {text}"
        event = Transcript(text=text, language=self.language).event()
        if who is not None:
            event.data["speaker"] = who
            event.data["speaker_score"] = round(score, 3)
        if text:
            gw.remember(text, final.room, who, score)
        await self.h.write(event)
        if started:
            await self.h.write(TranscriptStop().event())


class TtsStream:
    """Text for one answer of the tts stage, and its audio back to the client."""

    def __init__(
        self, h: ServiceHandler, voice: str | None, *, per_sentence: bool, answer: Answer | None = None
    ) -> None:
        self.h = h
        gw = h.gw
        self.voice = voice
        self.per_sentence = per_sentence
        self.answer_id = answer.answer_id if answer is not None else uuid.uuid4().hex[:12]
        self.source = f"{gw.name}-tts-{self.answer_id}"
        self.seq = 0
        """Our own numbering of this answer's topic (the publisher would keep a counter per topic forever)."""
        self.text = ""
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        for made in answer.audio if answer is not None else ():
            self.queue.put_nowait(made)  # what the stage has made so far; the rest follows on the bus
        gw.audio.setdefault(self.answer_id, []).append(self.queue)
        self.done = h.spawn(self._forward())
        self.finished_at: float | None = None

    async def feed(self, text: str) -> None:
        self.text += text
        if text:
            await self._say(text, more=True)

    async def finish(self, text: str = "") -> None:
        """The text is complete (``text``: its last piece); the stage speaks what is left."""
        if not speakable(self.text):
            self.close()
            raise RequestFailed(f"nothing to speak in {self.text[:80]!r}: no letters or digits", "empty-text")
        await self._say(text, more=False)
        self.finished_at = time.monotonic()

    async def _say(self, text: str, more: bool) -> None:
        gw = self.h.gw
        self.seq += 1
        await gw.bus.publish(
            Say(
                seq=self.seq,
                source=self.source,
                answer_id=self.answer_id,
                text=text,
                voice=self.voice,
                more=more,
                reply_to=gw.name,
            )
        )

    def close(self) -> None:
        self._unregister()
        if not self.done.done() and self.finished_at is None:
            self.done.cancel()

    def _unregister(self) -> None:
        queues = self.h.gw.audio.get(self.answer_id, [])
        if self.queue in queues:
            queues.remove(self.queue)
        if not queues:
            self.h.gw.audio.pop(self.answer_id, None)

    async def _forward(self) -> None:
        h, gw = self.h, self.h.gw
        reason = await gw.bus.stage_down("tts")
        if reason:
            raise RequestFailed(reason, "stage-down")
        open_stream = False
        rate = 0
        waited = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(0.25):
                    msg = await self.queue.get()
            except TimeoutError:
                # Before the text is complete the client sets the pace; after it, the stage has ``timeout``.
                since = self.finished_at if self.finished_at is not None else None
                if since is not None and time.monotonic() - max(since, waited) > gw.timeout:
                    raise RequestFailed(f"the tts stage did not answer within {gw.timeout:g} s", "timeout") from None
                continue
            waited = time.monotonic()
            if isinstance(msg, InputError):
                raise RequestFailed(f"the tts stage refused the text: {msg.reason}", "tts-error")
            if not isinstance(msg, TtsAudio):
                continue
            received = time.perf_counter()
            if msg.data:
                if not open_stream:
                    rate = rate or msg.rate  # one format for every sentence of the answer
                    await h.write(AudioStart(rate=rate, width=2, channels=1).event())
                    open_stream = True
                step = OUT_SAMPLES * 2
                for i in range(0, len(msg.data), step):
                    await h.write(AudioChunk(rate=rate, width=2, channels=1, audio=msg.data[i : i + step]).event())
                if self.per_sentence:
                    await h.write(AudioStop().event())
                    open_stream = False
                gw.metrics.answer_us.append((time.perf_counter() - received) * 1e6)
            if msg.final:
                break
        if not self.per_sentence:
            if not open_stream:  # an answer with no audio still ends as a (silent) stream
                await h.write(AudioStart(rate=rate or 22050, width=2, channels=1).event())
            await h.write(AudioStop().event())
        else:
            await h.write(SynthesizeStopped().event())
        self._unregister()
