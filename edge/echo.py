"""What the room's loudspeaker played, on the hub's clock: the reference the microphone chunks carry.

The player (``edge.playback``) adds every block it hands the sound card, stamped with the hub time it
leaves the speaker (now + what is queued ahead + the device's latency); a simulated room adds the
loudspeaker WAV it was mixed from. ``take`` cuts the stretch a microphone chunk covers, sample-aligned,
so the wake stage can tell the room's own voice (its answers, music, a TV it plays) from a person:
the microphone hears the reference through the room a few milliseconds later. Pure numpy: runs on a Pi.
"""

from __future__ import annotations

import collections

import numpy as np

from sensorium.pipeline.media import resample

JOIN_S = 0.02
"""A block stamped this close to the end of the one before continues it exactly."""
KEEP_S = 30.0
"""Played audio older than this (behind the newest block) is forgotten."""


class ReferenceTap:
    """A timeline of played audio at ``rate`` (mono int16), keyed by the hub time each block is heard."""

    def __init__(self, rate: int = 16000) -> None:
        self.rate = rate
        self._blocks: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.added = 0
        """Samples added since the tap was made."""

    def add(self, t: float, pcm: np.ndarray, rate: int | None = None, join: bool = True) -> None:
        """``pcm`` (int16) starts sounding at hub time ``t``; resampled to the tap's rate when ``rate`` differs.

        ``join``: a block stamped within ``JOIN_S`` of the previous one's end continues it (a player's blocks);
        off for audio stamped like the microphone chunks it belongs to (a simulated room's ``reference_file``).
        """
        if len(pcm) == 0:
            return
        block = np.asarray(pcm, dtype=np.int16)
        if rate is not None and rate != self.rate:
            block = resample(block, rate, self.rate)
        if join and self._blocks:
            t_prev, prev = self._blocks[-1]
            end = t_prev + len(prev) / self.rate
            if abs(t - end) < JOIN_S:
                t = end  # a sound card plays queued blocks back to back: stamps jitter, the audio does not
        self._blocks.append((t, block))
        self.added += len(block)
        newest = t + len(block) / self.rate
        while self._blocks and self._blocks[0][0] + len(self._blocks[0][1]) / self.rate < newest - KEEP_S:
            self._blocks.popleft()

    def take(self, t: float, n: int) -> bytes:
        """The ``n`` samples heard from hub time ``t`` on as 16-bit PCM; ``b""`` when nothing played then."""
        if not self._blocks or n <= 0:
            return b""
        end = t + n / self.rate
        out: np.ndarray | None = None
        for t0, block in self._blocks:
            t1 = t0 + len(block) / self.rate
            if t1 <= t or t0 >= end:
                continue
            if out is None:
                out = np.zeros(n, np.int16)
            a = round((t0 - t) * self.rate)
            src0 = max(0, -a)
            dst0 = max(0, a)
            m = min(len(block) - src0, n - dst0)
            if m > 0:
                out[dst0 : dst0 + m] = block[src0 : src0 + m]
        if out is None or not out.any():
            return b""
        return out.astype("<i2", copy=False).tobytes()
