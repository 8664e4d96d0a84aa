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
import logging
import struct
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np
from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.model import VoiceAssistantEventType as Ev
from aioesphomeapi.model import VoiceAssistantFeature as Feature
from aioesphomeapi.model import VoiceAssistantTimerEventType as TimerEv

from sensorium.bridges.esphome.api import ApiError, Transport
from sensorium.bridges.rooms import RATE, RoomVoice
from sensorium.bridges.tasks import Tasks
from sensorium.bridges.wyoming.bus import Bus
from sensorium.pipeline.config import Deployment
from sensorium.pipeline.messages import Message, PlaybackGain, PlaybackStatus, Say, TtsAudio
from sensorium.pipeline.messages import Transcript as BusTranscript

log = logging.getLogger("sensorium.esphome")

MAX_COMMAND_S = 15.0
"""Longest a pipeline streams the room's audio when nothing ends it."""
CHUNK_BYTES = 1024
"""Bytes of 16 kHz audio per ``VoiceAssistantAudio`` (ESPHome's own block: 32 ms)."""
FEATURES = Feature.VOICE_ASSISTANT | Feature.API_AUDIO | Feature.ANNOUNCE | Feature.START_CONVERSATION | Feature.TIMERS
ESPHOME_VERSION = "2025.4.0"
KEY_MEDIA = 1
"""Entity key of the room's media player."""


STEP_S = 0.2
"""Seconds of audio per ``TtsAudio`` message while a URL streams in."""


async def _http_blocks(url: str) -> AsyncIterator[bytes]:
    """The body of ``url`` as it arrives (urllib in a thread, each read handed over at once)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    stop = False

    def get() -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                while not stop:
                    block = r.read1(16384)
                    if not block:
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, bytes(block))
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except Exception as exc:  # handed to the reader
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    thread = loop.run_in_executor(None, get)
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop = True
        with contextlib.suppress(Exception):
            await asyncio.shield(thread)


def _wav_header(head: bytes) -> tuple[int, int, int, int] | None:
    """(rate, channels, sample width, offset of the samples) of a WAV stream's start; None until "data" is in."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if cid == b"data":
            if fmt is None:
                raise ValueError("WAV data before its fmt chunk")
            return (*fmt, pos + 8)
        if pos + 8 + size > len(head):
            return None
        if cid == b"fmt ":
            tag, ch, rate = struct.unpack_from("<HHI", head, pos + 8)
            width = struct.unpack_from("<H", head, pos + 22)[0] // 8
            if tag not in (1, 0xFFFE):
                raise ValueError(f"WAV format tag {tag} is not PCM")
            fmt = (rate, ch, width)
        pos += 8 + size + (size & 1)
    return None


async def stream_pcm(url: str) -> AsyncIterator[tuple[bytes, int]]:
    """A media URL's audio as 16-bit mono PCM pieces and their rate, while it downloads.

    A 16-bit WAV is read directly (its samples pass on as they arrive: Home Assistant's TTS proxy streams);
    anything else streams through ffmpeg (to 16 kHz mono).
    """
    blocks = _http_blocks(url)
    head = b""
    try:
        async for block in blocks:
            head += block
            if len(head) >= 12:
                break
        if head[:4] == b"RIFF":
            hdr = _wav_header(head)
            while hdr is None:
                block = await anext(blocks, b"")
                if not block:
                    raise ValueError(f"{url}: WAV stream ended in its header")
                head += block
                hdr = _wav_header(head)
            rate, ch, width, off = hdr
            if width == 2:
                frame = 2 * ch
                carry = head[off:]
                while True:
                    n = len(carry) // frame * frame
                    if n:
                        yield _mono(carry[:n], ch), rate
                        carry = carry[n:]
                    block = await anext(blocks, b"")
                    if not block:
                        return
                    carry += block
        async for out in _ffmpeg(url, head, blocks):
            yield out, RATE
    finally:
        await blocks.aclose()


def _mono(pcm: bytes, channels: int) -> bytes:
    if channels == 1:
        return pcm
    return np.frombuffer(pcm, "<i2").reshape(-1, channels).mean(axis=1).astype(np.int16).tobytes()


