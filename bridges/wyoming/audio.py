"""Audio from Wyoming clients → the bus's format (16 kHz, 16-bit, mono), in blocks of fixed length.

Home Assistant sends 16 kHz 16-bit mono in 10 ms chunks; other clients may send any rate, 8/16/32-bit
samples, mono or stereo. ``AudioIn`` converts with the wyoming package's own converter (audioop) and
cuts the result into ``block`` samples, so the stages get the chunk length an edge node sends: the
wake stage scores 80 ms frames, so blocks aligned with its frames add no detection latency.
"""

from __future__ import annotations

from wyoming.audio import AudioChunk as WyomingChunk
from wyoming.audio import AudioChunkConverter

RATE = 16000
WIDTH = 2
MAX_RATE = 192000


class AudioFormatError(ValueError):
    """A chunk's format cannot be converted; the text says what was wrong."""


def check_format(rate: object, width: object, channels: object) -> str | None:
    """Why audio with this format cannot be converted to 16 kHz mono 16-bit, or None if it can."""
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= MAX_RATE:
        return f"sample rate {rate!r} Hz is not supported (expected 1000-{MAX_RATE}, ideally {RATE})"
    if width not in (1, 2, 4):
        return f"sample width {width!r} bytes is not supported (expected 1, 2 or 4; ideally {WIDTH})"
    if channels not in (1, 2):
        return f"{channels!r} channels are not supported (expected 1 or 2; ideally 1)"
    return None


class AudioIn:
    """Converts one client stream's chunks and cuts them into blocks of ``block`` samples."""

    def __init__(self, block: int) -> None:
        self.block = block
        self._converter = AudioChunkConverter(rate=RATE, width=WIDTH, channels=1)
        self._pending = bytearray()
        self._split = b""
        self.samples = 0
        """Samples (16 kHz) taken in so far."""

    def feed(self, chunk: WyomingChunk) -> list[bytes]:
        """Convert ``chunk``; returns the blocks it completed (16 kHz mono int16 little-endian)."""
        problem = check_format(chunk.rate, chunk.width, chunk.channels)
        if problem:
            raise AudioFormatError(problem)
        # A client may cut its stream anywhere (Home Assistant's REST STT passes on HTTP body pieces):
        # a frame split across chunks is completed by the next one.
        frame = chunk.width * chunk.channels
        data = self._split + chunk.audio if self._split else chunk.audio
        cut = len(data) - len(data) % frame
        self._split = data[cut:]
        if cut != len(chunk.audio) or data is not chunk.audio:
            chunk = WyomingChunk(rate=chunk.rate, width=chunk.width, channels=chunk.channels, audio=data[:cut])
        pcm = self._converter.convert(chunk).audio
        self.samples += len(pcm) // WIDTH
        if not self._pending and len(pcm) == self.block * WIDTH:
            return [pcm]  # the common case (edge-sized chunks): no copy
        self._pending += pcm
        n = len(self._pending) // (self.block * WIDTH)
        if n == 0:
            return []
        cut = n * self.block * WIDTH
        out = [bytes(self._pending[i : i + self.block * WIDTH]) for i in range(0, cut, self.block * WIDTH)]
        del self._pending[:cut]
        return out

    def flush(self) -> bytes:
        """The samples that did not fill a block (end of stream)."""
        rest = bytes(self._pending)
        self._pending.clear()
        return rest
