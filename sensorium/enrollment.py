"""Enrolment in the identity gallery: voice recordings and face photos become embeddings of a name.

The ``sensorium enroll`` command and the demo's sample people both enrol through here. One
gallery per deployment: ``deployment_galleries`` says where its speaker and face stages read
(``[stages.speaker] gallery`` / ``[stages.face] gallery``, else ``<data_dir>/gallery.db``), and
``enroll_command`` is the exact command that fills it (every hint prints that).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from pipeline.config import Deployment

#: The gallery of ``sensorium enroll`` and ``sensorium demo --audio/--video`` without --config or
#: --gallery: the one a worker reads with the default ``data_dir`` (``.sensorium``).
DEFAULT_GALLERY = Path(".sensorium/gallery.db")


@dataclass
class Galleries:
    """Where a deployment's stages read enrolled people, and with which models."""

    voice: Path
    """The speaker stage's gallery."""
    face: Path
    """The face stage's gallery."""
    speaker_model: str = "resemblyzer"
    """The speaker stage's model (embeddings are kept per model)."""
    speaker_cache: str = ".cache/models"
    """Where the speaker stage keeps downloaded models."""
    face_model: str = "auto"
    """The face stage's recognizer."""


def deployment_galleries(dep: Deployment) -> Galleries:
    """The galleries (and models) the speaker and face stages of ``dep`` use."""
    default = Path(dep.data_dir) / "gallery.db"
    speaker = dep.stages["speaker"].options if "speaker" in dep.stages else None
    face = dep.stages["face"].options if "face" in dep.stages else None
    return Galleries(
        voice=Path(speaker.gallery) if speaker is not None and speaker.gallery else default,
        face=Path(face.gallery) if face is not None and face.gallery else default,
        speaker_model=speaker.model if speaker is not None else "resemblyzer",
        speaker_cache=speaker.cache_dir if speaker is not None else ".cache/models",
        face_model=face.recognizer if face is not None else "auto",
    )


def enroll_command(
    kind: str = "voice", *, gallery: str | Path | None = None, config: str | Path | None = None, model: str = ""
) -> str:
    """The exact ``sensorium enroll`` command that enrols a ``kind`` ("voice", "face", "both") where it is read."""
    what = {"voice": "--voice FILE.wav", "face": "--face PHOTO.jpg"}.get(kind, "--voice FILE.wav --face PHOTO.jpg")
    cmd = f"sensorium enroll NAME {what}"
    if config is not None:
        return f"{cmd} --config {config}"
    if gallery is not None and Path(gallery) != DEFAULT_GALLERY:
        cmd += f" --gallery {gallery}"
    if model and model != "resemblyzer" and kind == "voice":
        cmd += f" --speaker-model {model}"
    return cmd


@dataclass
class Enroller:
    """The embedding models of one enrolment run, each loaded once, on first use."""

    speaker_model: str = "resemblyzer"
    face_model: str = "auto"
    device: str = "cpu"
    cache_dir: str | None = None
    loads: int = 0
    """Models loaded so far (a run with many files and people loads each model once)."""
    _encoder: Any = field(default=None, repr=False)
    _faces: Any = field(default=None, repr=False)

    def encoder(self) -> Any:
        """The speaker encoder (``ValueError``/``OSError`` if it cannot load)."""
        if self._encoder is None:
            from models.speaker import load_encoder

            print(f"loading speaker model {self.speaker_model} …", file=sys.stderr)
            args = (self.speaker_model, self.device) + ((self.cache_dir,) if self.cache_dir else ())
            self._encoder = load_encoder(*args)
            self.loads += 1
        return self._encoder

    def faces(self) -> Any:
        """The face pipeline (``ImportError`` where face libraries are not installed)."""
        if self._faces is None:
            from models.faces import FacePipeline

            print("loading face models …", file=sys.stderr)
            self._faces = FacePipeline(recognizer=self.face_model, device=self.device)
            self.loads += 1
        return self._faces


def _fail(msg: str) -> int:
    print(f"sensorium enroll: {msg}", file=sys.stderr)
    return 2


def load_voice(path: str | Path) -> np.ndarray:
    """16 kHz mono int16 samples of a WAV file; ``ValueError`` with a clear message otherwise."""
    from pipeline.media import read_wav

    pcm = read_wav(path, 16000)  # MediaError (a ValueError) names the file and how to convert it
    if len(pcm) < 16000:
        raise ValueError(f"{path}: only {len(pcm) / 16000:.2f} s of audio; record at least 1 s of speech")
    return pcm


def enroll(
    name: str | None,
    *,
    gallery_path: str | Path,
    voice: Sequence[str] = (),
    face: Sequence[str] = (),
    speaker_model: str = "resemblyzer",
    face_model: str = "auto",
    device: str = "cpu",
    remove: bool = False,
    list_only: bool = False,
    enroller: Enroller | None = None,
) -> int:
    """Enrol (or remove, or list) ``name`` in the gallery; prints what it did, returns the exit status.

    ``enroller`` keeps the models loaded across calls (the demo's several people).
    """
    from models.gallery import Gallery, GalleryError

    try:
        gallery = Gallery(gallery_path)
        gallery.check()
    except (GalleryError, OSError) as exc:
        return _fail(str(exc))
    with gallery:
        if list_only:
            people = gallery.people()
            for person, kinds in people.items():
                print(f"{person}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
            if not people:
                print(f"nobody enrolled in {gallery_path} (enrol: {enroll_command('both', gallery=gallery_path)})")
            return 0
        if not name:
            return _fail("give the person's NAME (or --list)")
        if remove:
            if not gallery.remove(name):
                return _fail(f"{name!r} is not enrolled in {gallery_path}")
            print(f"removed {name} from {gallery_path}")
            return 0
        if not voice and not face:
            return _fail("give at least one --voice WAV or --face IMAGE")
        if name.strip().lower() == "unknown":
            return _fail("'unknown' is reserved for people who are not enrolled")

        voices = []
        for path in voice:
            try:
                voices.append((path, load_voice(path)))
            except ValueError as exc:
                return _fail(str(exc))
        for path in face:
            if not Path(path).is_file():
                return _fail(f"{path}: file not found")

        added: list[tuple[str, str, str]] = []  # (kind, model_id, file); written only when all succeed
        vectors = []
        models = enroller or Enroller(speaker_model, face_model, device)
        if voices:
            try:
                encoder = models.encoder()
            except (ValueError, FileNotFoundError, OSError) as exc:
                return _fail(f"cannot load speaker model {models.speaker_model!r}: {exc}")
            for path, pcm in voices:
                try:
                    vectors.append(encoder.embed(pcm))
                except ValueError as exc:
                    return _fail(f"{path}: {exc}")
                added.append(("voice", encoder.model_id, path))
                print(f"  voice {path}: {len(pcm) / 16000:.1f} s", file=sys.stderr)
        if face:
            try:
                faces = models.faces()
            except ImportError as exc:
                return _fail(f"face enrolment is not available in this install: {exc}")
            for path in face:
                try:
                    emb, model_id = faces.embed_image_file(path)
                except ValueError as exc:
                    return _fail(str(exc))
                vectors.append(emb)
                added.append(("face", model_id, path))
                print(f"  face {path}", file=sys.stderr)

        for (kind, model_id, _), vec in zip(added, vectors, strict=True):
            gallery.add(name, kind, model_id, vec)
        counts = gallery.people().get(name, {})
        print(
            f"enrolled {name} in {gallery_path}: "
            + ", ".join(f"{n} {k} embedding{'s' if n != 1 else ''}" for k, n in sorted(counts.items()))
        )
    return 0
