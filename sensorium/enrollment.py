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

    from sensorium.pipeline.config import Deployment

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
            from sensorium.models.speaker import load_encoder

            print(f"loading speaker model {self.speaker_model} …", file=sys.stderr)
            args = (self.speaker_model, self.device) + ((self.cache_dir,) if self.cache_dir else ())
            self._encoder = load_encoder(*args)
            self.loads += 1
        return self._encoder

    def faces(self) -> Any:
        """The face pipeline (``ImportError`` where face libraries are not installed)."""
        if self._faces is None:
            from sensorium.models.faces import FacePipeline

            print("loading face models …", file=sys.stderr)
            self._faces = FacePipeline(recognizer=self.face_model, device=self.device)
            self.loads += 1
        return self._faces


def _fail(msg: str) -> int:
    print(f"sensorium enroll: {msg}", file=sys.stderr)
    return 2


def load_voice(path: str | Path) -> np.ndarray:
    """16 kHz mono int16 samples of a WAV file; ``ValueError`` with a clear message otherwise."""
    from sensorium.pipeline.media import read_wav

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
    from sensorium.models.gallery import Gallery, GalleryError

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


class ConsoleIdentity:
    """The console's ``Identity``: the deployment's own speaker and face models and its galleries.

    A cluster the console names is enrolled here exactly as ``sensorium enroll --config`` would, so
    the workers' next recognition of that face or voice carries the name (the gallery notices the
    write). Models load on first use, once.
    """

    def __init__(
        self, galleries: Galleries, *, face_threshold: float | None = None, voice_threshold: float | None = None
    ):
        from sensorium.nodes.speaker import default_threshold

        self.galleries = galleries
        self.enroller = Enroller(galleries.speaker_model, galleries.face_model, "cpu", galleries.speaker_cache)
        self.voice_threshold = (
            voice_threshold if voice_threshold is not None else default_threshold(galleries.speaker_model)
        )
        self._face_threshold = face_threshold

    @classmethod
    def for_deployment(cls, dep: Deployment) -> ConsoleIdentity:
        face = dep.stages["face"].options if "face" in dep.stages else None
        speaker = dep.stages["speaker"].options if "speaker" in dep.stages else None
        return cls(
            deployment_galleries(dep),
            face_threshold=getattr(face, "threshold", None),
            voice_threshold=getattr(speaker, "threshold", None),
        )

    @property
    def face_threshold(self) -> float:
        if self._face_threshold is None:
            self._face_threshold = float(self.enroller.faces().default_threshold)
        return self._face_threshold

    def embed_face(self, jpeg: bytes, box: tuple[float, float, float, float]) -> Any:
        """The face in the top part of a person box of a JPEG frame (as the face stage finds it), or None."""
        import cv2
        import numpy as np

        from sensorium.bridges.console.service import Embedding

        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("the camera frame is not a readable JPEG")
        h, w = img.shape[:2]
        x1, y1, x2, y2 = box
        bw, bh = x2 - x1, y2 - y1
        cx1, cx2 = int(max(0, x1 - 0.1 * bw)), int(min(w, x2 + 0.1 * bw))
        cy1, cy2 = int(max(0, y1 - 0.05 * bh)), int(min(h, y2))
        crop = img[cy1:cy2, cx1:cx2]
        if crop.size == 0:
            return None
        from sensorium.nodes.face import _centrality
        from sensorium.pipeline.messages import Box

        pipe = self.enroller.faces()
        person = Box(x1, y1, x2, y2, 1.0)
        # the face the face stage gives this person box: the one in its head region, most central
        scored = []
        for f in pipe.detect(crop):
            fb = (f.box[0] + cx1, f.box[1] + cy1, f.box[2] + cx1, f.box[3] + cy1)
            c = _centrality(fb, f.score, person)
            if c > 0:
                scored.append((c, f))
        if not scored:
            return None
        face = max(scored, key=lambda cf: cf[0])[1]
        vec = pipe.embed(crop, [face])[0]
        fx1, fy1, fx2, fy2 = (int(v) for v in face.box)
        m = int(0.25 * (fx2 - fx1))
        thumb = crop[max(0, fy1 - m) : fy2 + m, max(0, fx1 - m) : fx2 + m]
        ok, enc = cv2.imencode(
            ".jpg", cv2.resize(thumb, (96, 96)) if thumb.size else crop, [cv2.IMWRITE_JPEG_QUALITY, 85]
        )
        return Embedding(vector=vec, model_id=pipe.model_id, media=enc.tobytes() if ok else None)

    def embed_voice(self, pcm: np.ndarray, rate: int) -> Any:
        from sensorium.bridges.console.service import Embedding

        enc = self.enroller.encoder()
        return Embedding(vector=enc.embed(pcm, rate), model_id=enc.model_id)

    def _gallery(self, kind: str) -> Any:
        from sensorium.models.gallery import Gallery

        return Gallery(self.galleries.face if kind == "face" else self.galleries.voice)

    def enroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        with self._gallery(kind) as g:
            for v in vectors:
                g.add(name, kind, model_id, v)

    def unenroll(self, name: str, kind: str, model_id: str, vectors: list[np.ndarray]) -> None:
        with self._gallery(kind) as g:
            g.remove_vectors(name, kind, model_id, vectors)

    def remove(self, name: str) -> bool:
        removed = False
        for kind in ("voice", "face"):
            with self._gallery(kind) as g:
                removed = g.remove(name) or removed
        return removed

    def people(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for kind in ("voice", "face"):
            with self._gallery(kind) as g:
                for name, kinds in g.people().items():
                    out.setdefault(name, {}).update({k: n for k, n in kinds.items() if k == kind})
        return out
