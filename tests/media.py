"""Real test speech at 16 kHz mono int16, synthesized by Piper (joe), Debian flite and espeak-ng.

Every synthesis is cached under ``.cache/media/`` keyed by engine, voice and text, so a test run
synthesizes each sentence once. Other helpers' tests import these functions; they return numpy
int16 arrays (``speech``), WAV files (``speech_wav``) or ``AudioChunk`` lists (``chunks``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sensorium.evaluation import media as pipeline_media
from sensorium.evaluation.media import SPEECH_VERSION, silence
from sensorium.evaluation.media import concat as concat  # re-exported: tests build their audio with these
from sensorium.evaluation.media import mix as mix
from sensorium.evaluation.media import noise as noise

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


def speech(text: str, voice: str = "piper:joe") -> np.ndarray:
    """``text`` spoken by ``voice`` as 16 kHz mono int16 samples (``evaluation.media.speech``, cached here)."""
    return pipeline_media.speech(text, voice, CACHE)


def speech_wav(text: str, voice: str = "piper:joe", lead: float = 0.0, tail: float = 0.0) -> Path:
    """A cached 16 kHz WAV of ``text`` with ``lead``/``tail`` seconds of silence around it."""
    path = _cache_path(voice, text, f"{lead}:{tail}")
    if not path.exists():
        write_wav(path, np.concatenate([silence(lead), speech(text, voice), silence(tail)]))
    return path


def chunks(
    pcm: np.ndarray,
    room: str = "kitchen",
    source: str = "kitchen-pi",
    t0: float = 1_000_000.0,
    block: int = 1280,
    rate: int = RATE,
) -> list:
    """Cut samples into ``AudioChunk`` messages of ``block`` samples stamped from ``t0`` on."""
    from sensorium.pipeline.messages import AudioChunk

    out = []
    for i, start in enumerate(range(0, len(pcm), block)):
        part = np.asarray(pcm[start : start + block], dtype="<i2")
        out.append(AudioChunk(seq=i, time=t0 + start / rate, room=room, source=source, rate=rate, data=part.tobytes()))
    return out
