"""One ESPHome voice device per room, served to Home Assistant over the native API (``sensorium esphome``).

Home Assistant's esphome integration connects to each room's port (Noise-encrypted with the site's key)
and finds a voice assistant: features VOICE_ASSISTANT, API_AUDIO (the room's audio goes over the API),
ANNOUNCE and START_CONVERSATION. Our stages decide when it speaks up, as for the Wyoming satellites: the
arbiter's ``arbitration`` (or, without an arbiter, the room's first ``wake``) starts a pipeline —

1. ``Listen`` claims the utterance the stt stage opened on the wake word (sensorium's agent leaves it);
2. ``VoiceAssistantRequest(start)`` goes to Home Assistant, then the room's audio from the wake word on
   (kept in a ring buffer while the arbiter decides) as ``VoiceAssistantAudio``;
3. our stt stage's final transcript, or HA's ``STT_VAD_END``/``STT_END``, ends the command
   (``VoiceAssistantAudio(end=True)``);
4. the answer's URL (``TTS_END``) is fetched at once, decoded to PCM and published as ``TtsAudio`` to the room;
   the edge plays it, and when the agent asked back (``continue_conversation``) the room listens again,
   without a wake word.

``announce`` plays its media (preannounce first) and answers ``VoiceAssistantAnnounceFinished`` when the
edge reports it ended; ``start_conversation`` then listens without a wake word.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import time
import urllib.request
import uuid
import wave
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.model import VoiceAssistantEventType as Ev
from aioesphomeapi.model import VoiceAssistantFeature as Feature

from bridges.esphome.api import ApiError, Transport
from pipeline.messages import AudioChunk as BusChunk
from pipeline.messages import Listen, Message, PlaybackStatus, TtsAudio, WakeArbitrated, WakeDetected
from pipeline.messages import Transcript as BusTranscript

if TYPE_CHECKING:
    from bridges.esphome.server import Server

log = logging.getLogger("sensorium.esphome")

RATE = 16000
RING_S = 3.0
"""Room audio kept for the start of a pipeline (the arbiter decides a few hundred ms after the wake word)."""
MAX_COMMAND_S = 15.0
"""Longest a pipeline streams the room's audio when nothing ends it."""
CHUNK_BYTES = 1024
"""Bytes of 16 kHz audio per ``VoiceAssistantAudio`` (ESPHome's own block: 32 ms)."""
FEATURES = Feature.VOICE_ASSISTANT | Feature.API_AUDIO | Feature.ANNOUNCE | Feature.START_CONVERSATION
ESPHOME_VERSION = "2025.4.0"


async def fetch_pcm(url: str) -> tuple[bytes, int]:
    """A media URL's audio as 16-bit mono PCM and its rate (WAV read directly, anything else through ffmpeg)."""

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as r:
            return bytes(r.read())

    data = await asyncio.to_thread(get)
    if data[:4] == b"RIFF":
        with wave.open(io.BytesIO(data)) as w:
            rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
        if width == 2:
            pcm = np.frombuffer(frames, "<i2")
            if ch > 1:
                pcm = pcm.reshape(-1, ch).mean(axis=1).astype(np.int16)
            return pcm.tobytes(), rate
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE),
        "pipe:1", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(data)
    if proc.returncode != 0:
        raise ValueError(f"ffmpeg could not decode {url}: {err.decode(errors='replace').strip()[:200]}")
    return out, RATE


class Run:
    """One pipeline in Home Assistant from this room: the audio it streams."""

    def __init__(self, device: Device, node: str, start: float, word: str) -> None:
        self.device = device
        self.node = node
        self.start = start
        self.word = word
        self.request_id = f"{device.server.name}-{device.room}-{uuid.uuid4().hex[:8]}"
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.streaming = True
        self.tts_url = ""
        self.continue_conversation = False
        self.ended_speech = 0.0
        """When the command ended (monotonic): our final transcript or HA's VAD."""

    def stop_streaming(self) -> None:
        if self.streaming:
            self.streaming = False
            self.ended_speech = self.ended_speech or time.monotonic()
            self.queue.put_nowait(None)


