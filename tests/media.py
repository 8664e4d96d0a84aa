"""Real test speech at 16 kHz mono int16, synthesized by Piper (joe), Debian flite and espeak-ng.

Every synthesis is cached under ``.cache/media/`` keyed by engine, voice and text, so a test run
synthesizes each sentence once. Other helpers' tests import these functions; they return numpy
int16 arrays (``speech``), WAV files (``speech_wav``) or ``AudioChunk`` lists (``chunks``).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from evaluation import media as pipeline_media
from evaluation.media import SPEECH_VERSION

RATE = 16000
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "media"

#: Voices by engine: "piper:joe", "flite:slt|rms|awb|kal16", "espeak:<variant>" (e.g. "espeak:en-us").
FLITE_VOICES = ("slt", "rms", "awb", "kal16")


def _cache_path(voice: str, text: str, extra: str = "") -> Path:
    key = hashlib.sha1(f"{voice}\0{text}\0{extra}\0{SPEECH_VERSION}".encode()).hexdigest()[:16]
    safe = voice.replace(":", "_").replace("/", "_")
    return CACHE / f"{safe}-{key}.wav"


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and rate of a WAV file (the package's reader: any PCM/float WAV)."""
    return pipeline_media.read_wav_native(path)


write_wav = pipeline_media.write_wav
resample = pipeline_media.resample


def _piper(text: str) -> tuple[np.ndarray, int]:
    from evaluation.media import _piper as piper  # the same deterministic synthesis as sample sessions

    return piper(text)


def _external(cmd: list[str]) -> tuple[np.ndarray, int]:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise RuntimeError(f"{cmd[0]} is not installed (apt-get install {cmd[0]})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run([exe, *cmd[1:], str(out)], check=True, capture_output=True, timeout=60)
        return read_wav(out)


def speech(text: str, voice: str = "piper:joe") -> np.ndarray:
    """``text`` spoken by ``voice`` as 16 kHz mono int16 samples (cached)."""
    path = _cache_path(voice, text)
    if path.exists():
        return read_wav(path)[0]
    engine, _, name = voice.partition(":")
    if engine == "piper":
        pcm, rate = _piper(text)
    elif engine == "flite":
        if name not in FLITE_VOICES:
            raise ValueError(f"unknown flite voice {name!r} (known: {', '.join(FLITE_VOICES)})")
        pcm, rate = _external(["flite", "-voice", name, "-t", text, "-o"])
    elif engine == "espeak":
        pcm, rate = _external(["espeak-ng", "-v", name or "en-us", text, "-w"])
    else:
        raise ValueError(f"unknown voice {voice!r}: expected piper:joe, flite:<voice> or espeak:<variant>")
    pcm = resample(pcm, rate)
    write_wav(path, pcm)
    return pcm


def speech_wav(text: str, voice: str = "piper:joe", lead: float = 0.0, tail: float = 0.0) -> Path:
    """A cached 16 kHz WAV of ``text`` with ``lead``/``tail`` seconds of silence around it."""
    path = _cache_path(voice, text, f"{lead}:{tail}")
    if not path.exists():
        write_wav(path, np.concatenate([silence(lead), speech(text, voice), silence(tail)]))
    return path


def silence(seconds: float) -> np.ndarray:
    """Digital silence."""
    return np.zeros(int(round(seconds * RATE)), dtype=np.int16)


def noise(seconds: float, dbfs: float = -30.0, seed: int = 0, color: str = "white") -> np.ndarray:
    """Gaussian noise at an RMS level of ``dbfs``; ``color="pink"`` for a 1/f spectrum (fan, room)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * RATE))
    x = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(x)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * (10 ** (dbfs / 20) * 32767)
    return np.clip(x, -32768, 32767).astype(np.int16)


def mix(speech_pcm: np.ndarray, noise_pcm: np.ndarray) -> np.ndarray:
    """Speech plus noise (noise looped or cut to the speech's length)."""
    reps = int(np.ceil(len(speech_pcm) / max(len(noise_pcm), 1)))
    n = np.tile(noise_pcm, reps)[: len(speech_pcm)]
    return np.clip(speech_pcm.astype(np.int32) + n, -32768, 32767).astype(np.int16)


def concat(*parts: np.ndarray | float) -> np.ndarray:
    """Join sample arrays; a number stands for that many seconds of silence."""
    return np.concatenate([silence(p) if isinstance(p, int | float) else np.asarray(p, np.int16) for p in parts])


def chunks(
    pcm: np.ndarray,
    room: str = "kitchen",
    source: str = "kitchen-pi",
    t0: float = 1_000_000.0,
    block: int = 1280,
    rate: int = RATE,
) -> list:
    """Cut samples into ``AudioChunk`` messages of ``block`` samples stamped from ``t0`` on."""
    from pipeline.messages import AudioChunk

    out = []
    for i, start in enumerate(range(0, len(pcm), block)):
        part = np.asarray(pcm[start : start + block], dtype="<i2")
        out.append(AudioChunk(seq=i, time=t0 + start / rate, room=room, source=source, rate=rate, data=part.tobytes()))
    return out
