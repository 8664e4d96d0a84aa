"""Streaming Silero VAD: the model bundled with faster-whisper, run 32 ms window by window.

faster-whisper's ``SileroVADModel`` scores a whole clip from a zero LSTM state. For endpointing we
need the same model on a live stream, so ``StreamingVad`` keeps the LSTM state (h, c) and the
64-sample context between calls and runs the same ONNX session one 512-sample window at a time;
on a whole clip it gives exactly faster-whisper's probabilities. Speech/silence decisions use
faster-whisper's ``VadOptions`` hysteresis (``threshold`` to enter speech, ``neg_threshold`` to
leave it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW = 512
"""Samples per VAD window (32 ms at 16 kHz)."""
CONTEXT = 64
RATE = 16000


@dataclass
class VadState:
    """Where a stream stands after the last fed audio."""

    in_speech: bool = False
    """True while the hysteresis says speech."""
    speech_s: float = 0.0
    """Seconds of speech windows seen since the last reset."""
    silence_s: float = 0.0
    """Seconds of non-speech since the last speech window (the trailing silence)."""
    heard_s: float = 0.0
    """Seconds of audio scored since the last reset."""
    last_prob: float = 0.0
    """Speech probability of the newest window."""


class StreamingVad:
    """Silero VAD v6 (``faster_whisper/assets/silero_vad_v6.onnx``) over a stream of int16 audio."""

    def __init__(self, threshold: float = 0.5, neg_threshold: float | None = None) -> None:
        from faster_whisper.vad import VadOptions, get_vad_model

        opts = VadOptions(threshold=threshold, neg_threshold=neg_threshold)
        self.threshold = opts.threshold
        self.neg_threshold = opts.neg_threshold if opts.neg_threshold is not None else max(opts.threshold - 0.15, 0.01)
        # One ONNX session per process (faster-whisper caches it); only our state is per stream.
        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        """Start a new stream: zero LSTM state, no pending samples, no speech."""
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._pending = np.zeros(0, np.float32)
        self.state = VadState()

    def probs(self, pcm: np.ndarray) -> np.ndarray:
        """Speech probability of each complete 32 ms window, carrying leftover samples to the next call."""
        x = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        n = len(x) // WINDOW * WINDOW
        self._pending = x[n:]
        out = np.empty(n // WINDOW, np.float32)
        for i in range(n // WINDOW):
            w = x[i * WINDOW : (i + 1) * WINDOW][None, :]
            p, self._h, self._c = self._session.run(
                None, {"input": np.concatenate([self._context, w], axis=1), "h": self._h, "c": self._c}
            )
            self._context = w[:, -CONTEXT:]
            out[i] = float(np.asarray(p).reshape(-1)[0])
        return out

    def feed(self, pcm: np.ndarray) -> VadState:
        """Score ``pcm`` (int16) and update the speech/silence state."""
        s = self.state
        step = WINDOW / RATE
        for p in self.probs(pcm):
            s.heard_s += step
            s.last_prob = float(p)
            if p >= self.threshold:
                s.in_speech = True
            elif p < self.neg_threshold:
                s.in_speech = False
            if s.in_speech:
                s.speech_s += step
                s.silence_s = 0.0
            else:
                s.silence_s += step
        return s
