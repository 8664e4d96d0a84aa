"""One Wyoming satellite per room: that room's edge microphone and loudspeaker, for Home Assistant's pipelines.

Home Assistant connects to the satellite's port (one config entry per room, its area = the room). Our
stages decide when it speaks up: a wake word heard in the room, given to this room by the arbiter
(``arbitration``: the room that heard it best wins, the others stand down), starts a pipeline —

1. ``Listen`` claims the utterance the stt stage opened on that wake word (its transcript carries the
   run's ``request_id``, so sensorium's own agent leaves it to Home Assistant);
2. ``run-pipeline{start_stage: asr, end_stage: tts}`` goes to Home Assistant, followed by the room's
   audio from the wake word on (kept in a short ring buffer while the arbiter decides) and then live;
3. the stage's final transcript is the end of the command: ``audio-stop`` tells Home Assistant to stop
   listening at once, instead of waiting for its own VAD;
4. Home Assistant's answer audio (``audio-start/chunk/stop``) is published as ``TtsAudio`` to the
   room, the room's edge plays it, and ``played`` goes back when the edge reports it ended (or was
   stopped by a barge-in).

Only the arbitration winner starts a pipeline, so two rooms hearing one wake word give Home Assistant
one run. Without an arbiter stage on the hub, the room's first wake detection starts it.

``ping`` is answered in the connection's read loop, which never waits for playback (that runs in
tasks), and a new connection from Home Assistant replaces the old one (a restart, a lost link).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.snd import Played
from wyoming.tts import Synthesize

from sensorium.bridges.rooms import RoomVoice
from sensorium.bridges.wyoming.audio import RATE
from sensorium.bridges.wyoming.connection import Connection
from sensorium.bridges.wyoming.gateway import MATCH_BYTES
from sensorium.pipeline.messages import Message, PlaybackStatus, TtsAudio
from sensorium.pipeline.messages import Transcript as BusTranscript

if TYPE_CHECKING:
    from sensorium.bridges.wyoming.gateway import Gateway

log = logging.getLogger("sensorium.wyoming")

MAX_COMMAND_S = 15.0
"""Longest a pipeline streams the room's audio when no transcript ends it."""
CHUNK_SAMPLES = 1280
"""Samples per ``audio-chunk`` sent to Home Assistant (80 ms, an edge's block)."""


class Run:
    """One pipeline run started in Home Assistant from this room."""

    def __init__(self, sat: Satellite, handler: SatelliteHandler, node: str, wake_time: float, word: str) -> None:
        self.sat = sat
        self.handler = handler
        self.room = sat.room
        self.node = node
        self.wake_time = wake_time
        self.word = word
        self.request_id = f"{sat.gw.name}-{sat.room}-{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()
        self.head = bytearray()
        """The first audio sent to Home Assistant (recognised when its STT relays it to ours)."""
        self.linked = False
        """Our STT service recognised this audio coming back through Home Assistant."""
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.streaming = True
        self.pipelines_sent = 0
        self.task: asyncio.Task[None] | None = None
        self.final: BusTranscript | None = None

    def stop_streaming(self) -> None:
        if self.streaming:
            self.streaming = False
            self.queue.put_nowait(None)

    async def run(self) -> None:
        gw, h = self.sat.gw, self.handler
        req = gw.new_request(self.request_id, self.room)
        await gw.bus.publish(self.sat.claim(self))
        await h.write(
            RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS, wake_word_name=self.word).event()
        )
        self.pipelines_sent += 1
        watch = asyncio.create_task(self._watch(req.subscribe()))
        try:
            ms = 0
            deadline = time.monotonic() + MAX_COMMAND_S
            while True:
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                        data = await self.queue.get()
                except TimeoutError:
                    log.info("%s satellite: no end of command after %.0f s; stopping", self.room, MAX_COMMAND_S)
                    break
                if data is None or not self.streaming:
                    break
                if len(self.head) < MATCH_BYTES:
                    self.head += data[: MATCH_BYTES - len(self.head)]
                for i in range(0, len(data), CHUNK_SAMPLES * 2):
                    piece = data[i : i + CHUNK_SAMPLES * 2]
                    await h.write(AudioChunk(rate=RATE, width=2, channels=1, audio=piece, timestamp=ms).event())
                    ms += len(piece) * 1000 // (2 * RATE)
            self.streaming = False
            await h.write(AudioStop(timestamp=ms).event())
        finally:
            self.streaming = False
            watch.cancel()

    async def _watch(self, queue: asyncio.Queue[BusTranscript]) -> None:
        """The stage's final transcript ends the command: stop Home Assistant listening now."""
        while True:
            tr = await queue.get()
            if tr.final:
                self.final = tr
                if tr.text:
                    self.sat.gw.remember(tr.text, self.room, tr.speaker, tr.speaker_score)
                    if self.sat.gw.config.speaker_prefix and tr.speaker and tr.speaker != "unknown":
                        self.sat.gw.remember(f"[{tr.speaker}] {tr.text}", self.room, tr.speaker, tr.speaker_score)
                self.stop_streaming()
                return


