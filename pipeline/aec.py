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

import ctypes
import ctypes.util
from typing import Any

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


# ------------------------------------------------------------------------------------- speexdsp

SPEEX_ECHO_SET_SAMPLING_RATE = 24
SPEEX_PREPROCESS_SET_DENOISE = 0
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS = 20
SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
SPEEX_PREPROCESS_SET_ECHO_STATE = 24
"""Request numbers of ``speex/speex_echo.h`` and ``speex/speex_preprocess.h`` (stable since speexdsp 1.2)."""


class SpeexUnavailable(RuntimeError):
    """The speexdsp shared library is not installed (Debian / Raspberry Pi OS: ``apt install libspeexdsp1``)."""


_speex: Any = None


def load_speexdsp() -> Any:
    """The system's libspeexdsp (Xiph's speexdsp, which PulseAudio's echo canceller also uses), via ctypes."""
    global _speex
    if _speex is not None:
        return _speex
    names = [ctypes.util.find_library("speexdsp") or "", "libspeexdsp.so.1", "libspeexdsp.dylib"]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        vp, i16p, ci = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int
        lib.speex_echo_state_init.argtypes, lib.speex_echo_state_init.restype = [ci, ci], vp
        lib.speex_echo_state_destroy.argtypes, lib.speex_echo_state_destroy.restype = [vp], None
        lib.speex_echo_state_reset.argtypes, lib.speex_echo_state_reset.restype = [vp], None
        lib.speex_echo_ctl.argtypes, lib.speex_echo_ctl.restype = [vp, ci, vp], ci
        lib.speex_echo_cancellation.argtypes, lib.speex_echo_cancellation.restype = [vp, i16p, i16p, i16p], None
        lib.speex_preprocess_state_init.argtypes, lib.speex_preprocess_state_init.restype = [ci, ci], vp
        lib.speex_preprocess_state_destroy.argtypes, lib.speex_preprocess_state_destroy.restype = [vp], None
        lib.speex_preprocess_ctl.argtypes, lib.speex_preprocess_ctl.restype = [vp, ci, vp], ci
        lib.speex_preprocess_run.argtypes, lib.speex_preprocess_run.restype = [vp, i16p], ci
        _speex = lib
        return lib
    raise SpeexUnavailable("libspeexdsp is not installed (apt install libspeexdsp1; PulseAudio depends on it)")


class SpeexEchoCanceller:
    """speexdsp's echo canceller (MDF with its own double-talk handling) and, with ``suppress``, its residual
    echo suppressor; the same ``process`` interface as ``EchoCanceller``.

    ``frame`` samples per speexdsp call (10–20 ms is what it is tuned for), ``taps`` the filter length (the
    room's echo tail it can cancel: 4096 = 256 ms at 16 kHz), ``rate`` the sample rate; ``suppress`` dB of
    extra attenuation of the residual echo (0 = the linear canceller alone; speexdsp's default is −40).
    """

    def __init__(self, frame: int = 160, taps: int = 4096, rate: int = 16000, suppress: int = 0) -> None:
        if frame <= 0 or taps < frame:
            raise ValueError(f"echo canceller needs frame > 0 and taps >= frame, got {frame}, {taps}")
        self._lib = load_speexdsp()
        self.frame, self.taps, self.rate, self.suppress = frame, taps, rate, suppress
        self._st = self._lib.speex_echo_state_init(frame, taps)
        r = ctypes.c_int(rate)
        self._lib.speex_echo_ctl(self._st, SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(r))
        self._pp = None
        if suppress:
            self._pp = self._lib.speex_preprocess_state_init(frame, rate)
            off = ctypes.c_int(0)
            self._lib.speex_preprocess_ctl(self._pp, SPEEX_PREPROCESS_SET_DENOISE, ctypes.byref(off))
            self._lib.speex_preprocess_ctl(self._pp, SPEEX_PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(self._st))
            for req in (SPEEX_PREPROCESS_SET_ECHO_SUPPRESS, SPEEX_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE):
                db = ctypes.c_int(-abs(suppress))
                self._lib.speex_preprocess_ctl(self._pp, req, ctypes.byref(db))
        self._mic = np.zeros(0, np.int16)
        self._ref = np.zeros(0, np.int16)
        self._out = np.zeros(0, np.int16)
        self._buf = (ctypes.c_int16 * frame)()

    def reset(self) -> None:
        """Forget the learnt room (the speaker moved, the stream restarted)."""
        self._lib.speex_echo_state_reset(self._st)
        self._mic = self._ref = self._out = np.zeros(0, np.int16)

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """``mic`` with the echo of ``reference`` removed; int16, same length, lagging less than one ``frame``."""
        if len(reference) != len(mic):
            raise ValueError(f"reference has {len(reference)} samples, the microphone {len(mic)}")
        self._mic = np.concatenate([self._mic, mic.astype(np.int16)])
        self._ref = np.concatenate([self._ref, reference.astype(np.int16)])
        F = self.frame
        k = len(self._mic) // F
        outs = [self._out]
        lib, p16 = self._lib, ctypes.POINTER(ctypes.c_int16)
        for i in range(k):
            d = np.ascontiguousarray(self._mic[i * F : (i + 1) * F])
            x = np.ascontiguousarray(self._ref[i * F : (i + 1) * F])
            lib.speex_echo_cancellation(self._st, d.ctypes.data_as(p16), x.ctypes.data_as(p16), self._buf)
            if self._pp is not None:
                lib.speex_preprocess_run(self._pp, self._buf)
            outs.append(np.frombuffer(self._buf, np.int16).copy())
        self._mic, self._ref = self._mic[k * F :], self._ref[k * F :]
        out = np.concatenate(outs)
        n = len(mic)
        if len(out) < n:
            out = np.concatenate([np.zeros(n - len(out), np.int16), out])
        self._out = out[n:]
        return out[:n]

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None and getattr(self, "_st", None):
            lib.speex_echo_state_destroy(self._st)
            self._st = None
        if lib is not None and getattr(self, "_pp", None):
            lib.speex_preprocess_state_destroy(self._pp)
            self._pp = None


def make_canceller(kind: str = "speex", rate: int = 16000, tail_ms: int = 256) -> EchoCanceller | SpeexEchoCanceller:
    """The edge's canceller for ``[edges.X.microphone] echo_canceller``; ``SpeexUnavailable`` names the fix."""
    taps = max(rate * tail_ms // 1000, 1)
    if kind == "speex":
        return SpeexEchoCanceller(frame=rate // 100, taps=max(taps, rate // 100), rate=rate)
    if kind == "nlms":
        return EchoCanceller(block=256, taps=max(taps, 256))
    raise ValueError(f"unknown echo canceller {kind!r} (expected 'speex' or 'nlms')")