class Device:
    """The ESPHome device of one room: ring buffer of its audio, Home Assistant's connection, the run."""

    def __init__(self, server: Server, room: str, port: int) -> None:
        self.server = server
        self.room = room
        self.port = port
        self.name = f"{server.name}-{room.replace('_', '-')}".lower()
        self.friendly = f"{server.name} {room.replace('_', ' ')}"
        self.mac = ":".join(f"{b:02X}" for b in hashlib.sha256(self.name.encode()).digest()[:6])
        self.mics = set(server.deployment.microphones(room))
        dep = server.deployment
        speaker = dep.speaker_of(room)
        self.speaker = speaker if speaker in dep.edges and dep.edges[speaker].playback is not None else ""
        """The room's loudspeaker edge ("" = none: nothing is played)."""
        self.ring: dict[str, deque[tuple[float, bytes]]] = {}
        self.conn: Connection | None = None
        self.run: Run | None = None
        self.playing: dict[str, asyncio.Future[str]] = {}
        self.pipelines = 0
        self.announcements = 0
        self._closers: list[Any] = []
        self._srv: asyncio.Server | None = None

    async def start(self, host: str) -> None:
        bus = self.server.bus
        self._closers = [
            bus.listen("audio", self._on_audio),
            bus.listen("arbitration", self._on_arbitration),
            bus.listen("wake", self._on_wake),
            bus.listen("playback", self._on_playback),
            bus.listen("transcript", self._on_transcript),
        ]
        self._srv = await asyncio.start_server(self._accept, host, self.port)

    async def stop(self) -> None:
        for close in self._closers:
            close()
        if self.conn is not None:
            self.conn.close()
        if self._srv is not None:
            self._srv.close()
            with contextlib.suppress(Exception):
                await self._srv.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        t = Transport(reader, writer, self.server.psk, self.name, self.mac)
        conn = Connection(self, t, f"{peer[0]}:{peer[1]}" if peer else "?")
        await conn.serve()

    # ------------------------------------------------------------------------------- the bus

    def _on_audio(self, msg: Message) -> None:
        if not isinstance(msg, BusChunk) or msg.room != self.room or msg.rate != RATE or msg.channels != 1:
            return
        ring = self.ring.setdefault(msg.source, deque())
        ring.append((msg.time, msg.data))
        while ring and ring[0][0] < msg.time - RING_S:
            ring.popleft()
        run = self.run
        if run is not None and run.streaming and run.node == msg.source:
            run.queue.put_nowait(msg.data)

    def _on_wake(self, msg: Message) -> None:
        if isinstance(msg, WakeDetected) and msg.room == self.room and (msg.node or msg.source) in self.mics:
            if not self.server.bus.stage_up("arbiter"):
                self.begin(msg.node or msg.source, msg.time, msg.word)

    def _on_arbitration(self, msg: Message) -> None:
        if isinstance(msg, WakeArbitrated) and msg.room == self.room and msg.node in self.mics:
            self.begin(msg.node, msg.wake_time, msg.word)

    def _on_transcript(self, msg: Message) -> None:
        run = self.run
        if isinstance(msg, BusTranscript) and run is not None and msg.final and msg.request_id == run.request_id:
            run.stop_streaming()

    def _on_playback(self, msg: Message) -> None:
        if isinstance(msg, PlaybackStatus) and msg.room == self.room and msg.state != "started":
            fut = self.playing.pop(msg.answer_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.state)

    # ------------------------------------------------------------------------------ pipelines

    def begin(self, node: str, start: float, word: str, *, ring: bool = True) -> None:
        """Start a pipeline in Home Assistant with the room's audio from ``start`` (a wake word, or now)."""
        conn = self.conn
        if conn is None or not conn.voice:
            log.info("%s device: wake word heard, but Home Assistant is not connected and subscribed", self.room)
            return
        if self.run is not None and abs(self.run.start - start) < 1.0:
            return  # the same wake word (arbitration after a direct start)
        self.end_run()
        run = self.run = Run(self, node, start, word)
        if ring:
            for t, data in self.ring.get(node, ()):
                if t + len(data) / (2 * RATE) <= start:
                    continue
                run.queue.put_nowait(data[max(0, round((start - t) * RATE)) * 2 :])
        self.pipelines += 1
        log.info("%s device: %s on %s, running a pipeline in Home Assistant", self.room, word or "listening", node)
        conn.spawn(self._stream(conn, run))

    def listen_now(self) -> None:
        """Listen without a wake word (start_conversation, continued conversation)."""
        node = next(iter(sorted(self.mics)), "")
        self.begin(node, self.server.bus.clock.now(), "", ring=False)

    def end_run(self) -> None:
        if self.run is not None:
            self.run.stop_streaming()
            self.run = None

    async def _stream(self, conn: Connection, run: Run) -> None:
        bus = self.server.bus
        await bus.publish(
            Listen(room=self.room, node=run.node, action="open", time=run.start, request_id=run.request_id)
        )
        settings = pb.VoiceAssistantAudioSettings(noise_suppression_level=0, auto_gain=0, volume_multiplier=1.0)
        conn.t.send([pb.VoiceAssistantRequest(start=True, flags=0, audio_settings=settings, wake_word_phrase=run.word)])
        deadline = time.monotonic() + MAX_COMMAND_S
        pending = b""
        while True:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                    data = await run.queue.get()
            except TimeoutError:
                log.info("%s device: no end of command after %.0f s; stopping", self.room, MAX_COMMAND_S)
                break
            if data is None or not run.streaming:
                break
            pending += data
            n = len(pending) // CHUNK_BYTES * CHUNK_BYTES
            if n:
                conn.t.send(pb.VoiceAssistantAudio(data=pending[i : i + CHUNK_BYTES]) for i in range(0, n, CHUNK_BYTES))
                pending = pending[n:]
        if pending:
            conn.t.send([pb.VoiceAssistantAudio(data=pending)])
        run.stop_streaming()
        conn.t.send([pb.VoiceAssistantAudio(end=True)])  # the end of the command (start=False would abort)

    async def play(self, url: str, text: str = "") -> str:
        """Play a media URL on the room's edge; returns how it ended ("ended", "stopped", "timeout", "no-speaker")."""
        if not self.speaker:
            log.warning("%s device: no edge in this room plays audio (no [edges.*.playback]); not playing", self.room)
            return "no-speaker"
        pcm, rate = await fetch_pcm(url)
        aid = f"esphome-{uuid.uuid4().hex[:12]}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.playing[aid] = fut
        bus = self.server.bus
        step = rate // 5 * 2  # 200 ms per message
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)] or [b""]
        for i, piece in enumerate(chunks):
            last = i == len(chunks) - 1
            await bus.publish(
                TtsAudio(
                    room=self.room, answer_id=aid, chunk=i, rate=rate, data=piece, final=last, text=text if last else ""
                )
            )
        self.server.first_audio[self.room] = time.monotonic()
        try:
            async with asyncio.timeout(len(pcm) / (2 * rate) + 5.0):
                return await fut
        except TimeoutError:
            self.playing.pop(aid, None)
            log.warning("%s device: the edge did not report playing %s; going on", self.room, aid)
            return "timeout"


