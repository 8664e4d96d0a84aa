"""Enrolment in the identity gallery: voice recordings and face photos become embeddings of a name.

The ``sensorium enroll`` command and the demo's sample people both enrol through here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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
) -> int:
    """Enrol (or remove, or list) ``name`` in the gallery; prints what it did, returns the exit status."""
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
                print(f"nobody enrolled in {gallery_path}")
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
        if voices:
            from models.speaker import load_encoder

            print(f"loading speaker model {speaker_model} …", file=sys.stderr)
            try:
                encoder = load_encoder(speaker_model, device)
            except (ValueError, FileNotFoundError, OSError) as exc:
                return _fail(f"cannot load speaker model {speaker_model!r}: {exc}")
            for path, pcm in voices:
                try:
                    vectors.append(encoder.embed(pcm))
                except ValueError as exc:
                    return _fail(f"{path}: {exc}")
                added.append(("voice", encoder.model_id, path))
                print(f"  voice {path}: {len(pcm) / 16000:.1f} s", file=sys.stderr)
        if face:
            try:
                from models.faces import FacePipeline
            except ImportError as exc:
                return _fail(f"face enrolment is not available in this install: {exc}")
            print("loading face models …", file=sys.stderr)
            faces = FacePipeline(recognizer=face_model, device=device)
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