class Satellite(RoomVoice[Run]):
    """The satellite of one room: the shared room logic (ring buffer, wake, claim), its Home Assistant connection."""

    what = "satellite"

    def __init__(self, gw: Gateway, room: str, port: int) -> None:
        super().__init__(gw.bus, room, set(gw.deployment.microphones(room)), log)
        self.gw = gw
        self.port = port
        self.name = f"{gw.name} {room.replace('_', ' ')}"
        self.info = gw.offer.satellite_info(self.name, room).event()
        self.handler: SatelliteHandler | None = None
        self.answers: dict[str, tuple[SatelliteHandler, float]] = {}
        """Answer id of Home Assistant audio sent to the room's edge → (connection to tell, when sent)."""
        self._closers: list[Any] = []

    def start(self) -> None:
        self._closers = [*self.listen_bus(), self.gw.bus.listen(PlaybackStatus, self._on_playback)]

    async def stop(self) -> None:
        for close in self._closers:
            close()
        if self.handler is not None:
            with contextlib.suppress(Exception):
                await self.handler.stop()

    # --------------------------------------------------------------------------- connections

    def attach(self, handler: SatelliteHandler) -> None:
        old, self.handler = self.handler, handler
        if old is not None and old is not handler:
            log.info("%s satellite: a new Home Assistant connection replaces the old one", self.room)
            self.end_run()
            asyncio.get_running_loop().create_task(old.stop())

    async def detach(self, handler: SatelliteHandler) -> None:
        if self.handler is handler:
            self.handler = None
            await self.release()

    # ---------------------------------------------------------------------------- room logic

    def ready(self) -> bool:
        return self.handler is not None and self.handler.ready

    def start_run(self, node: str, wake_time: float, word: str) -> Run:
        assert self.handler is not None
        run = Run(self, self.handler, node, wake_time, word)
        run.task = self.handler.spawn(run.run())
        return run

    def _on_playback(self, msg: Message) -> None:
        if not isinstance(msg, PlaybackStatus) or msg.room != self.room or msg.state == "started":
            return
        sent = self.answers.pop(msg.answer_id, None)
        if sent is not None:
            handler, _ = sent
            handler.spawn(handler.write(Played().event()))


class SatelliteHandler(Connection):
    """Home Assistant's connection to one room's satellite."""

    def __init__(self, sat: Satellite, reader: Any, writer: Any) -> None:
        super().__init__(sat.gw, f"{sat.room} satellite", reader, writer)
        self.sat = sat
        self.ready = False
        """Home Assistant sent run-satellite (and no pause since)."""
        self._answer = ""
        self._chunk = 0
        self._rate = 0
        self._text = ""
        self._samples = 0
        sat.attach(self)

    async def disconnect(self) -> None:
        self.closed = True
        self.ready = False
        await self.sat.detach(self)
        await super().disconnect()

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._handle(event)
        except (KeyError, TypeError, ValueError) as exc:
            await self.malformed(event, exc)
        return not self.closed

    async def _handle(self, event: Event) -> None:
        t = event.type
        sat = self.sat
        if Ping.is_type(t):
            await self.write(Pong(text=Ping.from_event(event).text).event())
        elif AudioChunk.is_type(t):
            await self._tts_chunk(AudioChunk.from_event(event))
        elif Describe.is_type(t):
            await self.write(sat.info)
        elif RunSatellite.is_type(t):
            self.ready = True
            log.info("%s satellite: Home Assistant is ready", sat.room)
        elif PauseSatellite.is_type(t):
            self.ready = False
            sat.end_run()
            log.info("%s satellite: paused by Home Assistant", sat.room)
        elif Transcript.is_type(t):
            # Home Assistant's STT finished (its transcript, maybe from another engine): stop streaming.
            text = Transcript.from_event(event).text
            run = sat.run
            if run is not None:
                run.stop_streaming()
                fin = run.final
                sat.gw.remember(text, sat.room, fin.speaker if fin else None, fin.speaker_score if fin else 0.0)
        elif Synthesize.is_type(t):
            self._text = Synthesize.from_event(event).text
        elif AudioStart.is_type(t):
            start = AudioStart.from_event(event)
            self._begin_answer(start.rate)
        elif AudioStop.is_type(t):
            await self._end_answer()
        elif Error.is_type(t):
            err = Error.from_event(event)
            log.info("%s satellite: Home Assistant pipeline error %s: %s", sat.room, err.code, err.text)
            if sat.run is not None:
                sat.run.stop_streaming()
        else:
            log.debug("%s satellite: ignoring %s", sat.room, t)

    # --------------------------------------------------------------- Home Assistant's answer

    def _begin_answer(self, rate: int) -> None:
        self._answer = f"ha-{uuid.uuid4().hex[:12]}"
        self._chunk = 0
        self._rate = rate
        self._samples = 0

    async def _tts_chunk(self, chunk: AudioChunk) -> None:
        if not self._answer:
            self._begin_answer(chunk.rate)
        if chunk.width != 2 or chunk.channels != 1:
            from wyoming.audio import AudioChunkConverter

            chunk = AudioChunkConverter(rate=chunk.rate, width=2, channels=1).convert(chunk)
        gw = self.sat.gw
        await gw.bus.publish(
            TtsAudio(
                room=self.sat.room,
                answer_id=self._answer,
                chunk=self._chunk,
                rate=chunk.rate,
                data=chunk.audio,
            )
        )
        self._chunk += 1
        self._samples += len(chunk.audio) // 2

    async def _end_answer(self) -> None:
        if not self._answer:
            return
        sat, gw = self.sat, self.sat.gw
        aid = self._answer
        await gw.bus.publish(
            TtsAudio(
                room=sat.room,
                answer_id=aid,
                chunk=self._chunk,
                rate=self._rate or 22050,
                text=self._text,
                final=True,
                data=b"",
            )
        )
        seconds = self._samples / max(self._rate, 1)
        sat.answers[aid] = (self, time.monotonic())
        self._answer = ""
        self._text = ""
        self.spawn(self._played_fallback(aid, seconds + 5.0))

    async def _played_fallback(self, aid: str, wait: float) -> None:
        """No edge reported the answer ended (none plays in this room?): tell Home Assistant anyway."""
        await asyncio.sleep(wait)
        if self.sat.answers.pop(aid, None) is not None:
            log.warning("%s satellite: no edge reported playing answer %s; sending played anyway", self.sat.room, aid)
            await self.write(Played().event())
