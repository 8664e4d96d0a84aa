"""One Wyoming connection to a service port: wake word, speech-to-text, text-to-speech, conversation.

Each request becomes bus traffic for the stages the deployment runs, and their answers become Wyoming
events; the audio and text requests are streams, one module each in :mod:`bridges.wyoming.streams`:

* ``detect`` + audio → ``detection`` / ``not-detected`` (:mod:`~bridges.wyoming.streams.wake`);
* ``transcribe`` + audio → ``transcript``, streamed as it is made (:mod:`~bridges.wyoming.streams.stt`);
* ``synthesize`` (or ``synthesize-start`` / ``-chunk`` / ``-stop``) → audio
  (:mod:`~bridges.wyoming.streams.tts`);
* ``transcript`` (conversation) → a final ``Transcript`` with ``reply_to`` for the agent attached to
  the hub, carrying the room and speaker the text came from; its answer → ``handled`` (streamed as
  ``handled-start/chunk/stop`` around it). This one is answered here.

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

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming.wake import Detect

from sensorium.bridges.wyoming.audio import AudioFormatError, check_format
from sensorium.bridges.wyoming.connection import Connection, RequestFailed
from sensorium.bridges.wyoming.gateway import Gateway
from sensorium.bridges.wyoming.streams.stt import SttStream
from sensorium.bridges.wyoming.streams.tts import TtsStream, speakable
from sensorium.bridges.wyoming.streams.wake import WakeStream, wake_key
from sensorium.pipeline.messages import Say
from sensorium.pipeline.messages import Transcript as BusTranscript

log = logging.getLogger("sensorium.wyoming")

ROLE_NAMES = {"wake": "wake word", "stt": "speech-to-text", "tts": "text-to-speech", "handle": "conversation"}
_PREFIX = re.compile(r"^\s*\[([^\]]{1,64})\]\s*")


class ServiceHandler(Connection):
    """A client of one service port (Home Assistant, or any Wyoming client)."""

    def __init__(self, gw: Gateway, roles: tuple[str, ...], reader: Any, writer: Any) -> None:
        super().__init__(gw, gw.name, reader, writer)
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
        self._warned_no_start = False

    # ----------------------------------------------------------------------------- plumbing

    async def fail(self, text: str, code: str) -> None:
        """Answer with an error and close this connection (the request cannot go on)."""
        log.warning("%s: %s (%s)", self.gw.name, text, code)
        await self.write(Error(text=text, code=code).event())
        self.closed = True
        with contextlib.suppress(Exception):
            await self.stop()

    async def failed(self, exc: Exception) -> None:
        if isinstance(exc, RequestFailed):
            await self.fail(str(exc), exc.code)
        else:
            log.error("%s: request failed", self.gw.name, exc_info=exc)
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
        await super().disconnect()

    # ------------------------------------------------------------------------------- events

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except RequestFailed as exc:
            await self.fail(str(exc), exc.code)
            return False
        except (KeyError, TypeError, ValueError) as exc:
            await self.malformed(event, exc)
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
