"""Audio sources of an edge node: a sounddevice microphone, or a WAV file played in real time.

Both produce 16 kHz mono int16 blocks of ``block_ms`` as ``(time, pcm)`` pairs, where ``time`` is
the hub-clock time of the block's FIRST sample and ``pcm`` is little-endian int16 bytes. A device
that cannot record at 16 kHz mono is opened at its own rate and channel count, then downmixed and
resampled here (numpy only, streaming, so a Pi needs no scipy). A missing or busy device is a
one-line error, reported to the status callback and retried with backoff; a missing PortAudio
library is a clear, fatal ``AudioSourceError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.edge.retry import Backoff, StatusCallback, report
from sensorium.pipeline.clock import Clock

log = logging.getLogger("sensorium.edge.audio")

#: One block: hub-clock time of its first sample, int16 LE mono PCM.
Block = tuple[float, bytes]


class AudioSourceError(RuntimeError):
    """An audio source cannot work at all (no PortAudio, unreadable file); the text says what to do."""


def import_sounddevice() -> Any:
    """``sounddevice``, or ``AudioSourceError`` saying how to install PortAudio (it raises OSError without it)."""
    try:
        import sounddevice
    except OSError as exc:
        raise AudioSourceError(
            f"cannot load the PortAudio library that sounddevice needs ({exc}); "
            "install it with 'sudo apt install libportaudio2'"
        ) from None
    except ImportError as exc:
        raise AudioSourceError(f"sounddevice is not installed ({exc}); pip install 'sensorium[edge]'") from None
    return sounddevice


_outputs_open = 0
"""PortAudio output streams (loudspeakers) open in this process; a device re-scan would abort them."""
PORTAUDIO_LOCK = threading.Lock()
"""Held while PortAudio re-initializes and while an output stream opens or closes (other threads)."""


@contextlib.contextmanager
def output_stream() -> Iterator[None]:
    """Playback opens its PortAudio output stream inside this, so a re-scan never runs meanwhile."""
    global _outputs_open
    with PORTAUDIO_LOCK:
        yield
        _outputs_open += 1


def output_closed() -> None:
    """Playback calls this after closing its PortAudio output stream."""
    global _outputs_open
    with PORTAUDIO_LOCK:
        _outputs_open = max(0, _outputs_open - 1)


def rescan_devices(sd: Any) -> bool:
    """Make PortAudio list its devices again; True if it did.

    PortAudio enumerates devices once, when it initializes: a USB microphone plugged in later (or a
    sound server started later) stays invisible until it re-initializes, which closes every open
    stream. So this only runs while no loudspeaker stream is open in this process.
    """
    with PORTAUDIO_LOCK:
        if _outputs_open:
            return False
        sd._terminate()
        sd._initialize()
        return True


# ------------------------------------------------------------------------------- resampling


class Resampler:
    """Streaming polyphase resampler (Kaiser-windowed sinc), float32 in and out, any rational ratio.

    Feeding a signal in pieces gives the same samples as feeding it whole; the group delay is about
    ``taps / 2`` input samples (under 0.5 ms for 44.1/48 kHz input), which timestamps ignore.
    """

    def __init__(self, rate_in: int, rate_out: int, taps: int = 32, beta: float = 8.0) -> None:
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.taps = taps
        n = self.up * taps
        cutoff = 0.5 / max(self.up, self.down) * 0.92  # cycles per sample at the upsampled rate
        m = np.arange(n) - (n - 1) / 2
        h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, beta)
        h *= self.up / h.sum()
        # phase p, tap j -> h[p + j * up]; reversed per phase so a window of past input dots with it
        self._poly = h.reshape(taps, self.up).T[:, ::-1].astype(np.float32)
        self._buf = np.zeros(taps - 1, dtype=np.float32)  # input from absolute index _base on
        self._base = -(taps - 1)
        self._total = 0  # input samples seen
        self._n = 0  # next output index

    @property
    def delay(self) -> int:
        """Group delay in output samples (the filter's centre)."""
        return int(round((self.up * self.taps - 1) / 2 / self.down))

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next piece of input; returns every output sample it makes available."""
        if self.up == self.down:
            return np.asarray(x, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        self._total += len(x)
        # output n needs input k = floor(n * down / up) and the taps - 1 samples before it
        last = ((self._total - 1) * self.up) // self.down if self._total else -1
        if last < self._n:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._n, last + 1)
        k = (n * self.down) // self.up
        phase = (n * self.down) % self.up
        idx = (k - self._base)[:, None] + np.arange(-(self.taps - 1), 1)[None, :]
        y = np.einsum("ij,ij->i", self._buf[idx], self._poly[phase])
        self._n = last + 1
        keep_from = (self._n * self.down) // self.up - (self.taps - 1)
        drop = keep_from - self._base
        if drop > 0:
            self._buf = self._buf[drop:]
            self._base = keep_from
        return y.astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in int16 units → int16 with clipping."""
    return np.clip(np.round(x), -32768, 32767).astype("<i2")


class Timeline:
    """Smooths block timestamps: sample counting anchored at the earliest-arriving callback.

    Callbacks arrive late by a variable amount (scheduling, PulseAudio's bursts), never early, so the
    smallest ``arrival - samples / rate`` over a recent window is the best anchor. A jump larger than
    ``reset_s`` (samples lost, device reopened) starts over.
    """

    def __init__(self, rate: int, window: int = 64, reset_s: float = 0.5) -> None:
        self.rate = rate
        self.reset_s = reset_s
        self._recent: deque[float] = deque(maxlen=window)
        self._samples = 0

    def stamp(self, t_measured: float, frames: int) -> float:
        """Time of the first of ``frames`` samples whose first was measured (late-ish) at ``t_measured``."""
        d = t_measured - self._samples / self.rate
        if self._recent and abs(d - min(self._recent)) > self.reset_s:
            self._recent.clear()
            self._samples = 0
            d = t_measured
        self._recent.append(d)
        t = min(self._recent) + self._samples / self.rate
        self._samples += frames
        return t


class Reblocker:
    """Cuts a timed sample stream into fixed blocks; each block keeps the time of its first sample."""

    def __init__(self, block: int, rate: int) -> None:
        self.block = block
        self.rate = rate
        self._pending = np.zeros(0, dtype="<i2")
        self._t0 = 0.0

    def push(self, t_first: float, samples: np.ndarray) -> list[Block]:
        """Add samples whose first one was captured at ``t_first``; returns the full blocks now ready."""
        if len(self._pending) == 0:
            self._t0 = t_first  # re-anchor on the device's timing whenever nothing is pending
        self._pending = np.concatenate([self._pending, samples.astype("<i2", copy=False)])
        out: list[Block] = []
        while len(self._pending) >= self.block:
            out.append((self._t0, self._pending[: self.block].tobytes()))
            self._pending = self._pending[self.block :]
            self._t0 += self.block / self.rate
        return out


# ------------------------------------------------------------------------------- microphone


def _device_arg(device: str | int | None) -> str | int | None:
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    return device


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class MicrophoneSource:
    """Records a sounddevice input; the PortAudio callback hands blocks to the asyncio loop."""

    def __init__(
        self,
        device: str | int | None = None,
        *,
        rate: int = 16000,
        block_ms: int = 80,
        clock: Clock | None = None,
        device_rate: int | None = None,
        on_status: StatusCallback | None = None,
        backoff: Backoff | None = None,
        stall_s: float = 2.0,
        queue_s: float = 5.0,
        warmup_s: float = 0.25,
    ) -> None:
        self.device = _device_arg(device)
        self.rate = rate
        self.block_ms = block_ms
        self.block = rate * block_ms // 1000
        self.clock = clock or Clock()
        self.device_rate = device_rate
        """Force this capture rate (resampled to ``rate``); None tries ``rate`` first, then the device's own."""
        self.on_status = on_status
        self.backoff = backoff or Backoff()
        self.stall_s = stall_s
        """No audio for this long means the device is gone: close it and reopen."""
        self.warmup_s = warmup_s
        """Audio dropped after each (re)open while the device's timing settles."""
        self.queue_blocks = max(4, int(queue_s * 1000 / block_ms))
        self.overflows = 0
        """Blocks dropped because the loop fell behind, or input overruns PortAudio reported."""
        self.opened_rate = 0
        """The rate the device was actually opened at (0 until opened)."""
        self.opened_channels = 0
        """The channel count the device was actually opened with."""
        self.errors: list[str] = []
        """Every error reported so far (one line each)."""
        self._closed = False

    @property
    def name(self) -> str:
        """The device as the user named it."""
        return "default input" if self.device is None else repr(self.device)

    def close(self) -> None:
        """Stop after the current block (``blocks`` then returns)."""
        self._closed = True

    def _choose_settings(self, sd: Any) -> tuple[int, int]:
        dev = self.device
        rate = self.device_rate or self.rate
        try:
            sd.check_input_settings(device=dev, samplerate=rate, channels=1, dtype="int16")
            return rate, 1
        except Exception as first:  # PortAudio reports unsupported settings in several ways
            info = sd.query_devices(dev, "input")  # ValueError when there is no such input device
            channels = max(1, min(2, int(info["max_input_channels"])))
            if self.device_rate is None:
                rate = int(info["default_samplerate"])
            try:
                sd.check_input_settings(device=dev, samplerate=rate, channels=channels, dtype="int16")
            except Exception:
                raise first from None
            return rate, channels

    def _open(self, sd: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[float, np.ndarray]]) -> Any:
        rate, channels = self._choose_settings(sd)
        clock = self.clock

        def push(item: tuple[float, np.ndarray]) -> None:  # runs on the loop
            if queue.full():
                queue.get_nowait()  # the loop fell behind: drop the oldest block, never block PortAudio
                self.overflows += 1
            queue.put_nowait(item)

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            # The block's last sample was captured about now. PortAudio's inputBufferAdcTime is not used:
            # through ALSA's pulse plugin it drifts by up to 0.7 s; arrival jitter is smoothed by Timeline.
            now = clock.now()
            if status and status.input_overflow:
                self.overflows += 1
            try:
                loop.call_soon_threadsafe(push, (now - frames / rate, indata.copy()))
            except RuntimeError:
                pass  # the loop is closing

        stream = sd.InputStream(
            device=self.device,
            samplerate=rate,
            channels=channels,
            dtype="int16",
            blocksize=max(1, rate * self.block_ms // 1000),
            callback=callback,
        )
        stream.start()
        self.opened_rate, self.opened_channels = rate, channels
        return stream

    def _available(self, sd: Any) -> str:
        try:
            devs = sd.query_devices()
            names = [f"{i}: {d['name']}" for i, d in enumerate(devs) if d["max_input_channels"] > 0]
            return "; ".join(names) or "none"
        except Exception:
            return "unknown"

    async def blocks(self) -> AsyncIterator[Block]:
        """Yield ``(time, pcm)`` blocks until ``close``; reopens the device after errors with backoff."""
        sd = import_sounddevice()
        loop = asyncio.get_running_loop()
        while not self._closed:
            queue: asyncio.Queue[tuple[float, np.ndarray]] = asyncio.Queue(self.queue_blocks)
            try:
                stream = await asyncio.to_thread(self._open, sd, loop, queue)
            except (sd.PortAudioError, ValueError, OSError) as exc:
                delay = self.backoff.next()
                msg = (
                    f"microphone {self.name}: cannot open ({_first_line(exc)}); "
                    f"inputs: {self._available(sd)}; retrying in {delay:.1f}s"
                )
                self.errors.append(msg)
                log.error("%s", msg)
                report(self.on_status, "error", msg)
                await asyncio.sleep(delay)
                if not self._closed:  # the device may be plugged in by now: let PortAudio look again
                    await asyncio.to_thread(rescan_devices, sd)
                continue
            resampler = Resampler(self.opened_rate, self.rate) if self.opened_rate != self.rate else None
            reblock = Reblocker(self.block, self.rate)
            timeline = Timeline(self.opened_rate)
            warmup = int(self.warmup_s * self.opened_rate)
            detail = f"microphone {self.name}: recording at {self.opened_rate} Hz, {self.opened_channels} ch"
            log.info("%s", detail)
            report(self.on_status, "up", detail)
            got_audio = False
            try:
                while not self._closed:
                    # a device may take seconds to deliver its first block (PulseAudio through ALSA: ~2 s)
                    wait = self.stall_s if got_audio else max(self.stall_s, 5.0)
                    try:
                        async with asyncio.timeout(wait):
                            t_first, data = await queue.get()
                    except TimeoutError:
                        delay = self.backoff.next()
                        msg = f"microphone {self.name}: no audio for {wait:.1f}s; reopening in {delay:.1f}s"
                        self.errors.append(msg)
                        log.error("%s", msg)
                        report(self.on_status, "error", msg)
                        await asyncio.sleep(delay)
                        break
                    t_first = timeline.stamp(t_first, len(data))
                    if not got_audio:
                        got_audio = True
                        self.backoff.reset()
                    if warmup > 0:  # a fresh stream delivers its first blocks in bursts: time them, send none
                        warmup -= len(data)
                        continue
                    x = data.astype(np.float32).mean(axis=1) if data.shape[1] > 1 else data[:, 0].astype(np.float32)
                    if resampler is not None:
                        x = resampler.process(x)
                    for blk in reblock.push(t_first, to_int16(x)):
                        yield blk
            finally:
                await asyncio.to_thread(_close_stream, stream)


def _close_stream(stream: Any) -> None:
    try:
        stream.stop()
    finally:
        stream.close()


# ------------------------------------------------------------------------------------ files


def read_wav_mono(path: str | Path, rate: int = 16000) -> np.ndarray:
    """A WAV file (8/16/24/32-bit PCM or float) as mono int16 at ``rate``; ``AudioSourceError`` if unreadable."""
    from sensorium.pipeline.media import MediaError, decode_wav

    try:
        x, file_rate = decode_wav(path, rate)
    except MediaError as exc:
        raise AudioSourceError(str(exc)) from None
    if file_rate != rate:
        r = Resampler(file_rate, rate)
        n_out = int(round(len(x) * rate / file_rate))
        y = r.process(np.concatenate([x, np.zeros(2 * r.taps, np.float32)]))  # flush the filter's tail
        x = y[r.delay : r.delay + n_out]  # a whole file can be aligned exactly
    return to_int16(x)


class WavFileSource:
    """Plays a WAV file as if a microphone heard it: in real time (or ``speed`` times faster)."""

    def __init__(
        self,
        path: str | Path,
        *,
        rate: int = 16000,
        block_ms: int = 80,
        speed: float = 1.0,
        clock: Clock | None = None,
        loop: bool = False,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (inf = as fast as possible), got {speed}")
        self.path = Path(path)
        self.rate = rate
        self.block = rate * block_ms // 1000
        self.speed = speed
        self.clock = clock or Clock()
        self.loop = loop
        """Start again at the end (demos that run until stopped)."""
        self._closed = False

    @property
    def name(self) -> str:
        """The file, as given."""
        return str(self.path)

    def close(self) -> None:
        """Stop after the current block."""
        self._closed = True

    async def blocks(self) -> AsyncIterator[Block]:
        """Yield ``(time, pcm)`` blocks, each released when its last sample would have been captured.

        ``time`` is the hub time of the start plus the block's offset in the file: at ``speed`` 1 exactly
        when a microphone would have captured it; faster replays run ahead of the hub clock but keep
        the audio's durations (endpointing, wake gating and transcripts stay right).
        """
        pcm = await asyncio.to_thread(read_wav_mono, self.path, self.rate)
        while not self._closed:
            start = time.monotonic()
            for off in range(0, len(pcm), self.block):
                if self._closed:
                    return
                part = pcm[off : off + self.block]
                due = start + (off + len(part)) / self.rate / self.speed
                delay = due - time.monotonic()
                if delay > 0 and math.isfinite(delay):
                    await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)  # let others run even at infinite speed
                # the audio's own timeline from the start (durations stay real at any speed), converted with
                # the clock's offset of now so times follow the hub sync like a microphone's
                yield self.clock.offset + start + off / self.rate, part.tobytes()
            if not self.loop:
                return
