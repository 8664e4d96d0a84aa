"""A speech-to-text request: ``transcribe`` + audio → ``transcript`` (streamed as it is made).

``Listen`` opens an utterance at the first sample (no wake word: Home Assistant's stream is the command)
and the audio follows; the stt stage endpoints it with its own VAD, so ``transcript`` may come before
``audio-stop``. Partials go out as ``transcript-start`` / ``transcript-chunk`` (words two partials agree
on, never retracted), then ``transcript`` with the speaker in its data, then ``transcript-stop``. Audio
that is a satellite's stream, or a command another client claimed (the ESPHome device), relayed by Home
Assistant is recognised by its first 0.2 s and gets the transcript the stage already made for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Literal

from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart

from sensorium.bridges.wyoming.audio import RATE, AudioIn
from sensorium.bridges.wyoming.connection import Connection, RequestFailed
from sensorium.bridges.wyoming.gateway import MATCH_BYTES, PoolFull, Request
from sensorium.bridges.wyoming.relayed import Claim
from sensorium.pipeline.messages import Listen
from sensorium.pipeline.messages import Transcript as BusTranscript

log = logging.getLogger("sensorium.wyoming")


def stable_words(prev: list[str], cur: list[str]) -> list[str]:
    """The words two consecutive partials agree on, from the start."""
    k = 0
    while k < min(len(prev), len(cur)) and prev[k].lower().strip(".,!?") == cur[k].lower().strip(".,!?"):
        k += 1
    return cur[:k]


class SttStream:
    """One ``audio-start`` … ``audio-stop`` of a speech-to-text request."""

    def __init__(self, h: Connection, language: str, start: AudioStart) -> None:
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
            if isinstance(run, Claim):
                gw.metrics.relayed_commands += 1
                log.info("%s: speech-to-text request is %s's command in %s, already transcribed", gw.name,
                         run.request_id.rsplit("-", 1)[0], run.room)  # fmt: skip
            else:
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
        if self.request is None:
            await self._decide()
        if not self.linked and not self.answered:
            rest = self.audio.flush()
            if rest:
                await self._publish(rest)
            await self._claim("close")
        self.stopped_at = time.monotonic()
        await self._task

    async def abandon(self) -> None:
        """The client went away or started over: the stage drops the utterance."""
        if self.over:
            return
        self.over = True
        self._task.cancel()
        if self.node and not self.answered and self.request is not None:
            await self._claim("drop")
        self._release()

    async def _claim(self, action: Literal["close", "drop"]) -> None:
        """End this request's utterance at the audio sent so far: finish it now, or discard it."""
        assert self.request is not None
        gw = self.h.gw
        listen = Listen(room=gw.room, node=self.node, action=action, time=self.t0 + self.sent / RATE,
                        request_id=self.request.request_id)  # fmt: skip
        await gw.bus.publish(listen)

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
