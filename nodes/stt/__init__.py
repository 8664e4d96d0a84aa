"""Streaming speech-to-text: wake-opened utterances, Silero endpointing, partials, final with words.

Every ``audio/<room>/<node>`` stream keeps a ring buffer of its last seconds. A ``wake`` event for
that room and node opens an utterance starting ``preroll`` before the detection (that audio goes to
speaker ID). Whisper decodes only from ``decode_margin`` before the detection: the wake phrase is
not part of the command, and a first word spoken right after it is still inside the margin.
Silero VAD (faster-whisper's) then watches the audio after the wake word; the utterance ends after
``trailing_silence`` of silence following speech, at ``max_length``, after ``no_speech_timeout``
without speech, or when the stream stops or skips.

While the person speaks, the growing utterance is re-decoded every ``partial_interval``; words that
two consecutive passes agree on become fixed and later partials never change them. As soon as the
speech pauses (``endpoint.SPEC_PAUSE_S``) the utterance is decoded once more (speculatively); if the pause
becomes the endpoint, that result is the final, so the final costs no decode after the endpoint.
That decode never waits behind a partial: a partial still queued is cancelled, none starts while it
is pending (CTranslate2 cannot be interrupted, so one already running finishes first).

Early endpoint: when the speculative decode is a complete command (``complete_command``: whisper
ended it with . ? or !, it has two words or more, its last word does not leave the sentence open,
and it agrees with the partials), the utterance ends after ``early_endpoint`` of silence instead of
``trailing_silence``. Speech that resumes before that continues the utterance as usual.

When the arbiter (``arbitration`` events) gives a wake word heard by several nodes to one of them,
the utterances the other nodes opened for it are dropped without a final.

A client (the Wyoming gateway for Home Assistant) claims an utterance with ``Listen``: "open" takes
the one opened near its time on that stream, or opens one there without a wake word (Home Assistant's
``transcribe``: the stream starts with the command); "close" ends it now (the client stopped sending);
"drop" discards it. The claimed utterance's transcripts carry the ``request_id``, and arbitration no
longer drops it.

At each pause in the speech it publishes the audio so far as a partial ``Utterance`` (speaker ID embeds
it while the speculative decode runs); at the endpoint it publishes the whole ``Utterance`` (``covered``
when no speech came after the last pause, so speaker ID answers from the embedding it has), then the
final ``Transcript`` with word timestamps; it carries the speaker if the matching ``speaker`` event
arrives in time (see ``speaker_wait``). The wake phrase is removed from the text (it is the
address, not the command): the leading words that end before the wake detection, or before the
first speech the VAD hears after it, are dropped, and a leading "hey jarvis" that whisper placed
later is removed by text. ``keep_wake_phrase`` turns this off (and decodes the whole pre-roll).

Whisper's encoder runs on ``encoder_window`` (10 s) instead of its fixed 30 s: a command is
shorter, and that pass is most of a CPU decode (``models.stt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import numpy as np

from sensorium.nodes.stt.endpoint import MIN_SPEECH_S, Durations, Heard, early_end, endpoint
from sensorium.nodes.stt.speaker_wait import SpeakerWait
from sensorium.nodes.stt.text import command_words, complete_command, stabilize
from sensorium.pipeline.messages import (
    AudioChunk,
    Listen,
    Message,
    SpeakerIdentified,
    Transcript,
    Utterance,
    WakeArbitrated,
    WakeDetected,
    Word,
)
from sensorium.pipeline.stage import MAX_STREAMS, Duration, Library, Stage, StageContext, StageOptions, check_audio

RATE = 16000
GAP_S = 0.25
"""A jump in capture time larger than this means audio was lost."""
LIVE_S = 0.5
"""A stream whose last chunk arrived within this long is live (a claim ahead of it waits for its audio)."""
IDLE_S = 60.0
"""A stream with no audio and no open utterance for this long is forgotten (ring and VAD freed)."""
STAND_DOWN_S = 1.0
"""A loser's wake detection within this of the winner's is the same spoken wake word."""


@dataclass
class _Utt:
    id: str
    t0: float
    wake_time: float
    wake_word: str
    samples: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    """Samples in the utterance so far."""
    closed: bool = False
    fixed: list[str] = field(default_factory=list)
    """Words of the partials that two passes agreed on; they never change."""
    prev: list[str] = field(default_factory=list)
    last_partial_n: int = 0
    dec0: int = 0
    """Sample where decoding starts (``decode_margin`` before the wake detection)."""
    partial_task: asyncio.Task | None = None
    partial_started: bool = False
    """The partial's decode is running on the model thread (it can no longer be cancelled)."""
    spec_task: asyncio.Task | None = None
    spec_speech_s: float = -1.0
    """VAD speech seconds when the speculative decode started (reused if no speech came after)."""
    spec_complete: bool = False
    """The finished speculative decode reads as a complete command (early endpoint allowed)."""
    onset: float | None = None
    """Seconds from ``t0`` to the first speech the VAD heard after the wake detection."""
    request_id: str = ""
    """The client request that claimed this utterance (``Listen``); its transcripts carry it."""
    spec_n: int = 0
    """Samples in the partial ``Utterance`` sent at the last pause (with the speculative decode)."""

    def audio(self, n: int | None = None) -> np.ndarray:
        pcm = np.concatenate(self.samples) if self.samples else np.zeros(0, np.int16)
        self.samples = [pcm]
        return pcm if n is None else pcm[:n]


