"""A text-to-speech request: text → a ``Say`` for no room, the tts stage's audio back to the client.

``synthesize`` comes back as one ``audio-start/chunk/stop``. Streaming: ``synthesize-start`` and
``synthesize-chunk`` stream text into one answer and every sentence comes back as its own audio stream
while text still arrives; ``synthesize-stop`` flushes, then ``synthesize-stopped``. All sentences share one
audio format (the tts stage's rate).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.tts import SynthesizeStopped

from sensorium.bridges.wyoming.connection import Connection, RequestFailed
from sensorium.bridges.wyoming.gateway import Answer
from sensorium.pipeline.messages import InputError, Message, Say, TtsAudio

OUT_SAMPLES = 2048
"""Samples per ``audio-chunk`` sent to clients."""


def speakable(text: str) -> bool:
    """True if ``text`` has something a voice can say (a letter or a digit)."""
    return bool(re.search(r"[^\W_]", text))


class TtsStream:
    """Text for one answer of the tts stage, and its audio back to the client."""

    def __init__(self, h: Connection, voice: str | None, *, per_sentence: bool, answer: Answer | None = None) -> None:
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
