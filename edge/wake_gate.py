"""Local wake gating on the Pi: stream audio only around a wake word heard on the node itself.

The gate scores every 80 ms frame with openWakeWord's bundled ``hey_jarvis`` ONNX model through
onnxruntime (``models.wakeword``, the same model and scoring the hub's wake stage uses, so a
gated stream re-triggers the hub's detector). While closed it keeps the last ``preroll_ms`` of
blocks; on a detection it releases that pre-roll (so the hub hears the wake word itself and the
words just before it) and then streams live until ``hold_s`` after the last detection.

Why openWakeWord and not pymicro-wakeword 2.5.0: both have aarch64 wheels (pymicro-wakeword's
needs glibc 2.35, i.e. Raspberry Pi OS Bookworm), but openWakeWord is already in the ``edge``
extra and is exactly the hub's model; microWakeWord's ``hey_jarvis`` is a different model whose
detections would not match the hub's. Cost: ~2 ms per 80 ms frame on an x86 core (roughly 5× that
on a Pi 4 core), run in a worker thread, never on the event loop.

Blocked audio is never sent, so the hub sees gaps in time (and in nothing else: sequence numbers
count published chunks).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sensorium.edge.audio import Block

log = logging.getLogger("sensorium.edge.wake")

FRAME = 1280
"""Samples per scored frame (80 ms at 16 kHz), what openWakeWord was trained on."""


@dataclass
class Detection:
    """One local wake detection."""

    time: float
    """Hub-clock time of the end of the frame that fired."""
    word: str
    """Wake word name."""
    score: float
    """Model score 0–1."""


class WakeGate:
    """Passes audio blocks through only around local wake detections (with pre-roll and hold)."""

    def __init__(
        self,
        *,
        models: Sequence[str] = ("hey_jarvis",),
        threshold: float = 0.5,
        preroll_ms: int = 1500,
        hold_s: float = 8.0,
        rate: int = 16000,
        model: Any = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"wake threshold must be between 0 and 1, got {threshold}")
        if rate != 16000:
            raise ValueError(f"the wake gate needs 16 kHz audio, got {rate} Hz")
        if model is None:
            from sensorium.models.wakeword import WakeWordModel

            model = WakeWordModel(list(models))
        self.model = model
        self.threshold = threshold
        self.preroll_s = preroll_ms / 1000.0
        self.hold_s = hold_s
        """Seconds streamed after the last detection."""
        self.rate = rate
        self._preroll: deque[Block] = deque()
        self._frame = np.zeros(0, dtype=np.int16)
        self._frame_t = 0.0
        self._open_until = float("-inf")
        self._last_t = 0.0
        self.detections: list[Detection] = []
        """Every local detection, oldest first."""
        self.passed = 0
        """Blocks let through."""
        self.blocked = 0
        """Blocks held back and never sent."""

    @property
    def is_open(self) -> bool:
        """True while audio streams."""
        return self._open_until >= self._last_t

    def _score(self, t: float, pcm: np.ndarray) -> Detection | None:
        if len(self._frame) == 0:
            self._frame_t = t
        self._frame = np.concatenate([self._frame, pcm])
        best: Detection | None = None
        while len(self._frame) >= FRAME:
            frame, self._frame = self._frame[:FRAME], self._frame[FRAME:]
            t_end = self._frame_t + FRAME / self.rate
            self._frame_t = t_end
            for word, score in self.model.score(frame).items():
                if score >= self.threshold and (best is None or score > best.score):
                    best = Detection(t_end, word, score)
        return best

    def process(self, t: float, pcm: bytes) -> list[Block]:
        """Feed one block (time of its first sample, int16 LE bytes); returns the blocks to send now.

        Blocking (runs the model): call it from a worker thread in async code.
        """
        samples = np.frombuffer(pcm, dtype="<i2")
        self._last_t = t
        hit = self._score(t, samples)
        block_end = t + len(samples) / self.rate
        was_open = self._open_until >= t
        if hit is not None:
            self.detections.append(hit)
            log.info("local wake: %s %.2f at %.2f", hit.word, hit.score, hit.time)
            self._open_until = max(self._open_until, hit.time + self.hold_s)
        if self._open_until >= t:
            if was_open:
                out = [(t, pcm)]
            else:  # just opened: release the pre-roll, then this block
                out = [*self._preroll, (t, pcm)]
                self.blocked -= len(self._preroll)
                self._preroll.clear()
            self.passed += len(out)
            return out
        self._preroll.append((t, pcm))
        self.blocked += 1
        while self._preroll and block_end - self._preroll[0][0] > self.preroll_s + 1e-6:
            self._preroll.popleft()
        return []