@dataclass
class _Stream:
    room: str
    source: str
    ring: deque = field(default_factory=deque)
    """(capture time, samples) of recent chunks."""
    end_time: float = 0.0
    arrived: float = 0.0
    """Monotonic time the last chunk arrived (to notice a stream that stopped)."""
    utt: _Utt | None = None
    vad: Any = None
    last_end: float = 0.0
    """Endpoint of the previous utterance: the next one never reaches back before it."""


class SttStage(Stage):
    """faster-whisper streaming speech-to-text for wake-word-opened utterances."""

    class Options(StageOptions):
        """``[stages.stt]``."""

        model: str = "tiny.en"
        """faster-whisper model: a local CT2 directory, "tiny.en" (bundled), "base", "small", "large-v3" …"""
        fallback_model: str = "tiny.en"
        """Model used after the "smaller-model" degrade step."""
        compute_type: str = ""
        """CTranslate2 compute type ("" = int8 on CPU, float16 on CUDA)."""
        cpu_threads: int = 0
        """Decoder threads on CPU (0 = CTranslate2's default)."""
        beam_size: int = 1
        """Beam width; 1 (greedy) keeps partials cheap."""
        language: str = "en"
        """Language for multilingual models (English-only ".en" models ignore it)."""
        preroll: Duration = "2s"
        """Audio before the wake detection included in the utterance (wake phrase and first word)."""
        trailing_silence: Duration = "0.7s"
        """Silence after speech that ends the command (Home Assistant uses 0.7 s)."""
        early_endpoint: Duration = "0.3s"
        """Silence that ends a command whose pause decode reads as complete (``complete_command``).

        Trade-off: someone who pauses this long after a clause that reads as a whole sentence
        ("turn on the lights." … "in the kitchen") is cut there; the rest needs a new wake word.
        Open endings ("turn on the", "set a timer for") and text that changed between decodes
        always wait for ``trailing_silence``. ``early_endpoint = 0`` turns this off.
        """
        decode_margin: Duration = "1s"
        """Whisper decodes from this long before the wake detection, not from the start of the pre-roll.

        The detection's audio time is within about -0.05…+0.2 s of the end of the wake phrase (the
        benchmark voices; CPU load does not shift it), so any margin holds a first word spoken with
        no pause. 1 s keeps most of "hey jarvis" as context: with 0.2 s whisper heard "who is home"
        as "who is on" and "set a timer" as "said a timer"; the decode costs the same (the encoder
        window, not the audio, sets it). The ``Utterance`` for speaker ID keeps the whole pre-roll.
        """
        encoder_window: Duration = "10s"
        """Shortest whisper encoder window (clips longer than it get a longer one; "30s" = whisper's own)."""
        max_length: Duration = "12s"
        """Longest utterance, counted from the wake detection."""
        no_speech_timeout: Duration = "3s"
        """Close an utterance with no speech this long after the wake word."""
        vad_threshold: float = 0.5
        """Silero speech probability that counts as speech."""
        partials: bool = True
        """Publish partial transcripts while the person speaks."""
        partial_interval: Duration = "0.6s"
        """New audio between partial re-decodes."""
        speaker_wait: Duration = "0.3s"
        """Longest the final transcript waits (from the endpoint) for the speaker event of its utterance.

        It waits only as long as speaker ID has recently taken (plus 50 ms), or up to all of it when
        speaker ID embedded the speech at the last pause already (its answer is due at once), never when
        the event is already there, and not at all while no speaker stage answers (until one arrives).
        """
        stream_timeout: Duration = "1s"
        """An open utterance whose stream sends nothing this long is closed (stream stopped)."""
        keep_wake_phrase: bool = False
        """Keep the wake phrase in the transcript text."""
        wake_phrases: list[str] = msgspec.field(default_factory=lambda: ["hey jarvis", "alexa", "hey mycroft"])
        """Leading phrases removed from the text even when whisper times them after the detection."""
        cache_dir: str = ".cache/models"
        """Where joined/downloaded models are kept."""

    name: ClassVar[str] = "stt"
    serves: ClassVar[str] = "room"
    takeover_s: ClassVar[float] = 16.0  # pre-roll plus the longest utterance: a standby can decode any in flight
    consumes: ClassVar[tuple[type[Message], ...]] = (
        AudioChunk,
        WakeDetected,
        SpeakerIdentified,
        WakeArbitrated,
        Listen,
    )
    emits: ClassVar[tuple[type[Message], ...]] = (
        Transcript,
        Utterance,
    )
    answers: ClassVar[tuple[type[Message], ...]] = (Transcript,)
    libraries: ClassVar[tuple[Library, ...]] = (Library("faster_whisper", "faster-whisper (sensorium[workers])"),)
    droppable: ClassVar[bool] = False
    degrade_steps: ClassVar[tuple[str, ...]] = ("no-partials", "smaller-model")
    reports_latency: ClassVar[bool] = True  # partials and finals come from background decodes
    default_budget_ms: ClassVar[float] = 500.0

    # ------------------------------------------------------------------------------- lifecycle

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        d = Durations.of(self.ctx.options)
        self._d = d
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._speakers: dict[str, asyncio.Future] = {}
        self._busy_since = 0.0
        self._grace_until = 0.0
        self._stood_down: dict[tuple[str, str], float] = {}
        """Per stream, the wake time of the last detection the arbiter gave to another node."""
        self._tasks: set[asyncio.Task] = set()
        self._models: dict[str, Any] = {}
        self._model_loading: asyncio.Task | None = None
        self.decode_seconds: deque[float] = deque(maxlen=100)
        """Wall-clock seconds of recent decodes (diagnostics, tests)."""
        self._speaker_wait = SpeakerWait(d.speaker_wait)
        """How long a final waits for its speaker event, learnt from speaker ID's latency."""
        self.counts = {
            "partials": 0,
            "finals": 0,
            "finals_from_pause": 0,
            "early_endpoints": 0,
            "speculative": 0,
            "partials_cancelled": 0,
            "stood_down": 0,
            "handed_over": 0,
        }
        """Decode bookkeeping: finals taken from the decode started at the speech pause need no decode."""
        self._vad_pool: ThreadPoolExecutor | None = None
        """VAD's own thread (made in ``start``)."""
        self._watchdog: asyncio.Task | None = None
        """Closes utterances of streams that went quiet (made in ``start``)."""

    async def start(self) -> None:
        o = self.ctx.options
        # VAD runs on its own thread so endpointing never waits behind a whisper decode.
        self._vad_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stage-{self.ctx.name}-vad")
        self._models[o.model] = await self.ctx.run_blocking(self._load, o.model)
        # The first decode allocates CTranslate2's buffers; pay for it now, not on the first command.
        quiet = (np.random.default_rng(0).standard_normal(RATE) * 30).astype(np.int16)
        await self.ctx.run_blocking(self._models[o.model].transcribe, quiet)
        # Silero's ONNX session is made on the first wake word otherwise (and its first runs allocate).
        from sensorium.models.vad import StreamingVad

        vad = StreamingVad(threshold=o.vad_threshold)
        await asyncio.get_running_loop().run_in_executor(self._vad_pool, vad.feed, quiet)
        self._watchdog = asyncio.create_task(self._watch(), name="stt-watchdog")

    def _load(self, name: str) -> Any:
        from sensorium.models.stt import Transcriber

        o = self.ctx.options
        return Transcriber(
            name,
            device=self.ctx.device,
            compute_type=o.compute_type or None,
            cpu_threads=o.cpu_threads,
            cache_dir=o.cache_dir,
            language=o.language,
            beam_size=o.beam_size,
            window=self._d.encoder_window,
        )

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for st in self._streams.values():
            if st.utt is not None:
                self._close(st, st.end_time, "worker stopping")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)
        if self._vad_pool is not None:
            self._vad_pool.shutdown(wait=False, cancel_futures=True)

    def apply_degrade(self, level: int) -> None:
        self.level = level
        fallback = self.ctx.options.fallback_model
        if level >= 2 and fallback not in self._models and self._model_loading is None:

            async def load() -> None:
                self._models[fallback] = await self.ctx.run_blocking(self._load, fallback)

            self._model_loading = self._spawn(load())

    def model(self) -> Any:
        """The transcriber in use at the current degrade level."""
        o = self.ctx.options
        if self.level >= 2 and o.fallback_model in self._models:
            return self._models[o.fallback_model]
        return self._models[o.model]

    async def drain(self) -> None:
        """Wait for every pending decode and publication (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # ---------------------------------------------------------------------------------- inputs

    async def handle(self, msg: Message) -> None:
        self._busy_since = time.monotonic()
        try:
            await self._handle(msg)
        finally:
            now = time.monotonic()
            if now - self._busy_since > 0.2:  # we stalled: other streams' chunks may be queued behind us
                self._grace_until = now + self._d.stream_timeout
            self._busy_since = 0.0

    async def _handle(self, msg: Message) -> None:
        if isinstance(msg, AudioChunk):
            await self._audio(msg)
        elif isinstance(msg, WakeDetected):
            await self._wake(msg)
        elif isinstance(msg, WakeArbitrated):
            self._stand_down(msg)
        elif isinstance(msg, Listen):
            await self._listen(msg)
        elif isinstance(msg, SpeakerIdentified):
            self._speaker_wait.speaker_arrived(msg.utterance_id)
            fut = self._speakers.get(msg.utterance_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            await self.ctx.reject(msg, f"stt does not consume {type(msg).__name__}")

    def _stream(self, room: str, source: str, t: float) -> _Stream | str:
        """The stream's state, made if needed; or why none may be made."""
        st = self._streams.get((room, source))
        if st is None:
            if not self.ctx.sources and len(self._streams) >= MAX_STREAMS:
                return f"already {MAX_STREAMS} audio streams; no state for another"
            st = self._streams[(room, source)] = _Stream(room, source, end_time=t)
        return st

    async def _audio(self, msg: AudioChunk) -> None:
        problem = check_audio(msg, self.ctx.rooms) or self.ctx.stream_problem(msg.room, msg.source, msg.time)
        if problem:
            await self.ctx.reject(msg, problem)
            return
        pcm = msg.pcm().astype(np.int16)
        new = (msg.room, msg.source) not in self._streams
        st = self._stream(msg.room, msg.source, msg.time)
        if isinstance(st, str):
            await self.ctx.reject(msg, st)
            return
        if not new and abs(msg.time - st.end_time) > GAP_S:
            fresh = st.utt is not None and st.utt.n == 0 and abs(msg.time - st.utt.t0) <= GAP_S
            # A claim made while the old stream was still live, then a new stream on the same name starting at
            # the claim (the gateway's next request): the utterance starts with this chunk, nothing was lost.
            if st.utt is not None and not fresh:
                await self._error(st, f"audio jumped {msg.time - st.end_time:+.2f} s inside an utterance; closed it")
                self._close(st, st.end_time, "gap")
            st.ring.clear()
            st.last_end = 0.0  # the old timeline's endpoint must not hold the next utterance back
        st.arrived = time.monotonic()
        st.ring.append((msg.time, pcm))
        st.end_time = msg.time + len(pcm) / RATE
        keep = self._d.preroll + 1.0
        while st.ring and st.ring[0][0] < st.end_time - keep:
            st.ring.popleft()
        utt = st.utt
        if utt is not None:
            if utt.n == 0 and msg.time < utt.t0:  # opened by a claim ahead of this stream: it starts at t0
                pcm = pcm[min(len(pcm), round((utt.t0 - msg.time) * RATE)) :]
                if not len(pcm):
                    return
            utt.samples.append(pcm)
            utt.n += len(pcm)
            await self._advance(st, pcm)

    async def _wake(self, msg: WakeDetected) -> None:
        problem = self.ctx.stream_problem(msg.room, msg.node, msg.time)
        if problem:
            await self.ctx.reject(msg, problem)
            return
        key = (msg.room, msg.node)
        st = self._stream(msg.room, msg.node, msg.time)
        if isinstance(st, str):
            await self.ctx.reject(msg, st)
            return
        if st.utt is not None:
            return  # already listening to this stream
        if abs(self._stood_down.get(key, -1e9) - msg.time) < STAND_DOWN_S:
            return  # the arbiter already gave this wake word to another node
        t0 = max(msg.time - self._d.preroll, st.last_end)
        if st.ring:
            t0 = max(t0, st.ring[0][0])
        utt = _Utt(id=uuid.uuid4().hex[:16], t0=t0, wake_time=msg.time, wake_word=msg.word)
        after_wake: list[np.ndarray] = []
        for start, pcm in st.ring:
            end = start + len(pcm) / RATE
            if end <= t0:
                continue
            part = pcm[max(0, round((t0 - start) * RATE)) :]
            utt.samples.append(part)
            utt.n += len(part)
            if end > msg.time:
                after_wake.append(pcm[max(0, round((msg.time - start) * RATE)) :])
        if not st.ring:
            utt.t0 = msg.time  # no audio yet: the utterance starts with the next chunk
        if not self.ctx.options.keep_wake_phrase:
            utt.dec0 = min(utt.n, max(0, round((msg.time - self._d.decode_margin - utt.t0) * RATE)))
        st.utt = utt
        if st.vad is None:
            from sensorium.models.vad import StreamingVad

            st.vad = StreamingVad(threshold=self.ctx.options.vad_threshold)
        st.vad.reset()
        await self._advance(st, np.concatenate(after_wake) if after_wake else np.zeros(0, np.int16))

    async def _listen(self, msg: Listen) -> None:
        """A client's claim on a stream's speech (Home Assistant through the Wyoming gateway)."""
        key = (msg.room, msg.node)
        st = self._streams.get(key)
        if msg.action == "open":
            if st is None or st.utt is None:
                if st is not None:
                    st.last_end = max(st.last_end, msg.time)  # the request starts here: older audio is not part of it
                    live = time.monotonic() - st.arrived < LIVE_S
                    # A new stream on a reused name: its first chunk is no gap. A live stream only lags the
                    # claim (the microphone's audio is on its way): its audio from the claim on is the utterance.
                    if msg.time >= st.end_time and not live:
                        st.ring.clear()
                        st.end_time = msg.time
                await self._wake(WakeDetected(time=msg.time, room=msg.room, node=msg.node, source=msg.source))
                st = self._streams.get(key)
            if st is not None and st.utt is not None:
                st.utt.request_id = msg.request_id
                st.arrived = max(st.arrived, time.monotonic())  # its audio may follow the claim: not a stopped stream
            return
        utt = st.utt if st is not None else None
        if st is None or utt is None or (msg.request_id and utt.request_id != msg.request_id):
            return
        if msg.action == "close":
            self._close(st, st.end_time, "client-stopped")
        else:
            utt.closed = True
            st.last_end = st.end_time
            st.utt = None

    # ---------------------------------------------------------------------------- endpointing

    async def _advance(self, st: _Stream, new: np.ndarray) -> None:
        utt = st.utt
        assert utt is not None
        vad = st.vad
        s = await asyncio.get_running_loop().run_in_executor(self._vad_pool, vad.feed, new)
        if utt.closed or st.utt is not utt:
            return  # it ended (early endpoint) while this chunk was being scored
        if utt.onset is None and s.speech_s > 0:
            # The VAD was reset at the wake detection; this is the first speech it heard since.
            utt.onset = utt.wake_time - utt.t0 + s.heard_s - s.speech_s - s.silence_s
        d = self._d
        step = endpoint(
            d, Heard(s.speech_s, s.silence_s, st.end_time - utt.wake_time), utt.spec_speech_s, utt.spec_complete
        )
        if step.close is not None:
            self._close(st, st.end_time, step.close)
            return
        if step.speculate:
            # The speaker paused: decode now; if the pause becomes the endpoint this is the final.
            utt.spec_speech_s = s.speech_s
            utt.spec_complete = False
            self._cancel_partial(utt)
            utt.spec_task = self._spawn(self._speculate(st, utt, utt.n, s.speech_s))
            self.counts["speculative"] += 1
            # Speaker ID embeds the speech so far meanwhile: if this pause is the endpoint, the speaker
            # is known when the final is (the endpoint's Utterance says it is ``covered``).
            utt.spec_n = utt.n
            await self.ctx.publish(
                Utterance(
                    time=utt.t0 + utt.n / RATE,
                    room=st.room,
                    utterance_id=utt.id,
                    t0=utt.t0,
                    t1=utt.t0 + utt.n / RATE,
                    rate=RATE,
                    data=utt.audio(utt.n).tobytes(),
                    partial=True,
                )
            )
        partial_due = utt.n - utt.last_partial_n >= d.partial_interval * RATE
        busy = any(t is not None and not t.done() for t in (utt.partial_task, utt.spec_task))
        spoke = s.speech_s >= MIN_SPEECH_S
        # Partials only while the person speaks, and never queued in front of a speculative decode.
        if self.ctx.options.partials and self.level < 1 and s.in_speech and spoke and partial_due and not busy:
            utt.last_partial_n = utt.n
            utt.partial_started = False
            utt.partial_task = self._spawn(self._partial(st, utt, utt.n))

    def _cancel_partial(self, utt: _Utt) -> None:
        """Drop a partial that is still queued on the model thread (a running one cannot be stopped)."""
        task = utt.partial_task
        if task is not None and not task.done() and not utt.partial_started:
            task.cancel()
            self.counts["partials_cancelled"] += 1

    def _stand_down(self, msg: WakeArbitrated) -> None:
        """Drop the utterances that nodes losing the arbitration opened on this wake word."""
        for node, room in zip(msg.losers, msg.loser_rooms, strict=False):
            key = (room, node)
            if key not in self._streams:
                continue  # no audio from it here: nothing to stand down (and no state for unknown names)
            self._stood_down[key] = msg.wake_time
            st = self._streams.get(key)
            claimed = st is not None and st.utt is not None and st.utt.request_id  # a client's request outranks it
            if (
                st is not None
                and st.utt is not None
                and not claimed
                and abs(st.utt.wake_time - msg.wake_time) < STAND_DOWN_S
            ):
                self.ctx.log.info("stt: %s/%s stands down (another node won the wake word)", room, node)
                st.utt.closed = True
                st.last_end = st.end_time
                st.utt = None
                self.counts["stood_down"] += 1

    def _close(self, st: _Stream, t_end: float, reason: str) -> None:
        utt = st.utt
        if utt is None:
            return
        st.utt = None
        st.last_end = t_end
        utt.closed = True
        vad = st.vad
        reuse = utt.spec_task if vad is not None and vad.state.speech_s == utt.spec_speech_s else None
        spoke = vad is not None and vad.state.speech_s >= MIN_SPEECH_S
        self._spawn(self._finish(st, utt, t_end, reason, reuse, spoke))

    async def _watch(self) -> None:
        """Close utterances whose stream stopped sending audio."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if self._busy_since or now < self._grace_until:
                continue  # a slow handle call (overloaded CPU) is not a stopped stream
            for key, st in list(self._streams.items()):
                if st.utt is not None and now - st.arrived > self._d.stream_timeout and not self.ctx.serves(st.room):
                    # placement handed the room to another worker mid-utterance (a hand-back racing a wake word):
                    # it replays the utterance from its takeover ring; a final from here would be a second one
                    self.ctx.log.info("stt: %s/%s handed to another worker mid-utterance; it finishes it", *key)
                    st.utt.closed = True
                    st.last_end = st.end_time
                    st.utt = None
                    self.counts["handed_over"] += 1
                elif st.utt is not None and now - st.arrived > self._d.stream_timeout:
                    await self._error(st, f"audio stopped {now - st.arrived:.1f} s into an utterance; closed it")
                    self._close(st, st.end_time, "stream-stopped")
                elif st.utt is None and now - st.arrived > IDLE_S:
                    del self._streams[key]
                    self._stood_down.pop(key, None)
                    self.ctx.log.info("stt: %s/%s idle for %.0f s; state freed", *key, now - st.arrived)

    # -------------------------------------------------------------------------------- decoding

    async def _decode(self, utt: _Utt, n: int, words: bool = True, partial: bool = False) -> Any:
        """Decode the utterance's samples ``utt.dec0:n``; word times are from the utterance start."""
        model = self.model()
        pcm = utt.audio(n)[utt.dec0 :]  # joined here, not on the decode thread, while chunks keep arriving
        result = await self.ctx.run_blocking(self._transcribe, model, pcm, words, utt if partial else None)
        self.decode_seconds.append(result.seconds)
        off = utt.dec0 / RATE
        for w in result.words:
            w.start += off
            w.end += off
        return result

    @staticmethod
    def _transcribe(model: Any, pcm: np.ndarray, words: bool, partial_of: _Utt | None) -> Any:
        if partial_of is not None:
            partial_of.partial_started = True  # from here on the partial cannot be cancelled
        return model.transcribe(pcm, None, words)

    async def _speculate(self, st: _Stream, utt: _Utt, n: int, speech_s: float) -> Any:
        """Decode at a pause; the result is the final if no speech follows, else it serves as a partial."""
        result = await self._decode(utt, n)
        if utt.closed or st.utt is not utt or utt.spec_speech_s != speech_s:
            return result
        if st.vad.state.speech_s != speech_s:  # the person went on speaking
            if self.ctx.options.partials and self.level < 1:
                await self._publish_partial(st, utt, n, result)
            return result
        words = [w.word.strip() for w in self._command_words(utt, result.words)]
        utt.spec_complete = complete_command(words, utt.prev, utt.fixed)
        self.ctx.log.debug("stt: pause decode %r complete=%s (partial %r)", words, utt.spec_complete, utt.prev)
        if early_end(self._d, utt.spec_complete, st.vad.state.silence_s):
            self._close(st, st.end_time, "early-endpoint")
        return result

    async def _partial(self, st: _Stream, utt: _Utt, n: int) -> None:
        if n - utt.dec0 < 0.3 * RATE:
            return  # nothing after the wake word yet
        # Word timestamps cost an alignment pass; a partial needs them only to drop the wake phrase.
        result = await self._decode(utt, n, words=not self.ctx.options.keep_wake_phrase, partial=True)
        await self._publish_partial(st, utt, n, result)

    async def _publish_partial(self, st: _Stream, utt: _Utt, n: int, result: Any) -> None:
        if utt.closed:
            return  # the final is on its way; a late partial would only confuse
        cur = [w.word.strip() for w in self._command_words(utt, result.words)]
        if not cur:
            return  # nothing after the wake word yet: an empty partial says nothing
        utt.fixed, text = stabilize(utt.fixed, utt.prev, cur)
        utt.prev = cur
        self.counts["partials"] += 1
        partial = Transcript(
            time=utt.t0 + n / RATE,
            room=st.room,
            utterance_id=utt.id,
            final=False,
            text=text,
            t0=utt.t0,
            request_id=utt.request_id,
        )
        await self.ctx.publish(partial)
        await self.ctx.report(partial, partial.time)  # the budget applies to what we answer, from its audio

    def _command_words(self, utt: _Utt, words: list[Any]) -> list[Any]:
        """The words after the wake phrase (see the module docstring)."""
        if self.ctx.options.keep_wake_phrase:
            return list(words)
        # Whisper hears the end of the wake phrase inside the margin as a word ("this", "is"): a word
        # that ends before the command's speech began (the VAD's first speech after the wake) is not
        # part of the command.
        cut = max(utt.wake_time - utt.t0 + 0.05, utt.onset if utt.onset is not None else 0.0)
        return command_words(words, cut, self.ctx.options.wake_phrases)

    async def _finish(self, st: _Stream, utt: _Utt, t_end: float, reason: str, reuse: Any, spoke: bool) -> None:
        t1 = t_end
        if not spoke:
            await self.ctx.publish(
                Transcript(
                    time=t1,
                    room=st.room,
                    utterance_id=utt.id,
                    final=True,
                    text="",
                    t0=utt.t0,
                    t1=t1,
                    request_id=utt.request_id,
                )
            )
            return
        pcm = utt.audio()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._speakers[utt.id] = fut
        try:
            await self.ctx.publish(
                Utterance(
                    time=t1,
                    room=st.room,
                    utterance_id=utt.id,
                    t0=utt.t0,
                    t1=t1,
                    rate=RATE,
                    data=pcm.tobytes(),
                    covered=utt.spec_n if reuse is not None else 0,  # no speech after the last pause
                )
            )
            sent = self._speaker_wait.utterance_sent(utt.id)
            result = None
            if reuse is not None:
                with contextlib.suppress(Exception):
                    result = await reuse
                    self.counts["finals_from_pause"] += 1
            if result is None:
                result = await self._decode(utt, utt.n)
            words = self._command_words(utt, result.words)
            text = " ".join(w.word.strip() for w in words).strip()
            covered = reuse is not None and utt.spec_n > 0  # speaker ID embedded this speech at the pause
            remaining = self._speaker_wait.deadline(sent, covered) - time.monotonic()
            speaker, score = None, 0.0
            if remaining > 0 and not fut.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(fut)
            if fut.done():
                ev: SpeakerIdentified = fut.result()
                speaker, score = ev.person, ev.score
            else:
                self._speaker_wait.gave_up()  # until a speaker event arrives again, even a late one
            final = Transcript(
                time=t1,
                room=st.room,
                utterance_id=utt.id,
                final=True,
                text=text,
                words=[Word(w.word.strip(), w.start, w.end, w.probability) for w in words],
                t0=utt.t0,
                t1=t1,
                speaker=speaker,
                speaker_score=score,
                request_id=utt.request_id,
            )
            await self.ctx.publish(final)
            await self.ctx.report(final, t1)  # from the endpoint: the input this final answers
            self.counts["finals"] += 1
            if reason == "early-endpoint":
                self.counts["early_endpoints"] += 1
            self.ctx.log.info("stt: %s/%s %s (%s): %r", st.room, st.source, utt.id, reason, text)
        finally:
            self._speakers.pop(utt.id, None)

    # ---------------------------------------------------------------------------------- helpers

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.ctx.log.error("stt task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def _error(self, st: _Stream, reason: str) -> None:
        await self.ctx.reject(AudioChunk(room=st.room, source=st.source, time=st.end_time), reason)