async def _ffmpeg(url: str, head: bytes, blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Decode a compressed stream (mp3, flac, ...) to 16 kHz mono PCM while it arrives."""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(RATE),
        "pipe:1", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(head)
            async for block in blocks:
                proc.stdin.write(block)
                await proc.stdin.drain()
        finally:
            with contextlib.suppress(Exception):
                proc.stdin.close()

    feeder = asyncio.get_running_loop().create_task(feed())
    try:
        carry = b""
        while True:
            out = await proc.stdout.read(8192)
            if not out:
                break
            carry += out
            n = len(carry) // 2 * 2
            if n:
                yield carry[:n]
                carry = carry[n:]
        await feeder
        err = await proc.stderr.read()
        if await proc.wait() != 0:
            raise ValueError(f"ffmpeg could not decode {url}: {err.decode(errors='replace').strip()[:200]}")
    finally:
        feeder.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def chime(kind: str, rate: int = RATE) -> bytes:
    """The timer sound: two rising tones (started, updated), one falling (cancelled), three rings (finished)."""
    notes = {"started": [660, 880], "updated": [660, 880], "cancelled": [880, 660], "finished": [880, 1100] * 3}
    t = np.arange(int(0.15 * rate)) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
    gap = np.zeros(int(0.05 * rate))
    parts = [np.concatenate([np.sin(2 * np.pi * hz * t) * env, gap]) for hz in notes[kind]]
    return (np.concatenate(parts) * 9000).astype("<i2").tobytes()


def duration_words(seconds: int) -> str:
    """``300`` → "5 minute", ``5400`` → "1 hour 30 minute", ``45`` → "45 second" (as in "a 5 minute timer")."""
    h, rest = divmod(max(int(seconds), 0), 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((h, "hour"), (m, "minute"), (sec, "second")) if n]
    return " ".join(parts) or "0 second"


def timer_line(kind: str, name: str, total_seconds: int) -> str:
    """What the room hears for a timer event."""
    what = f"The {name} timer" if name else f"Your {duration_words(total_seconds)} timer"
    return {
        "started": f"{what} is set.",
        "updated": f"{what} was changed.",
        "cancelled": f"{what} is cancelled.",
        "finished": f"{what} is done.",
    }[kind]


class Run:
    """One pipeline in Home Assistant from this room: the audio it streams."""

    def __init__(self, device: Device, node: str, wake_time: float, word: str) -> None:
        self.device = device
        self.node = node
        self.wake_time = wake_time
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
            log.debug("%s device: command ends at %.3f", self.device.room, time.monotonic())
            self.streaming = False
            self.ended_speech = self.ended_speech or time.monotonic()
            self.queue.put_nowait(None)


class Site(Protocol):
    """What a room's device needs of the server that runs it (:class:`bridges.esphome.server.Server`)."""

    name: str
    bus: Bus
    deployment: Deployment
    psk: bytes | None
    wake_words: list[str]
    first_audio: dict[str, float]
    """Room → when its last played audio went to the edge (monotonic)."""
    pipeline_end: dict[str, float]
    """Room → when its last pipeline ended in Home Assistant (monotonic; for the benchmark)."""


class Device(RoomVoice[Run]):
    """The ESPHome device of one room: the shared room logic (ring buffer, wake, claim), HA's connection."""

    what = "device"

    def __init__(self, server: Site, room: str, port: int) -> None:
        super().__init__(server.bus, room, set(server.deployment.microphones(room)), log)
        self.server = server
        self.port = port
        self.name = f"{server.name}-{room.replace('_', '-')}".lower()
        self.friendly = f"{server.name} {room.replace('_', ' ')}"
        self.mac = ":".join(f"{b:02X}" for b in hashlib.sha256(self.name.encode()).digest()[:6])
        dep = server.deployment
        speaker = dep.speaker_of(room)
        self.speaker = speaker if speaker in dep.edges and dep.edges[speaker].playback is not None else ""
        """The room's loudspeaker edge ("" = none: nothing is played)."""
        self.conn: Connection | None = None
        self.playing: dict[str, asyncio.Future[str]] = {}
        self.announcements = 0
        self.volume = 1.0
        self.muted = False
        self.media_playing = False
        self.media_task: asyncio.Task[Any] | None = None
        self.active_words = list(server.wake_words)
        """The wake words that start a pipeline here (Home Assistant's wake word select chooses one)."""
        self.timers: dict[str, tuple[str, int, int, bool]] = {}
        """Home Assistant's timers on this device: id → (name, total s, s left at the last event, active)."""
        self._closers: list[Any] = []
        self._srv: asyncio.Server | None = None

    async def start(self, host: str) -> None:
        bus = self.server.bus
        self._closers = [
            *self.listen_bus(),
            bus.listen(PlaybackStatus, self._on_playback),
            bus.listen(BusTranscript, self._on_transcript),
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

    def ready(self) -> bool:
        return self.conn is not None and self.conn.voice

    def start_run(self, node: str, wake_time: float, word: str) -> Run:
        assert self.conn is not None
        run = Run(self, node, wake_time, word)
        self.conn.spawn(self._stream(self.conn, run))
        return run

    def accepts(self, word: str) -> bool:
        return word in self.active_words or not word

    def choose_wake_words(self, words: list[str]) -> None:
        """Home Assistant's choice (its wake word select): only these start a pipeline in this room."""
        known = [w for w in words if w in self.server.wake_words]
        for w in words:
            if w not in known:
                log.warning(
                    "%s device: Home Assistant chose wake word %r, which this deployment does not run (it runs: %s);"
                    " ignored", self.room, w, ", ".join(self.server.wake_words),
                )  # fmt: skip
        if known:
            self.active_words = known
            log.info("%s device: wake word now %s", self.room, ", ".join(known))

    def listen_now(self) -> None:
        """Listen without a wake word (start_conversation, continued conversation)."""
        node = next(iter(sorted(self.mics)), "")
        self.begin(node, self.server.bus.clock.now(), "", ring=False)

    async def _stream(self, conn: Connection, run: Run) -> None:
        await self.server.bus.publish(self.claim(run))
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

    # ---------------------------------------------------------------------------- entities

    def entities(self) -> list[Any]:
        """The entities Home Assistant lists: the room's media player (it plays WAV: no mp3 round trip)."""
        wav = pb.MediaPlayerSupportedFormat(format="wav", purpose=pb.MEDIA_PLAYER_FORMAT_PURPOSE_ANNOUNCEMENT)
        default = pb.MediaPlayerSupportedFormat(format="wav", purpose=pb.MEDIA_PLAYER_FORMAT_PURPOSE_DEFAULT)
        return [
            pb.ListEntitiesMediaPlayerResponse(
                object_id="media_player", key=KEY_MEDIA, name="Media player", unique_id=f"{self.mac}-media_player",
                supports_pause=False, supported_formats=[default, wav],
            ),
        ]  # fmt: skip

    def states(self) -> list[Any]:
        state = pb.MEDIA_PLAYER_STATE_PLAYING if self.media_playing else pb.MEDIA_PLAYER_STATE_IDLE
        return [pb.MediaPlayerStateResponse(key=KEY_MEDIA, state=state, volume=self.volume, muted=self.muted)]

    def send_states(self) -> None:
        if self.conn is not None:
            self.conn.t.send(self.states())

    async def media_command(self, msg: Any) -> None:
        """Home Assistant's media player service calls: volume, mute, stop, play a URL."""
        if msg.has_volume:
            self.volume = min(max(round(float(msg.volume), 4), 0.0), 1.0)  # a float32 on the wire
        if msg.has_command:
            if msg.command == pb.MEDIA_PLAYER_COMMAND_MUTE:
                self.muted = True
            elif msg.command == pb.MEDIA_PLAYER_COMMAND_UNMUTE:
                self.muted = False
            elif msg.command == pb.MEDIA_PLAYER_COMMAND_STOP and self.media_task is not None:
                self.media_task.cancel()
        if msg.has_volume or msg.has_command:
            await self.send_gain()
        if msg.has_media_url and msg.media_url:
            if self.media_task is not None:
                self.media_task.cancel()
            self.media_task = asyncio.current_task()
            self.media_playing = True
            self.send_states()
            try:
                await self.play(msg.media_url)
            except (OSError, ValueError) as exc:
                log.warning("%s device: could not play %s: %s", self.room, msg.media_url, exc)
            finally:
                if self.media_task is asyncio.current_task():
                    self.media_task = None
                    self.media_playing = False
        self.send_states()

    async def timer(self, msg: Any) -> None:
        """A timer event from Home Assistant: its sound in the room, then a spoken line (our TTS).

        A timer started or changed by voice is already confirmed by the pipeline's answer: while a
        pipeline runs in this room only the sound plays.
        """
        try:
            kind = TimerEv(msg.event_type).name.removeprefix("VOICE_ASSISTANT_TIMER_").lower()
        except ValueError:
            log.warning("%s device: unknown timer event %d (timer %r); ignored", self.room, msg.event_type, msg.name)
            return
        self.timers[msg.timer_id] = (msg.name, msg.total_seconds, msg.seconds_left, msg.is_active)
        if kind in ("cancelled", "finished"):
            self.timers.pop(msg.timer_id, None)
        line = timer_line(kind, msg.name, msg.total_seconds)
        log.info("%s device: timer %s %s (%d s left)", self.room, msg.timer_id, kind, msg.seconds_left)
        if not self.speaker:
            log.warning("%s device: no loudspeaker in this room; the timer %s is not heard", self.room, kind)
            return
        bus = self.server.bus
        aid = f"esphome-timer-{uuid.uuid4().hex[:8]}"
        await bus.publish(TtsAudio(room=self.room, answer_id=aid, chunk=0, rate=RATE, data=chime(kind), final=True))
        if kind in ("started", "updated") and self.run is not None:
            return
        await bus.publish(Say(room=self.room, answer_id=f"{aid}-line", text=line))

    async def send_gain(self) -> None:
        """The room's playback gain follows the media player's volume and mute."""
        log.info("%s device: volume %.2f%s", self.room, self.volume, " (muted)" if self.muted else "")
        await self.server.bus.publish(PlaybackGain(room=self.room, volume=self.volume, muted=self.muted))

    async def play(self, url: str, text: str = "") -> str:
        """Play a media URL on the room's edge; returns how it ended ("ended", "stopped", "timeout", "no-speaker")."""
        if not self.speaker:
            log.warning("%s device: no edge in this room plays audio (no [edges.*.playback]); not playing", self.room)
            return "no-speaker"
        aid = f"esphome-{uuid.uuid4().hex[:12]}"
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.playing[aid] = fut
        bus = self.server.bus
        i, seconds, rate, pending = 0, 0.0, RATE, b""
        try:
            async for piece, rate in stream_pcm(url):
                if i == 0 and not pending:
                    log.debug("%s device: first audio of %s at %.3f", self.room, url, time.monotonic())
                pending += piece
                step = int(rate * STEP_S) * 2
                # the first audio goes as soon as 20 ms are in, then 200 ms pieces
                while len(pending) >= (step if i else min(step, int(rate * 0.02) * 2)):
                    n = min(step, len(pending))
                    await bus.publish(TtsAudio(room=self.room, answer_id=aid, chunk=i, rate=rate, data=pending[:n]))
                    if i == 0:
                        self.server.first_audio[self.room] = time.monotonic()
                    seconds += n / (2 * rate)
                    pending = pending[n:]
                    i += 1
        except BaseException:
            self.playing.pop(aid, None)
            if i:  # the edge has part of it: end it there
                await bus.publish(TtsAudio(room=self.room, answer_id=aid, chunk=i, rate=rate, data=b"", final=True))
            raise
        last = TtsAudio(room=self.room, answer_id=aid, chunk=i, rate=rate, data=pending, final=True, text=text)
        await bus.publish(last)
        if i == 0:
            self.server.first_audio[self.room] = time.monotonic()
        seconds += len(pending) / (2 * rate)
        try:
            async with asyncio.timeout(seconds + 5.0):
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
        self.tasks = Tasks(self._failed)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self.tasks.spawn(coro)

    async def _failed(self, exc: Exception) -> None:
        log.error("%s device: task failed", self.device.room, exc_info=exc)

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
                await d.release()
            self.tasks.cancel()
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
            send([*d.entities(), pb.ListEntitiesDoneResponse()])
        elif isinstance(msg, pb.SubscribeStatesRequest):
            send(d.states())
        elif isinstance(msg, pb.MediaPlayerCommandRequest):
            self.spawn(d.media_command(msg))
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
                available_wake_words=words, active_wake_words=d.active_words, max_active_wake_words=len(words)
            )])  # fmt: skip
        elif isinstance(msg, pb.VoiceAssistantSetConfiguration):
            d.choose_wake_words(list(msg.active_wake_words))
        elif isinstance(msg, pb.VoiceAssistantAnnounceRequest):
            self.spawn(self._announce(msg))
        elif isinstance(msg, pb.VoiceAssistantEventResponse):
            self._event(Ev(msg.event_type), {a.name: a.value for a in msg.data})
        elif isinstance(msg, pb.VoiceAssistantTimerEventResponse):
            self.spawn(d.timer(msg))
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
        log.debug("%s device: event %s at %.3f %s", d.room, ev.name, time.monotonic(), data)
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
