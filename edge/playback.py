"""The edge node's player: plays ``TtsAudio`` answers in arrival order and reports what it played.

Audio goes to a sounddevice output stream, or (``wav_dir`` set: tests, headless runs) into one WAV
file per answer written at real-time pace, so a barge-in cuts the file where a speaker would have
gone quiet. A small jitter buffer holds an answer's start until ``jitter_ms`` of it (or its last
chunk) is here; audio is resampled to the device rate. ``PlaybackStatus`` started / ended / stopped
(with the sentences fully played, so the agent knows what was cut off) goes through ``publish``.
The player keeps only a short lead queued in the sink (150 ms for a sound card, one 20 ms block for
the WAV sink); ``stop`` drops that queue, so a barge-in is heard within the device's own buffer.
One ``Player`` (one output stream) lives as long as the edge process: PortAudio's ALSA "pulse"
device was seen to stall a second stream opened in the same process after the first was closed.
No torch needed (scipy only if installed): this runs on a Raspberry Pi.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import threading
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.edge.audio import output_closed, output_stream
from sensorium.edge.echo import ReferenceTap
from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import PlaybackConfig
from sensorium.pipeline.media import resample
from sensorium.pipeline.messages import Message, PlaybackStatus, TtsAudio

log = logging.getLogger("sensorium.playback")


# ------------------------------------------------------------------------------------------ sinks


class Sink(abc.ABC):
    """Where played audio goes. ``write`` never blocks; the player keeps ``lead`` seconds queued ahead."""

    rate: int = 22050
    latency: float = 0.0
    """Seconds between a sample leaving the queue and leaving the speaker (device buffer)."""
    lead: float = 0.0
    """Audio the player keeps queued ahead of what is playing (device sinks need a cushion)."""
    written: int = 0
    """Samples written since the sink opened."""

    def begin(self, answer_id: str, room: str) -> None:
        """An answer starts."""

    @abc.abstractmethod
    def write(self, block: np.ndarray) -> None:
        """Queue one block of int16 samples at ``rate``."""

    @abc.abstractmethod
    def queued(self) -> float:
        """Seconds of written audio not played yet."""

    def played(self) -> int:
        """Samples played so far (``written`` minus what is still queued)."""
        return self.written - round(self.queued() * self.rate)

    def flush_queued(self) -> None:
        """Drop audio written but not played yet (barge-in)."""

    def end(self, answer_id: str) -> None:
        """The answer is over (played to the end or stopped)."""

    def close(self) -> None:
        """Release the device or file."""


class WavSink(Sink):
    """One WAV file per answer, ``<wav_dir>/<room>_<answer_id>.wav``, consumed at real-time pace.

    A virtual clock plays the written audio like a sound card would, so the player paces its writes
    the same way for both sinks and a stopped answer's file ends where a speaker would have gone quiet.
    """

    def __init__(self, wav_dir: str | Path, rate: int) -> None:
        self.dir = Path(wav_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.written = 0
        self._busy_until = 0.0
        self._w: wave.Wave_write | None = None
        self.files: list[Path] = []
        """Files written, in order."""

    def path_for(self, answer_id: str, room: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{room}_{answer_id}")
        return self.dir / f"{safe}.wav"

    def begin(self, answer_id: str, room: str) -> None:
        self.end(answer_id)
        path = self.path_for(answer_id, room)
        self._w = wave.open(str(path), "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(self.rate)
        self.files.append(path)

    def write(self, block: np.ndarray) -> None:
        if self._w is not None:
            self._w.writeframes(block.astype("<i2", copy=False).tobytes())
        now = time.monotonic()
        self._busy_until = max(self._busy_until, now) + len(block) / self.rate
        self.written += len(block)

    def queued(self) -> float:
        return max(0.0, self._busy_until - time.monotonic())

    def flush_queued(self) -> None:
        # The file already holds the (at most one block) queued ahead; count it as played.
        self._busy_until = time.monotonic()

    def end(self, answer_id: str) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    def close(self) -> None:
        self.end("")


class SoundDeviceSink(Sink):
    """A sounddevice output stream whose callback drains a queue of written blocks."""

    def __init__(self, device: str | int | None, rate: int, block: int, lead: float = 0.15) -> None:
        import sounddevice as sd  # imported here: only nodes that really play need PortAudio

        self.rate = rate
        self.lead = lead
        self.written = 0
        self._consumed = 0
        self._q: collections.deque[bytes] = collections.deque()
        self._pending = 0
        self._lock = threading.Lock()
        with output_stream():  # no PortAudio re-scan (microphone retry) while this opens or plays
            self._stream = sd.RawOutputStream(
                samplerate=rate, blocksize=block, device=device, channels=1, dtype="int16", callback=self._callback
            )
        self.latency = float(self._stream.latency)
        try:
            self._stream.start()
        except Exception:
            self.close()  # releases the stream and lets microphone re-scans run again
            raise

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        need = frames * 2
        out = bytearray()
        with self._lock:
            while self._q and len(out) < need:
                chunk = self._q.popleft()
                take = need - len(out)
                out += chunk[:take]
                if len(chunk) > take:
                    self._q.appendleft(chunk[take:])
            self._pending -= len(out)
            self._consumed += len(out) // 2
        outdata[: len(out)] = bytes(out)
        outdata[len(out) :] = b"\x00" * (need - len(out))

    def write(self, block: np.ndarray) -> None:
        data = block.astype("<i2", copy=False).tobytes()
        with self._lock:
            self._q.append(data)
            self._pending += len(data)
            self.written += len(block)

    def flush_queued(self) -> None:
        with self._lock:
            self.written -= self._pending // 2
            self._q.clear()
            self._pending = 0

    def queued(self) -> float:
        with self._lock:
            return self._pending / 2 / self.rate

    def played(self) -> int:
        with self._lock:
            return self._consumed

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        finally:
            output_closed()


# ----------------------------------------------------------------------------------------- player


@dataclass
class _Answer:
    answer_id: str
    chunks: collections.deque[TtsAudio] = field(default_factory=collections.deque)
    final_seen: bool = False
    started: bool = False
    stopped: bool = False
    played: list[str] = field(default_factory=list)
    pending: collections.deque[tuple[int, str]] = field(default_factory=collections.deque)
    """Sentences written to the sink but not fully played: (sink sample position of their end, text)."""
    last_arrival: float = field(default_factory=time.monotonic)


class Player:
    """Plays a room's answers one after another; ``stop`` cuts the current one within a block."""

    def __init__(
        self,
        config: PlaybackConfig,
        room: str,
        node: str,
        clock: Clock,
        publish: Callable[[Message], Awaitable[None]],
        block_ms: int = 20,
        idle_timeout: float = 10.0,
        sink: Sink | None = None,
        tap: ReferenceTap | None = None,
    ) -> None:
        self.config = config
        self.tap = tap
        """Gets every block written to the sink, stamped with the hub time it leaves the speaker."""
        self.room = room
        self.node = node
        self.clock = clock
        self.publish = publish
        self.block = max(1, config.rate * block_ms // 1000)
        self.idle_timeout = idle_timeout
        if sink is None:
            sink = WavSink(config.wav_dir, config.rate) if config.wav_dir else None
        if sink is None:
            sink = SoundDeviceSink(config.device, config.rate, self.block)
        self.sink = sink
        # Import the resampler now: a first import of scipy.signal takes ~1 s, too long inside the first answer.
        resample(np.zeros(2, np.int16), 16000, 22050)
        self._answers: dict[str, _Answer] = {}
        self._order: collections.deque[str] = collections.deque()
        self._stopped_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._wake = asyncio.Event()
        self._stop_flag = asyncio.Event()
        self._silent = asyncio.Event()
        self._silent.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.current: str = ""
        """Answer playing now ("" when idle)."""
        self.first_audio: dict[str, float] = {}
        """Hub time at which each answer's first block went to the sink."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.gain = 1.0
        """Scale of the played samples (``PlaybackGain``: 0 muted … 1 as synthesized)."""

    # ------------------------------------------------------------------------------------- API

    async def feed(self, msg: TtsAudio) -> None:
        """Queue one chunk (ignored if its answer was stopped)."""
        if self._closed or msg.answer_id in self._stopped_ids:
            return
        if msg.rate <= 0 or len(msg.data) % 2:
            log.warning("%s: dropped malformed TTS chunk %s#%d", self.node, msg.answer_id, msg.chunk)
            return
        ans = self._answers.get(msg.answer_id)
        if ans is None:
            ans = self._answers[msg.answer_id] = _Answer(msg.answer_id)
            self._order.append(msg.answer_id)
        ans.chunks.append(msg)
        self._idle.clear()
        ans.final_seen = ans.final_seen or msg.final
        ans.last_arrival = time.monotonic()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"player-{self.room}")
        self._wake.set()

    def set_gain(self, volume: float, muted: bool = False) -> None:
        """Play from the next chunk on at ``volume`` (0 … 1, linear amplitude), or silent when ``muted``."""
        if volume != volume or volume < 0:  # NaN or negative: a clear no
            log.warning("%s: ignored playback volume %r (expected 0 … 1)", self.node, volume)
            return
        self.gain = 0.0 if muted else min(float(volume), 1.0)
        log.info("%s: playback gain %.2f%s", self.node, self.gain, " (muted)" if muted else "")

    async def stop(self, answer_id: str = "") -> float:
        """Stop ``answer_id`` ("" = whatever is playing and everything queued).

        Returns seconds from the call until the player went silent (0 when nothing was playing).
        """
        t0 = time.perf_counter()
        targets = [answer_id] if answer_id else [*self._order]
        for aid in targets:
            self._remember_stopped(aid)
            ans = self._answers.get(aid)
            if ans is not None:
                ans.stopped = True
        if self.current and self.current in targets:
            self._silent.clear()
            cur = self._answers.get(self.current)
            if cur is not None:
                self._mark_played(cur)  # before the flush: what was heard up to now
            self._stop_flag.set()
            self.sink.flush_queued()
            self._wake.set()
            await self._silent.wait()
            return time.perf_counter() - t0 + self.sink.latency
        for aid in targets:  # queued, never started: just forget them
            if aid in self._answers and not self._answers[aid].started:
                del self._answers[aid]
                if aid in self._order:
                    self._order.remove(aid)
        if not self._order and not self.current:
            self._idle.set()
        return 0.0

    async def close(self) -> None:
        """Stop playing and release the sink."""
        self._closed = True
        if self.current:
            await self.stop(self.current)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.sink.close()

    async def wait_idle(self) -> None:
        """Wait until every queued answer has been played or stopped (wrap in ``asyncio.timeout``)."""
        await self._idle.wait()

    # ------------------------------------------------------------------------------------ loop

    def _remember_stopped(self, aid: str) -> None:
        self._stopped_ids[aid] = None
        while len(self._stopped_ids) > 256:
            self._stopped_ids.popitem(last=False)

    async def _status(self, ans: _Answer, state: str) -> None:
        msg = PlaybackStatus(
            room=self.room,
            source=self.node,
            time=self.clock.now(),
            answer_id=ans.answer_id,
            state=state,  # type: ignore[arg-type]
            played_text=" ".join(ans.played),
        )
        try:
            await self.publish(msg)
        except Exception:  # the player keeps playing even if the bus hiccups
            log.exception("%s: could not publish playback status", self.node)

    async def _wait(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _run(self) -> None:
        while not self._closed:
            if not self._order:
                await self._wait(1.0)
                continue
            aid = self._order[0]
            ans = self._answers.get(aid)
            if ans is None or (ans.stopped and not ans.started):
                self._order.popleft()
                self._answers.pop(aid, None)
                if not self._order:
                    self._idle.set()
                continue
            if not ans.started:
                await self._jitter(ans)
                if ans.stopped:
                    continue
            await self._play(ans)
            if ans.stopped or (ans.final_seen and not ans.chunks):
                await self._finish(ans)
            elif not ans.chunks and time.monotonic() - ans.last_arrival > self.idle_timeout:
                log.warning(
                    "%s: answer %s got no final chunk for %.0f s; closing it", self.node, aid, self.idle_timeout
                )
                await self._finish(ans)
            elif not ans.chunks:
                await self._wait(0.05)

    async def _jitter(self, ans: _Answer) -> None:
        need = self.config.jitter_ms / 1000
        deadline = time.monotonic() + max(need, 0.0) * 4
        while not ans.stopped and not ans.final_seen and time.monotonic() < deadline:
            buffered = sum(len(c.data) / 2 / c.rate for c in ans.chunks)
            if buffered >= need:
                break
            await self._wait(0.01)

    async def _play(self, ans: _Answer) -> None:
        rate = self.sink.rate
        dur = self.block / rate
        lead = max(dur, self.sink.lead)
        while ans.chunks and not ans.stopped:
            chunk = ans.chunks.popleft()
            pcm = resample(np.frombuffer(chunk.data, "<i2"), chunk.rate, rate)
            if self.gain != 1.0:
                pcm = (pcm.astype(np.float32) * self.gain).round().astype(np.int16)
            if not ans.started:
                ans.started = True
                self.current = ans.answer_id
                self.sink.begin(ans.answer_id, self.room)
                self.first_audio[ans.answer_id] = self.clock.now()
                await self._status(ans, "started")
            for pos in range(0, len(pcm), self.block):
                # Keep ``lead`` queued: enough that the device never starves, little enough that a stop
                # (which drops the queue) is heard at once.
                while not (self._stop_flag.is_set() or ans.stopped) and self.sink.queued() >= lead:
                    try:
                        async with asyncio.timeout(max(self.sink.queued() - lead, 0.0) + 0.002):
                            await self._stop_flag.wait()
                    except TimeoutError:
                        pass
                if self._stop_flag.is_set() or ans.stopped:
                    return
                block = pcm[pos : pos + self.block]
                if self.tap is not None:
                    self.tap.add(self.clock.now() + self.sink.queued() + self.sink.latency, block, rate)
                self.sink.write(block)
                self._mark_played(ans)
            if chunk.text:
                ans.pending.append((self.sink.written, chunk.text))

    def _mark_played(self, ans: _Answer) -> None:
        """Move sentences whose last sample has been played into ``ans.played``."""
        done = self.sink.played()
        while ans.pending and ans.pending[0][0] <= done:
            ans.played.append(ans.pending.popleft()[1])

    async def _finish(self, ans: _Answer) -> None:
        if ans.started and not ans.stopped:
            rest = self.sink.queued() + self.sink.latency
            if rest > 0:  # let the last block sound, unless a stop comes first
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(rest):
                        await self._stop_flag.wait()
            if not ans.stopped:
                ans.played.extend(text for _, text in ans.pending)
                ans.pending.clear()
        if ans.started:
            self.sink.end(ans.answer_id)
        if self._order and self._order[0] == ans.answer_id:
            self._order.popleft()
        self._answers.pop(ans.answer_id, None)
        self.current = ""
        self._stop_flag.clear()
        self._silent.set()  # silent now; the status below is news, not part of the stop latency
        if not self._order:
            self._idle.set()
        if ans.started:
            await self._status(ans, "stopped" if ans.stopped else "ended")
