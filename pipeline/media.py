"""WAV files for the runtime: read any common WAV as 16 kHz mono int16, write one, resample.

The edge's WAV source and enrolment read files through here; speech synthesis and images for built
sessions live in ``evaluation.media``.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

RATE = 16000


class MediaError(ValueError):
    """A media file is missing, unreadable or of an unsupported kind; the text names it."""


class _WavFormatError(ValueError):
    """The bytes are not a WAV file we can parse."""


def _parse_wav(data: bytes) -> tuple[int, int, int, int, bytes]:
    """``(format, channels, rate, bits, samples)`` of a RIFF/WAVE file.

    Parsed by hand because Python 3.11's ``wave`` rejects WAVE_FORMAT_EXTENSIBLE (what most tools
    write for 24-bit and multichannel audio) and float samples.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise _WavFormatError("no RIFF/WAVE header")
    pos, fmt, raw = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]  # a writer that never fixed the size: take what is there
        if cid == b"fmt ":
            if len(body) < 16:
                raise _WavFormatError("truncated fmt chunk")
            tag = int.from_bytes(body[0:2], "little")
            if tag == 0xFFFE and len(body) >= 26:  # extensible: the real format opens the sub-format GUID
                tag = int.from_bytes(body[24:26], "little")
            fmt = (
                tag,
                int.from_bytes(body[2:4], "little"),
                int.from_bytes(body[4:8], "little"),
                int.from_bytes(body[14:16], "little"),
            )
        elif cid == b"data":
            raw = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or raw is None:
        raise _WavFormatError("missing fmt or data chunk")
    return (*fmt, raw)


def decode_wav(path: str | Path, rate_hint: int = RATE) -> tuple[np.ndarray, int]:
    """A WAV file (8/16/24/32-bit PCM or float, any channels) as mono float32 at int16 scale, and its rate.

    ``MediaError`` says what is wrong and how to convert the file (``rate_hint`` goes into that hint).
    """
    path = Path(path)
    fix = f"convert it with: ffmpeg -i '{path}' -ar {rate_hint} -ac 1 -c:a pcm_s16le out.wav"
    try:
        tag, channels, file_rate, bits, raw = _parse_wav(path.read_bytes())
    except FileNotFoundError:
        raise MediaError(f"audio file {path}: file not found") from None
    except IsADirectoryError:
        raise MediaError(f"audio file {path}: is a directory, expected a WAV file") from None
    except (_WavFormatError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MediaError(f"audio file {path}: not a readable WAV ({reason}); {fix}") from None
    if channels < 1 or file_rate < 1000:
        raise MediaError(f"audio file {path}: invalid header ({channels} channels at {file_rate} Hz); {fix}")
    if tag == 1 and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) * 256.0
    elif tag == 1 and bits == 16:
        x = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float32)
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8)[: len(raw) // 3 * 3].reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / 256.0).astype(np.float32)
    elif tag == 1 and bits == 32:
        x = (np.frombuffer(raw[: len(raw) // 4 * 4], "<i4") / 65536.0).astype(np.float32)
    elif tag == 3 and bits in (32, 64):
        x = (np.frombuffer(raw[: len(raw) // (bits // 8) * (bits // 8)], f"<f{bits // 8}") * 32768.0).astype(np.float32)
    else:
        raise MediaError(f"audio file {path}: unsupported encoding (format {tag}, {bits}-bit); {fix}")
    if channels > 1:
        x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)
    return x, file_rate


def read_wav(path: str | Path, rate: int = RATE) -> np.ndarray:
    """A WAV file as mono int16 samples at ``rate`` (see ``decode_wav`` for the formats)."""
    x, file_rate = decode_wav(path, rate)
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return resample(pcm, file_rate, rate)


def read_wav_native(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV file as mono int16 samples at its own rate, and that rate."""
    x, file_rate = decode_wav(path)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), file_rate


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = RATE) -> Path:
    """Write mono int16 samples as a WAV file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


def resample(pcm: np.ndarray, rate: int, target: int = RATE) -> np.ndarray:
    """Int16 mono audio from ``rate`` to ``target`` Hz: polyphase (band-limited) with scipy, linear without.

    The one offline resampler (WAV files, synthesized speech, playback); an edge without scipy
    interpolates linearly. The edge's streaming capture resampler is ``edge.audio.Resampler``.
    """
    if rate == target or len(pcm) == 0:
        return np.asarray(pcm, dtype=np.int16)
    try:
        from scipy.signal import resample_poly
    except ImportError:
        n = round(len(pcm) * target / rate)
        y = np.interp(np.arange(n) * (rate / target), np.arange(len(pcm)), np.asarray(pcm, dtype=np.float32))
    else:
        g = math.gcd(rate, target)
        y = resample_poly(np.asarray(pcm, dtype=np.float32), target // g, rate // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)
