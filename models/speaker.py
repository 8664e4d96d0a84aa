"""Speaker embeddings behind one interface: Resemblyzer GE2E (bundled) and speechbrain ECAPA.

``load_encoder("resemblyzer")`` uses the GE2E weights shipped in the Resemblyzer wheel (the offline
default). ``load_encoder("ecapa")`` or ``load_encoder("ecapa:<dir or hub id>")`` loads a speechbrain
``EncoderClassifier`` from a local directory holding ``hyperparams.yaml`` + checkpoints, or from a
Hugging Face id (``speechbrain/spkrec-ecapa-voxceleb``, the production default on a GPU; it is
downloaded on a machine with internet access). Every embedding is unit-norm float32, so cosine
similarity is a dot product, and each encoder has a ``model_id`` under which the gallery keeps its
embeddings (embeddings of different models never compare).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

RATE = 16000
ECAPA_HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (float32)."""
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("embedding is zero or not finite")
    return v / n


def _as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)


class SpeakerEncoder(Protocol):
    """What a speaker-embedding backend provides."""

    model_id: str
    """Identifies the weights; gallery embeddings are stored and compared per model_id."""
    dim: int
    """Embedding length."""

    def embed(self, pcm: np.ndarray, rate: int = RATE) -> np.ndarray:
        """Unit-norm embedding of one utterance (int16 or float32 mono at ``rate``)."""
        ...

    def warm_up(self) -> None:
        """Run every code path of ``embed`` once, so the first utterance costs what the others cost."""
        ...


def voiced(seconds: float = 4.0, rate: int = RATE) -> np.ndarray:
    """A voice-like test signal (a 140 Hz buzz with harmonics, at a syllable rate), float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return (0.2 * buzz * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


class ResemblyzerEncoder:
    """Resemblyzer's GE2E encoder (256-d) with the weights bundled in the package."""

    dim = 256

    def __init__(self, device: str = "cpu", weights: str | Path | None = None) -> None:
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device=device, verbose=False, weights_fpath=weights)
        path = Path(weights) if weights else Path(__import__("resemblyzer").__file__).parent / "pretrained.pt"
        self.model_id = f"resemblyzer-ge2e:{_file_tag(path)}"

    def embed(self, pcm: np.ndarray, rate: int = RATE) -> np.ndarray:
        from resemblyzer import preprocess_wav

        if not np.any(pcm):
            raise ValueError("no speech: the audio is digital silence")
        # preprocess_wav normalizes volume and trims long silences with webrtcvad, as in training.
        wav = preprocess_wav(_as_float(pcm), source_sr=rate)
        if len(wav) < rate // 4:
            raise ValueError(f"too little speech for a voice embedding ({len(wav) / RATE:.2f} s after trimming)")
        return unit(self._encoder.embed_utterance(wav))

    def warm_up(self) -> None:
        """Embed a voice-like clip once, through the trimming and the mel spectrogram.

        The first call in a process is seconds, not milliseconds: librosa imports its feature modules
        (and SciPy's signal and stats) lazily and numba compiles, or loads from its cache, its
        vectorized helpers while they import, all holding the interpreter lock. Paid at load it stalls
        nothing; paid on the first utterance it stalled every stage of the worker for 5-7 s.
        """
        from resemblyzer import preprocess_wav

        clip = voiced()
        preprocess_wav(clip, source_sr=RATE)
        self._encoder.embed_utterance(clip)


class EcapaEncoder:
    """speechbrain ECAPA-TDNN ``EncoderClassifier`` from a local directory or a hub id."""

    def __init__(self, source: str = ECAPA_HUB_ID, device: str = "cpu", savedir: str | Path | None = None) -> None:
        from speechbrain.inference.classifiers import EncoderClassifier

        local = Path(source).expanduser()
        if local.is_dir():
            if not (local / "hyperparams.yaml").is_file():
                raise FileNotFoundError(f"{local}: no hyperparams.yaml (expected a speechbrain model directory)")
            source = str(local.resolve())
        savedir = Path(savedir) if savedir else Path(".cache/models") / ("ecapa-" + _text_tag(source))
        self._model = EncoderClassifier.from_hparams(source=source, savedir=str(savedir), run_opts={"device": device})
        if self._model is None:
            raise RuntimeError(f"speechbrain could not load an EncoderClassifier from {source!r}")
        self._model.eval()
        self.device = device
        ckpt = local / "embedding_model.ckpt" if local.is_dir() else None
        self.model_id = f"ecapa:{source if ckpt is None or not ckpt.exists() else _file_tag(ckpt)}"
        self.dim = int(self.embed(voiced(1.0)).shape[0])

    def embed(self, pcm: np.ndarray, rate: int = RATE) -> np.ndarray:
        import torch

        if rate != RATE:
            raise ValueError(f"ECAPA expects {RATE} Hz audio, got {rate} Hz")
        wav = torch.from_numpy(_as_float(pcm)).unsqueeze(0)
        with torch.inference_mode():
            emb = self._model.encode_batch(wav)
        return unit(emb.squeeze().detach().cpu().numpy())

    def warm_up(self) -> None:
        """Embed a voice-like clip once (torch's first passes allocate and pick kernels)."""
        self.embed(voiced(2.0))


def _file_tag(path: Path) -> str:
    """Short content hash of a weights file, so retrained weights get a new model_id."""
    h = hashlib.sha1()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:10]


def _text_tag(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def load_encoder(
    spec: str = "resemblyzer", device: str = "cpu", cache_dir: str | Path = ".cache/models"
) -> ResemblyzerEncoder | EcapaEncoder:
    """An encoder from a spec: ``resemblyzer``, ``resemblyzer:<weights.pt>``, ``ecapa``, ``ecapa:<dir|hub id>``."""
    kind, _, arg = spec.partition(":")
    if kind == "resemblyzer":
        return ResemblyzerEncoder(device=device, weights=arg or None)
    if kind == "ecapa":
        source = arg or ECAPA_HUB_ID
        return EcapaEncoder(source, device=device, savedir=Path(cache_dir) / ("ecapa-" + _text_tag(source)))
    raise ValueError(f"unknown speaker model {spec!r}: expected 'resemblyzer[:weights.pt]' or 'ecapa[:dir or hub id]'")
