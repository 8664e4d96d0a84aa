"""TTS stage: ``Say`` commands in, ``TtsAudio`` sentence chunks out, to a room or to wherever a person is.

Text streams in as several ``Say`` pieces of one ``answer_id`` (``more=True`` until the last). Each
sentence is synthesized as soon as it is complete and leaves at once, so the first audio plays while
the agent is still writing the rest. ``StopPlayback`` (barge-in) cancels the rest of an answer: pieces
still arriving for it are dropped, and a sentence being synthesized is not sent. Presence events keep
a map person → room for answers addressed to a person. An answer with ``reply_to`` is for the client
that asked (Home Assistant through the Wyoming gateway): its ``TtsAudio`` has no room, so no edge
plays it, and the client collects it by ``answer_id``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from sensorium.models.tts import PiperTts, SentenceSplitter, TtsBackend, TtsError, load_backend
from sensorium.pipeline.media import resample
from sensorium.pipeline.messages import InputError, Message, Presence, Say, StopPlayback, TtsAudio
from sensorium.pipeline.stage import Library, Stage, StageContext, StageOptions


class TtsOptions(StageOptions):
    """``[stages.tts]``."""

    backend: str = "piper"
    """Default voice: "piper" (bundled Joe voice), "piper:/path/voice.onnx", "flite[:voice]", "espeak[:voice]"."""
    fallback: str = "flite"
    """Cheaper backend used when the stage degrades (overruns its budget)."""
    rate: int = 22050
    """Sample rate of the published audio (the rooms' playback rate)."""
    room_rates: dict[str, int] = {}
    """Per-room playback rate overriding ``rate``."""
    max_chars: int = 200
    """A run-on sentence longer than this is cut at a comma or space so audio starts sooner."""
    sentence_pause_ms: int = 150
    """Silence appended to each sentence (voices end sentences abruptly; streamed chunks need the gap)."""
    answer_timeout: float = 60.0
    """Seconds without a piece after which an unfinished answer's state is dropped."""
    voice_noise: bool = True
    """Piper's natural variation, drawn afresh for every sentence; false: the same text always gives the
    same samples (reproducible recordings, tests and benchmarks)."""


@dataclass
class _Answer:
    room: str
    backend: TtsBackend | None
    splitter: SentenceSplitter
    chunk: int = 0
    cancelled: bool = False
    last_piece: float = field(default_factory=time.monotonic)


class TtsStage(Stage):
    """Streams answers sentence by sentence as ``TtsAudio`` to the target room."""

    Options = TtsOptions
    name = "tts"
    consumes: ClassVar[tuple[type[Message], ...]] = (
        Say,
        StopPlayback,
        Presence,
    )
    emits: ClassVar[tuple[type[Message], ...]] = (
        TtsAudio,
        InputError,
    )
    answers: ClassVar[tuple[type[Message], ...]] = (TtsAudio,)
    libraries: ClassVar[tuple[Library, ...]] = (
        Library("piper", "piper-tts (sensorium[tts]), or the flite / espeak-ng Debian packages"),
    )
    droppable = False
    degrade_steps = ("fallback_voice",)
    default_budget_ms = 1500.0

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.opts: TtsOptions = ctx.options
        self.backend: TtsBackend = self._load(self.opts.backend)
        self._fallback: TtsBackend | None = None
        self._voices: dict[str, TtsBackend] = {}
        self.answers: dict[str, _Answer] = {}
        self.where: dict[str, str] = {}
        """Person → room they are in now (from presence events)."""

    def _load(self, spec: str) -> TtsBackend:
        backend = load_backend(spec, self.ctx.device)
        if isinstance(backend, PiperTts):
            backend.variation = self.opts.voice_noise
        return backend

    async def start(self) -> None:
        await self.ctx.run_blocking(self.backend.load)
        # Warm the model so the first answer does not pay for lazy initialisation.
        await self.ctx.run_blocking(self.backend.synthesize, "Ready.")

    async def handle(self, msg: Message) -> None:
        if isinstance(msg, Presence):
            self._on_presence(msg)
        elif isinstance(msg, StopPlayback):
            self._on_stop(msg)
        elif isinstance(msg, Say):
            await self._on_say(msg)

    # ------------------------------------------------------------------------------------ events

    def _on_presence(self, msg: Presence) -> None:
        if not msg.person or msg.person == "unknown":
            return
        if msg.state == "left":
            if self.where.get(msg.person) == msg.room:
                del self.where[msg.person]
        else:
            self.where[msg.person] = msg.room

    def _on_stop(self, msg: StopPlayback) -> None:
        for aid, ans in self.answers.items():
            if (msg.answer_id and aid == msg.answer_id) or (not msg.answer_id and ans.room == msg.room):
                ans.cancelled = True
        if msg.answer_id and msg.answer_id not in self.answers:
            # Stop arrived before the answer's first piece: remember it so the answer never starts.
            self.answers[msg.answer_id] = _Answer(msg.room, None, SentenceSplitter(), cancelled=True)

    async def _on_say(self, msg: Say) -> None:
        self._expire()
        aid = msg.answer_id or uuid.uuid4().hex[:12]
        ans = self.answers.get(aid)
        if ans is None:
            # An answer for the client that asked (reply_to) goes to no room's loudspeaker: the client takes it.
            room = "" if msg.reply_to else msg.room or self.where.get(msg.person, "")
            if not room and not msg.reply_to:
                who = f"person {msg.person!r} is not in any known room" if msg.person else "no room or person given"
                await self.ctx.reject(msg, f"cannot speak answer {aid}: {who}")
                if msg.more:
                    self.answers[aid] = _Answer("", None, SentenceSplitter(), cancelled=True)
                return
            if room and (problem := self.ctx.room_problem(room)):
                await self.ctx.reject(msg, problem)
                if msg.more:
                    self.answers[aid] = _Answer("", None, SentenceSplitter(), cancelled=True)
                return
            try:
                backend = await self._backend_for(msg.voice)
            except TtsError as exc:
                await self.ctx.reject(msg, str(exc))
                if msg.more:
                    self.answers[aid] = _Answer("", None, SentenceSplitter(), cancelled=True)
                return
            ans = _Answer(room, backend, SentenceSplitter(self.opts.max_chars))
            self.answers[aid] = ans
        ans.last_piece = time.monotonic()
        if ans.cancelled:
            if not msg.more:
                self.answers.pop(aid, None)
            return
        sentences = ans.splitter.feed(msg.text)
        if not msg.more:
            rest = ans.splitter.flush()
            if rest:
                sentences.append(rest)
        for i, sentence in enumerate(sentences):
            last = not msg.more and i == len(sentences) - 1
            if not await self._speak(aid, ans, sentence, msg, final=last):
                break
        if not msg.more:
            if not sentences and not ans.cancelled:
                # The final piece added no sentence: an empty final chunk tells the edge the answer is complete.
                await self._publish(aid, ans, "", b"", ans.backend, msg, final=True)
            self.answers.pop(aid, None)

    async def _speak(self, aid: str, ans: _Answer, sentence: str, msg: Say, final: bool) -> bool:
        backend = ans.backend or self.backend
        if self.level >= 1:
            backend = await self._fallback_backend()
        try:
            audio, rate = await self.ctx.run_blocking(backend.synthesize, sentence)
        except TtsError as exc:
            await self.ctx.reject(msg, f"synthesis failed for answer {aid}: {exc}")
            ans.cancelled = True
            return False
        if ans.cancelled:  # barge-in while this sentence was being synthesized
            return False
        out_rate = self.opts.room_rates.get(ans.room, self.opts.rate)
        pcm = resample(audio, rate, out_rate)
        if len(pcm) and self.opts.sentence_pause_ms > 0:
            pcm = np.concatenate([pcm, np.zeros(out_rate * self.opts.sentence_pause_ms // 1000, np.int16)])
        await self._publish(aid, ans, sentence, pcm.tobytes(), backend, msg, final=final, rate=out_rate)
        return True

    async def _publish(
        self,
        aid: str,
        ans: _Answer,
        text: str,
        data: bytes,
        backend: TtsBackend | None,
        msg: Say,
        final: bool,
        rate: int | None = None,
    ) -> None:
        await self.ctx.publish(
            TtsAudio(
                room=ans.room,
                time=msg.time or self.ctx.clock.now(),
                answer_id=aid,
                chunk=ans.chunk,
                text=text,
                rate=rate or self.opts.room_rates.get(ans.room, self.opts.rate),
                final=final,
                data=data,
            )
        )
        ans.chunk += 1

    # ---------------------------------------------------------------------------------- helpers

    async def _backend_for(self, voice: str | None) -> TtsBackend:
        if not voice:
            return self.backend
        if voice not in self._voices:
            # A bare voice name picks a voice of the default backend's family ("rms" for flite).
            spec = voice if (":" in voice or voice.endswith(".onnx")) else f"{self.opts.backend.split(':')[0]}:{voice}"
            backend = self._load(spec)
            await self.ctx.run_blocking(backend.load)
            self._voices[voice] = backend
        return self._voices[voice]

    async def _fallback_backend(self) -> TtsBackend:
        if self._fallback is None:
            fb = self._load(self.opts.fallback)
            await self.ctx.run_blocking(fb.load)
            self._fallback = fb
        return self._fallback

    def _expire(self) -> None:
        now = time.monotonic()
        for aid in [a for a, s in self.answers.items() if now - s.last_piece > self.opts.answer_timeout]:
            del self.answers[aid]
