"""The edge agent of one Raspberry Pi: microphone (or WAV file), cameras, optional local wake gate and
the room's speaker, connected to the hub.

Capture never waits for the network. Everything captured goes through an ``Outbox`` that publishes
at once while the hub answers heartbeats and otherwise holds a bounded backlog: audio up to
``buffer_s`` seconds (oldest dropped first), the latest frame per camera only, and status events.
When the hub comes back the backlog is sent in order, so a short outage loses no audio. Sequence
numbers are assigned at capture, per topic, so a subscriber can count what was dropped.

Nothing here imports torch or a model library: the only model is the optional wake gate's
openWakeWord ONNX file run by onnxruntime.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.edge.audio import AudioSourceError, MicrophoneSource, WavFileSource
from sensorium.edge.camera import Camera, CameraError
from sensorium.edge.echo import ReferenceTap
from sensorium.pipeline.aec import EchoCanceller, SpeexEchoCanceller, SpeexUnavailable, make_canceller
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import Deployment, EdgeConfig
from sensorium.pipeline.messages import (
    AudioChunk,
    Message,
    NodeStatus,
    PlaybackGain,
    StopPlayback,
    TtsAudio,
    VideoFrame,
)

log = logging.getLogger("sensorium.edge")


class Outbox:
    """Bounded buffer between capture and the hub; see the module docstring for what is kept."""

    def __init__(self, *, buffer_s: float = 30.0, block_s: float = 0.08, events: int = 1000) -> None:
        self.audio: deque[AudioChunk] = deque()
        self.audio_limit = max(1, int(round(buffer_s / block_s)))
        """Audio chunks kept while the hub is away."""
        self.video: OrderedDict[str, VideoFrame] = OrderedDict()
        self.events: deque[Message] = deque(maxlen=events)
        self.dropped_audio = 0
        """Audio chunks dropped because the backlog was full (oldest first)."""
        self.replaced_video = 0
        """Frames replaced by a newer one of the same camera before they could be sent."""
        self.dropped_events = 0
        """Status events dropped because their backlog was full."""
        self.publish_errors = 0
        """Messages the socket refused (logged and dropped)."""
        self.sent: dict[str, int] = {}
        """Messages published, by kind."""
        self.overhead_ms: dict[str, deque[float]] = {}
        """Recent capture→published delays of live (not held) audio and video, ms; audio from the block's end."""
        self._ready = asyncio.Event()
        self._unmeasured: set[int] = set()
        self._sending = False

    def __len__(self) -> int:
        return len(self.audio) + len(self.video) + len(self.events)

    def put(self, msg: Message, measure: bool = True) -> None:
        """Queue ``msg`` (never blocks; drops by the rules above); ``measure=False`` keeps it out of the
        overhead numbers (a wake gate's pre-roll is old by design)."""
        if not measure:
            self._unmeasured.add(id(msg))
        if isinstance(msg, AudioChunk):
            if len(self.audio) >= self.audio_limit:
                self._unmeasured.discard(id(self.audio.popleft()))
                self.dropped_audio += 1
            self.audio.append(msg)
        elif isinstance(msg, VideoFrame):
            if msg.source in self.video:
                self.replaced_video += 1
                del self.video[msg.source]
            self.video[msg.source] = msg
        else:
            if len(self.events) == self.events.maxlen:
                self.dropped_events += 1
            self.events.append(msg)
        self._ready.set()

    def _pop(self) -> Message | None:
        if self.events:
            return self.events.popleft()
        if self.audio:
            return self.audio.popleft()
        if self.video:
            return self.video.popitem(last=False)[1]
        return None

    async def drain(self) -> None:
        """Wait until everything queued was published (including the message being sent now)."""
        while len(self) or self._sending:
            await asyncio.sleep(0.01)

    async def run(
        self,
        publish: Callable[[Message], Awaitable[None]],
        connected: Callable[[], bool],
        clock: Clock,
        settle_s: float = 0.5,
    ) -> None:
        """Publish queued messages while ``connected()``; hold them (bounded) otherwise.

        After a reconnection it waits ``settle_s`` so the hub's proxy has the subscriptions again
        before the backlog goes out (ZeroMQ drops what nobody has subscribed to yet).
        """
        was_connected = connected()
        live_since = clock.now() if was_connected else float("inf")
        while True:
            if not connected():
                if was_connected:
                    log.warning("hub unreachable: holding up to %.0f s of audio", self.audio_limit * 0.08)
                was_connected = False
                live_since = float("inf")
                await asyncio.sleep(0.05)
                continue
            if not was_connected:
                was_connected = True
                log.info("hub reachable: sending %d held messages", len(self))
                await asyncio.sleep(settle_s)
                live_since = clock.now()
            msg = self._pop()
            if msg is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            self._sending = True
            try:
                await publish(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a socket error must not stop the node: report, drop this one, go on
                log.error("could not publish %s: %s", msg.topic(), exc)
                self.publish_errors += 1
                await asyncio.sleep(0.1)
                continue
            finally:
                self._sending = False
            kind = msg.kind
            self.sent[kind] = self.sent.get(kind, 0) + 1
            if id(msg) in self._unmeasured:
                self._unmeasured.discard(id(msg))
            elif isinstance(msg, AudioChunk | VideoFrame):
                ready = msg.time
                if isinstance(msg, AudioChunk) and msg.rate:
                    ready += len(msg.data) / 2 / msg.rate / max(msg.channels, 1)
                if ready >= live_since:  # held backlog measures the outage, not our overhead
                    self.overhead_ms.setdefault(kind, deque(maxlen=2000)).append((clock.now() - ready) * 1000.0)


class LinkWatch:
    """Watches the publish socket's connection with a ZeroMQ monitor.

    Heartbeats notice a dead hub only after three intervals; a hub that crashed or restarted closes
    the connection, which the monitor reports at once, so the outbox starts holding audio before
    it is thrown at a socket nobody reads.
    """

    def __init__(self, socket: Any) -> None:
        import zmq

        self._zmq = zmq
        events = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        self._mon = socket.get_monitor_socket(events)
        self._socket = socket
        self.up = True
        """False from a connection loss until the socket reconnects (the node link's heartbeats judge the rest;
        the first connection may predate the monitor, so it starts True)."""
        self.drops = 0
        """Connection losses seen."""

    async def run(self) -> None:
        """Follow monitor events until cancelled."""
        from zmq.utils.monitor import parse_monitor_message

        zmq = self._zmq
        try:
            while True:
                event = parse_monitor_message(await self._mon.recv_multipart())["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    if self.up:
                        self.drops += 1
                    self.up = False
                elif event in (zmq.EVENT_CONNECTED, zmq.EVENT_HANDSHAKE_SUCCEEDED):
                    self.up = True
        finally:
            self._socket.disable_monitor()
            self._mon.close(0)


class EdgeAgent:
    """Runs one edge node of a deployment until ``stop`` (or, with ``once``, until its files ended)."""

    def __init__(
        self,
        deployment: Deployment,
        name: str,
        *,
        wav: str | Path | None = None,
        speed: float = 1.0,
        hub_address: str | None = None,
        buffer_s: float = 30.0,
        loop_files: bool = False,
        hold_s: float | None = None,
        wake_models: tuple[str, ...] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.deployment = deployment
        self.name = name
        self.config: EdgeConfig = deployment.edge(name)
        self.room = self.config.room
        self.wav = Path(wav) if wav else None
        self.speed = speed
        self.address = hub_address or deployment.hub.address
        self.loop_files = loop_files
        """Restart WAV and video files at their end (demos that run until stopped)."""
        mic = self.config.microphone
        self.hold_s = hold_s if hold_s is not None else (mic.hold_ms / 1000.0 if mic else 8.0)
        """Local wake gate: seconds streamed after the last detection."""
        self.wake_models = wake_models or (tuple(mic.wake_models) if mic else ("hey_jarvis",))
        """Local wake gate: bundled wake word names or .onnx/.tflite paths."""
        self.clock = clock or Clock()
        self._check()
        block_ms = mic.block_ms if mic else 80
        self.outbox = Outbox(buffer_s=buffer_s, block_s=block_ms / 1000.0)
        self.audio_source: MicrophoneSource | WavFileSource | None = None
        self.cameras: dict[str, Camera] = {}
        self.gate: Any = None
        self.player: Any = None
        self.link: Any = None
        self.statuses: list[NodeStatus] = []
        """Every status this node published (newest last)."""
        self._seq: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._gate_pool: ThreadPoolExecutor | None = None
        self.watch: LinkWatch | None = None
        rate = mic.rate if mic else 16000
        self.reference = ReferenceTap(rate) if mic is None or mic.send_reference else None
        self.aec: EchoCanceller | SpeexEchoCanceller | None = None
        if mic is not None and mic.echo_cancel and self.reference is not None:
            where = f"{self.deployment.path}: [edges.{name}.microphone]"
            if not 16 <= mic.echo_tail_ms <= 2000:
                raise ValueError(f"{where} echo_tail_ms must be 16–2000, got {mic.echo_tail_ms}")
            try:
                self.aec = make_canceller(mic.echo_canceller, rate, mic.echo_tail_ms)
            except SpeexUnavailable as exc:
                raise ValueError(f"{where} echo_canceller = 'speex': {exc}, or set echo_canceller = 'nlms'") from None
        """What this room's speaker played (answers, or ``reference_file``), sent with the microphone chunks."""

    # ------------------------------------------------------------------ helpers

    def _check(self) -> None:
        """Values the config loader accepts but capture cannot use: ``ValueError`` naming the key."""
        where = f"{self.deployment.path}: [edges.{self.name}"
        mic = self.config.microphone
        if mic is not None:
            if not 10 <= mic.block_ms <= 1000:
                raise ValueError(f"{where}.microphone] block_ms must be 10–1000, got {mic.block_ms}")
            if mic.rate < 8000:
                raise ValueError(f"{where}.microphone] rate must be at least 8000 Hz, got {mic.rate}")
            if mic.local_wake and mic.rate != 16000:
                raise ValueError(f"{where}.microphone] local_wake needs rate = 16000, got {mic.rate}")
            if mic.preroll_ms < 0:
                raise ValueError(f"{where}.microphone] preroll_ms must not be negative, got {mic.preroll_ms}")
        for cname, cam in self.config.cameras.items():
            if not cam.fps > 0:
                raise ValueError(f"{where}.cameras.{cname}] fps must be > 0, got {cam.fps}")
            if not 1 <= cam.jpeg_quality <= 100:
                raise ValueError(f"{where}.cameras.{cname}] jpeg_quality must be 1–100, got {cam.jpeg_quality}")
            if cam.width < 16:
                raise ValueError(f"{where}.cameras.{cname}] width must be at least 16, got {cam.width}")

    def _stamp(self, msg: Message) -> Message:
        topic = msg.topic()
        self._seq[topic] = self._seq.get(topic, 0) + 1
        msg.seq = self._seq[topic]
        return msg

    def status(self, state: str, detail: str) -> None:
        """Queue a ``NodeStatus`` for the hub (source errors, recoveries)."""
        msg = NodeStatus(
            time=self.clock.now(),
            room=self.room,
            source=self.name,
            node=self.name,
            role="edge",
            state=state,
            detail=detail,
        )  # type: ignore[arg-type]
        self.statuses.append(msg)
        self.outbox.put(self._stamp(msg))

    async def _publish_event(self, msg: Message) -> None:
        self.outbox.put(self._stamp(msg))

    def stop(self) -> None:
        """Ask ``run`` to finish."""
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        """Counters and capture→publish overhead percentiles (ms) by kind."""
        out: dict[str, Any] = {
            "sent": dict(self.outbox.sent),
            "held": len(self.outbox),
            "dropped_audio": self.outbox.dropped_audio,
            "replaced_video": self.outbox.replaced_video + sum(c.slot.replaced for c in self.cameras.values()),
            "connected": bool(self.link and self.link.connected),
        }
        from sensorium.pipeline.metrics import summary  # lazily, like the metrics: prometheus-client only when used

        for kind, vals in self.outbox.overhead_ms.items():
            out[f"{kind}_overhead_ms"] = summary(vals)
        if self.gate is not None:
            out["wake"] = {
                "detections": len(self.gate.detections),
                "passed": self.gate.passed,
                "blocked": self.gate.blocked,
            }
        return out

    # ------------------------------------------------------------------ sources

    def _make_audio(self) -> MicrophoneSource | WavFileSource | None:
        mic = self.config.microphone
        rate = mic.rate if mic else 16000
        block_ms = mic.block_ms if mic else 80
        wav = self.wav or (Path(mic.file) if mic and mic.file else None)
        if wav is not None:
            return WavFileSource(
                wav, rate=rate, block_ms=block_ms, speed=self.speed, clock=self.clock, loop=self.loop_files
            )
        if mic is None:
            return None
        return MicrophoneSource(mic.device, rate=rate, block_ms=block_ms, clock=self.clock, on_status=self.status)

    async def _audio_loop(self) -> None:
        src = self.audio_source
        assert src is not None
        mic = self.config.microphone
        rate = mic.rate if mic else 16000
        loop = asyncio.get_running_loop()
        played = None
        if mic is not None and mic.reference_file and isinstance(src, WavFileSource):
            from sensorium.pipeline.media import read_wav

            played = await asyncio.to_thread(read_wav, Path(mic.reference_file), rate)
        pos = 0
        try:
            async for t, pcm in src.blocks():
                if played is not None and self.reference is not None:
                    # A simulated room: the loudspeaker played this stretch of the reference file meanwhile.
                    n = len(pcm) // 2
                    start = pos % len(played) if self.loop_files and len(played) else pos
                    seg = played[start : start + n]
                    self.reference.add(t, seg, join=False)  # on the microphone's own stamps
                    pos += n
                if self.aec is not None and self.reference is not None:
                    heard = np.frombuffer(self.reference.take(t, len(pcm) // 2), "<i2")
                    if len(heard) == 0:
                        heard = np.zeros(len(pcm) // 2, np.int16)  # the room's echo tail still rings
                    pcm = self.aec.process(np.frombuffer(pcm, "<i2"), heard).tobytes()
                if self.gate is not None:
                    blocks = await loop.run_in_executor(self._gate_pool, self.gate.process, t, pcm)
                else:
                    blocks = [(t, pcm)]
                for i, (bt, data) in enumerate(blocks):
                    ref = self.reference.take(bt, len(data) // 2) if self.reference is not None else b""
                    chunk = AudioChunk(
                        time=bt,
                        room=self.room,
                        source=self.name,
                        rate=rate,
                        data=data,
                        reference=ref,
                        echo_cancelled=self.aec is not None,
                    )
                    self.outbox.put(self._stamp(chunk), measure=i == len(blocks) - 1)  # the live block only
        except AudioSourceError as exc:
            log.error("%s", exc)
            self.status("error", str(exc))
            return
        if isinstance(src, WavFileSource):
            log.info("audio file %s ended", src.name)

    async def _camera_loop(self, cam: Camera) -> None:
        try:
            async for frame in cam.frames():
                self.outbox.put(self._stamp(frame))
        except CameraError as exc:
            log.error("%s", exc)
            self.status("error", str(exc))

    async def _playback_loop(self) -> None:
        from sensorium.pipeline.bus import Endpoints, Subscriber

        sub = Subscriber(
            Endpoints.from_address(self.address),
            [f"tts_audio/{self.room}/", f"stop_playback/{self.room}/", f"playback_gain/{self.room}/"],
            curve=self._curve,
        )
        try:
            async for msg in sub:
                if isinstance(msg, TtsAudio):
                    await self.player.feed(msg)
                elif isinstance(msg, StopPlayback):
                    await self.player.stop(msg.answer_id)
                elif isinstance(msg, PlaybackGain):
                    self.player.set_gain(msg.volume, msg.muted)
        finally:
            sub.close()

    def _make_player(self) -> Any:
        pb = self.config.playback
        if pb is None or self.deployment.speaker_of(self.room) != self.name:
            return None
        try:
            from sensorium.edge.playback import Player
        except ImportError as exc:
            log.error("playback unavailable: %s", exc)
            self.status("error", f"playback unavailable: {exc}")
            return None
        try:
            return Player(pb, self.room, self.name, self.clock, self._publish_event, tap=self.reference)
        except Exception as exc:  # a missing speaker must not stop capture
            log.error("playback device: %s", exc)
            self.status("error", f"playback device: {exc}")
            return None

    def _sources_done(self, capture: list[asyncio.Task[None]]) -> bool:
        """For ``once``: every capture ended, or only cameras that never delivered anything are left retrying."""
        if all(t.done() for t in capture):
            return True
        audio_done = self.audio_source is None or capture[0].done()
        return audio_done and all(c.finished or (c.errors and c.produced == 0) for c in self.cameras.values())

    # ------------------------------------------------------------------ main

    @property
    def _curve(self) -> Any:
        if not self.config.keys:
            return None
        from sensorium.pipeline.security import node_keys

        return node_keys(self.config.keys, self.name)

    def _counted(self, publish: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        """``publish`` that also counts messages and bytes per stream kind for Prometheus."""
        from sensorium.pipeline.metrics import Metrics

        self.metrics = Metrics(self.name)
        self.metrics.serve(self.config.metrics_port, self.config.metrics_host)

        async def send(msg: Message) -> None:
            await publish(msg)
            self.metrics.count_message(msg.kind.encode(), len(getattr(msg, "data", b"")), "out")

        return send

    async def run(self, *, once: bool = False) -> None:
        """Connect, capture and publish until ``stop`` (``once``: until the WAV/video files ended and all was sent)."""
        from sensorium.pipeline.bus import Endpoints, Publisher, is_loopback
        from sensorium.pipeline.node import NameInUse, NodeLink

        endpoints = Endpoints.from_address(self.address)
        curve = self._curve
        if curve is None and not is_loopback(self.address):
            log.warning(
                "hub %s is not on this machine and [edges.%s] keys is not set: a hub with CURVE keys will refuse "
                "this node (see 'sensorium keys --help')",
                self.address,
                self.name,
            )
        self.audio_source = self._make_audio()
        if self.config.microphone and self.config.microphone.local_wake and self.audio_source is not None:
            from sensorium.edge.wake_gate import WakeGate

            self._gate_pool = ThreadPoolExecutor(1, thread_name_prefix="wake-gate")
            try:
                self.gate = await asyncio.get_running_loop().run_in_executor(
                    self._gate_pool,
                    lambda: WakeGate(
                        models=self.wake_models,
                        preroll_ms=self.config.microphone.preroll_ms,  # type: ignore[union-attr]
                        hold_s=self.hold_s,
                    ),
                )
            except Exception as exc:
                # fail closed: the user asked that audio leave the Pi only after a wake word
                msg = f"local wake gate unavailable ({exc}); audio is not streamed, cameras and playback continue"
                log.error("%s", msg)
                self.status("error", msg)
                self.audio_source = None
        for cname, ccfg in self.config.cameras.items():
            self.cameras[cname] = Camera(
                cname,
                ccfg,
                room=self.room,
                clock=self.clock,
                on_status=self.status,
                loop_files=self.loop_files,
                keepalive_s=ccfg.motion_keepalive_s,
            )
        streams = ([f"audio/{self.room}/{self.name}"] if self.audio_source else []) + [
            f"video/{self.room}/{c}" for c in self.cameras
        ]
        heartbeat = self.deployment.hub.heartbeat
        link = NodeLink(
            self.name,
            "edge",
            endpoints,
            room=self.room,
            stages=streams,
            clock=self.clock,
            curve=curve,
            heartbeat=heartbeat,
        )
        self.link = link
        pub = Publisher(endpoints, curve=curve, ready_check=False)  # LinkWatch monitors this socket
        if self.config.playback is not None:
            # the player's resampler imports scipy, seconds on a Pi: not on the event loop
            with contextlib.suppress(ImportError):  # without scipy the player resamples linearly
                await asyncio.to_thread(importlib.import_module, "scipy.signal")
        self.player = self._make_player()
        capture: list[asyncio.Task[None]] = []
        others: list[asyncio.Task[None]] = []
        stopper = asyncio.create_task(self._stop.wait())
        await link.start()
        watch = LinkWatch(pub.socket)
        self.watch = watch
        try:
            others.append(asyncio.create_task(watch.run(), name="edge-link-watch"))
            others.append(
                asyncio.create_task(
                    self.outbox.run(self._counted(pub.publish), lambda: link.connected and watch.up, self.clock)
                )
            )
            if self.audio_source is not None:
                capture.append(asyncio.create_task(self._audio_loop(), name="edge-audio"))
            for cam in self.cameras.values():
                capture.append(asyncio.create_task(self._camera_loop(cam), name=f"edge-camera-{cam.name}"))
            if self.player is not None:
                others.append(asyncio.create_task(self._playback_loop(), name="edge-playback"))
            log.info("edge %s (%s): %s → %s", self.name, self.room, ", ".join(streams) or "no streams", self.address)
            if once:
                while not self._stop.is_set() and not self._sources_done(capture):
                    await asyncio.wait({stopper}, timeout=0.1)
                if not self._stop.is_set():
                    drain = asyncio.ensure_future(self.outbox.drain())
                    try:
                        async with asyncio.timeout(60.0):
                            while not drain.done():
                                if link.refused and not link.connected:  # another process has this name
                                    why = f"edge {self.name}: the hub at {self.address} refused it: {link.refused}"
                                    raise NameInUse(why)
                                await asyncio.wait({drain}, timeout=0.2)
                        await drain
                    finally:
                        drain.cancel()
                    if self.player is not None:
                        await self.player.wait_idle()
            else:
                await stopper
        finally:
            if self.audio_source is not None:
                self.audio_source.close()
            for cam in self.cameras.values():
                cam.close()
            for t in capture + others:
                t.cancel()
            await asyncio.gather(*capture, *others, return_exceptions=True)
            if self.player is not None:
                with contextlib.suppress(Exception):
                    await self.player.close()
            await link.close()
            pub.close()
            if self._gate_pool is not None:
                self._gate_pool.shutdown(wait=False)
            stopper.cancel()
