"""Acoustic echo cancellation with the played audio as reference: a partitioned-block frequency-domain NLMS.

The microphone hears the loudspeaker through the room (a delay, reflections, a reverberant tail); this
filter learns that path from the reference (what the speaker played, ``AudioChunk.reference``) and
subtracts its estimate from the microphone, leaving the people. Overlap-save with ``taps`` split into
blocks of ``block`` samples (the MDF / PBFDAF scheme speexdsp and WebRTC's AEC are built on), the step
normalized per frequency bin by the reference's smoothed power, the gradient constrained to the
filter length. ``double_talk`` > 0 pauses adaptation once converged while the error jumps that many
times above its running level (a person talking over the playback); off by default: on the simulated
rooms of ``benchmarks/echo.py`` it froze the filter too early and cost more barge-ins than it saved.

numpy only, about 1–2 % of one core at 16 kHz with the defaults on this machine (``benchmarks/echo.py``):
it runs on a Raspberry Pi's edge as well as in a worker.
"""

from __future__ import annotations

import numpy as np


class EchoCanceller:
    """One microphone's canceller; ``process`` takes and returns int16 blocks of any length."""

    def __init__(self, block: int = 256, taps: int = 2048, mu: float = 0.4, double_talk: float = 0.0) -> None:
        if block <= 0 or taps < block:
            raise ValueError(f"echo canceller needs block > 0 and taps >= block, got {block}, {taps}")
        self.B = block
        self.P = -(-taps // block)
        self.mu = mu
        self.double_talk = double_talk
        self._X = np.zeros((self.P, block + 1), np.complex128)
        self._W = np.zeros((self.P, block + 1), np.complex128)
        self._xprev = np.zeros(block)
        self._power = np.zeros(block + 1)
        self._ee = 0.0
        self._dd = 0.0
        self._mic = np.zeros(0)
        self._ref = np.zeros(0)
        self._out = np.zeros(0)

    def reset(self) -> None:
        """Forget the learnt room (the speaker moved, the stream restarted)."""
        self.__init__(self.B, self.P * self.B, self.mu, self.double_talk)  # type: ignore[misc]

    def _block(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        B = self.B
        xk = np.fft.rfft(np.concatenate([self._xprev, x]))
        self._xprev = x
        self._X = np.roll(self._X, 1, axis=0)
        self._X[0] = xk
        y = np.fft.irfft(np.sum(self._W * self._X, axis=0), 2 * B)[B:]
        e = d - y
        if not np.any(x) and not np.any(self._X[1:]):
            return e  # nothing played within the filter's reach: nothing to learn
        self._power = 0.9 * self._power + 0.1 * np.abs(xk) ** 2 if self._power.any() else np.abs(xk) ** 2
        ee, dd = float(np.dot(e, e)) + 1e-3, float(np.dot(d, d)) + 1e-3
        converged = self._dd > 4.0 * self._ee  # the filter removes 6 dB or more of the echo
        if self.double_talk and converged and ee > self.double_talk * self._ee:
            return e  # double talk (a person over the playback): keep what was learnt
        self._ee = 0.95 * self._ee + 0.05 * ee if self._ee else ee
        self._dd = 0.95 * self._dd + 0.05 * dd if self._dd else dd
        E = np.fft.rfft(np.concatenate([np.zeros(B), e]))
        g = self.mu / (self._power * self.P + 1e-2 * float(np.mean(self._power)) * self.P + 1.0) * E
        grad = np.fft.irfft(np.conj(self._X) * g, 2 * B, axis=1)
        grad[:, B:] = 0.0
        self._W += np.fft.rfft(grad, axis=1)
        return e

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """``mic`` with the echo of ``reference`` (sample-aligned, same length) removed; int16.

        Output lags input by less than one ``block`` (it is returned as soon as whole blocks are in; the
        first call's missing samples are zeros), so the stream keeps its length and timing.
        """
        if len(reference) != len(mic):
            raise ValueError(f"reference has {len(reference)} samples, the microphone {len(mic)}")
        self._mic = np.concatenate([self._mic, mic.astype(np.float64)])
        self._ref = np.concatenate([self._ref, reference.astype(np.float64)])
        outs = [self._out]
        while len(self._mic) >= self.B:
            outs.append(self._block(self._ref[: self.B], self._mic[: self.B]))
            self._mic, self._ref = self._mic[self.B :], self._ref[self.B :]
        out = np.concatenate(outs)
        n = len(mic)
        if len(out) < n:
            out = np.concatenate([np.zeros(n - len(out)), out])
        self._out = out[n:]
        return np.clip(np.round(out[:n]), -32768, 32767).astype(np.int16)