class Connection:
    """Home Assistant's connection to one room's device."""

    def __init__(self, device: Device, t: Transport, peer: str) -> None:
        self.device = device
        self.t = t
        self.peer = peer
        self.voice = False
        """Home Assistant subscribed to the voice assistant."""
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s device: task failed", self.device.room)

    def close(self) -> None:
        self.t.close()

    async def serve(self) -> None:
        d = self.device
        try:
            await self.t.handshake()
            while True:
                mtype, payload = await self.t.recv()
                msg = Transport.parse(mtype, payload)
                if msg is None:
                    log.warning("%s device: unknown message type %d from %s; ignored", d.room, mtype, self.peer)
                    continue
                if not self.handle(msg):
                    break
                await self.t.writer.drain()
        except ApiError as exc:
            log.warning("%s device: connection from %s closed: %s", d.room, self.peer, exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("%s device: %s disconnected", d.room, self.peer)
        finally:
            self.voice = False
            if d.conn is self:
                d.conn = None
                if d.run is not None:
                    log.info("%s device: Home Assistant went away mid-pipeline; releasing the room", d.room)
                    run = d.run
                    d.end_run()
                    await d.server.bus.publish(
                        Listen(room=d.room, node=run.node, action="drop", request_id=run.request_id)
                    )
            for task in list(self.tasks):
                task.cancel()
            self.t.close()

    def handle(self, msg: Any) -> bool:
        d, send = self.device, self.t.send
        if isinstance(msg, pb.HelloRequest):
            send([pb.HelloResponse(api_version_major=1, api_version_minor=10, server_info="sensorium", name=d.name)])
        elif isinstance(msg, pb.ConnectRequest):
            send([pb.ConnectResponse(invalid_password=False)])
            if d.conn is not None and d.conn is not self:
                log.warning(
                    "%s device: a second Home Assistant (%s) connected; it replaces %s for voice",
                    d.room, self.peer, d.conn.peer,
                )  # fmt: skip
            d.conn = self
        elif isinstance(msg, pb.DeviceInfoRequest):
            send([pb.DeviceInfoResponse(
                uses_password=False, name=d.name, friendly_name=d.friendly, mac_address=d.mac,
                esphome_version=ESPHOME_VERSION, model="sensorium room", manufacturer="sensorium",
                project_name="sensorium.room", project_version="1", suggested_area=d.room.replace("_", " ").title(),
                voice_assistant_feature_flags=int(FEATURES),
            )])  # fmt: skip
        elif isinstance(msg, pb.ListEntitiesRequest):
            send([pb.ListEntitiesDoneResponse()])
        elif isinstance(msg, pb.PingRequest):
            send([pb.PingResponse()])
        elif isinstance(msg, pb.DisconnectRequest):
            send([pb.DisconnectResponse()])
            return False
        elif isinstance(msg, pb.GetTimeRequest):
            send([pb.GetTimeResponse(epoch_seconds=int(time.time()))])
        elif isinstance(msg, pb.SubscribeVoiceAssistantRequest):
            self.voice = bool(msg.subscribe)
            d.conn = self if self.voice else d.conn
            log.info("%s device: Home Assistant (%s) %s", d.room, self.peer, "is listening" if self.voice else "left")
        elif isinstance(msg, pb.VoiceAssistantConfigurationRequest):
            words = [
                pb.VoiceAssistantWakeWord(id=w, wake_word=w.replace("_", " "), trained_languages=["en"])
                for w in d.server.wake_words
            ]
            send([pb.VoiceAssistantConfigurationResponse(
                available_wake_words=words, active_wake_words=d.server.wake_words[:1], max_active_wake_words=1
            )])  # fmt: skip
        elif isinstance(msg, pb.VoiceAssistantAnnounceRequest):
            self.spawn(self._announce(msg))
        elif isinstance(msg, pb.VoiceAssistantEventResponse):
            self._event(Ev(msg.event_type), {a.name: a.value for a in msg.data})
        elif isinstance(msg, pb.VoiceAssistantTimerEventResponse):
            log.info("%s device: timer %s event %d (timers are not played yet)", d.room, msg.name, msg.event_type)
        else:
            log.debug("%s device: ignoring %s", d.room, type(msg).__name__)
        return True

    async def _announce(self, msg: Any) -> None:
        d = self.device
        d.announcements += 1
        log.info("%s device: announcing %r%s", d.room, msg.text, " then listening" if msg.start_conversation else "")
        ok = True
        try:
            if msg.preannounce_media_id.startswith("/"):
                # HA passes its own sound's path unproxied when the device has no media player format
                log.info(
                    "%s device: skipping the preannounce sound %s (a path, not a URL)", d.room, msg.preannounce_media_id
                )
            elif msg.preannounce_media_id:
                await d.play(msg.preannounce_media_id)
            ok = await d.play(msg.media_id, msg.text) in ("ended", "stopped")
        except (OSError, ValueError) as exc:
            log.warning("%s device: announcement failed: %s", d.room, exc)
            ok = False
        self.t.send([pb.VoiceAssistantAnnounceFinished(success=ok)])
        if msg.start_conversation:
            d.listen_now()

    def _event(self, ev: Ev, data: dict[str, str]) -> None:
        d = self.device
        run = d.run
        if ev in (Ev.VOICE_ASSISTANT_STT_VAD_END, Ev.VOICE_ASSISTANT_STT_END) and run is not None:
            run.stop_streaming()
        elif ev == Ev.VOICE_ASSISTANT_INTENT_END and run is not None:
            run.continue_conversation = data.get("continue_conversation") == "1"
        elif ev == Ev.VOICE_ASSISTANT_TTS_END and run is not None and data.get("url"):
            run.tts_url = data["url"]
            self.spawn(self._answer(run))  # the answer's audio is ready: play it now, not at run-end
        elif ev == Ev.VOICE_ASSISTANT_ERROR:
            log.info("%s device: Home Assistant pipeline error %s: %s", d.room, data.get("code"), data.get("message"))
            if run is not None:
                run.stop_streaming()
        elif ev == Ev.VOICE_ASSISTANT_RUN_END and run is not None:
            d.server.pipeline_end[d.room] = time.monotonic()
            run.stop_streaming()
            if not run.tts_url and d.run is run:
                d.run = None  # no answer to play

    async def _answer(self, run: Run) -> None:
        d = self.device
        await d.play(run.tts_url)
        if d.run is run:
            d.run = None
        self.t.send([pb.VoiceAssistantAnnounceFinished(success=True)])
        if run.continue_conversation:
            log.info("%s device: the agent asked back; listening without a wake word", d.room)
            d.listen_now()
