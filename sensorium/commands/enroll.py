"""Enroll a person in the identity gallery from voice recordings and/or face photos.

Each --voice file (WAV, 16-bit; any rate, converted to 16 kHz mono) becomes one voice embedding
from the speaker model; each --face image becomes one embedding of its largest face. The gallery
(SQLite, mode 0600) keeps them per model, so enroll again after changing the speaker or face model.
Use --remove to forget a person, --list to show who is enrolled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

HELP = "enroll a person's voice and/or face in the gallery"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the person's name (as the reasoning loop will see it)")
    p.add_argument("--voice", nargs="+", default=[], metavar="WAV", help="recordings of the person speaking (>= 1 s)")
    p.add_argument("--face", nargs="+", default=[], metavar="IMAGE", help="photos with the person's face")
    p.add_argument("--gallery", default=".sensorium/gallery.db", help="gallery file (default: %(default)s)")
    p.add_argument(
        "--speaker-model",
        default="resemblyzer",
        help="speaker embedding model: resemblyzer, ecapa or ecapa:<dir or hub id> (default: %(default)s)",
    )
    p.add_argument("--face-model", default="auto", help="face recognizer for --face (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default: %(default)s)")
    p.add_argument("--remove", action="store_true", help="forget NAME and all their embeddings")
    p.add_argument("--list", action="store_true", help="list enrolled people and exit")


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


def run(args: argparse.Namespace) -> int:
    from models.gallery import Gallery, GalleryError

    try:
        gallery = Gallery(args.gallery)
        gallery.check()
    except (GalleryError, OSError) as exc:
        return _fail(str(exc))
    with gallery:
        if args.list:
            people = gallery.people()
            for name, kinds in people.items():
                print(f"{name}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
            if not people:
                print(f"nobody enrolled in {args.gallery}")
            return 0
        if not args.name:
            return _fail("give the person's NAME (or --list)")
        if args.remove:
            if not gallery.remove(args.name):
                return _fail(f"{args.name!r} is not enrolled in {args.gallery}")
            print(f"removed {args.name} from {args.gallery}")
            return 0
        if not args.voice and not args.face:
            return _fail("give at least one --voice WAV or --face IMAGE")
        if args.name.strip().lower() == "unknown":
            return _fail("'unknown' is reserved for people who are not enrolled")

        voices = []
        for path in args.voice:
            try:
                voices.append((path, load_voice(path)))
            except ValueError as exc:
                return _fail(str(exc))
        for path in args.face:
            if not Path(path).is_file():
                return _fail(f"{path}: file not found")

        added: list[tuple[str, str, str]] = []  # (kind, model_id, file); written only when all succeed
        vectors = []
        if voices:
            from models.speaker import load_encoder

            print(f"loading speaker model {args.speaker_model} …", file=sys.stderr)
            try:
                encoder = load_encoder(args.speaker_model, args.device)
            except (ValueError, FileNotFoundError, OSError) as exc:
                return _fail(f"cannot load speaker model {args.speaker_model!r}: {exc}")
            for path, pcm in voices:
                try:
                    vectors.append(encoder.embed(pcm))
                except ValueError as exc:
                    return _fail(f"{path}: {exc}")
                added.append(("voice", encoder.model_id, path))
                print(f"  voice {path}: {len(pcm) / 16000:.1f} s", file=sys.stderr)
        if args.face:
            try:
                from models.faces import FacePipeline
            except ImportError as exc:
                return _fail(f"face enrolment is not available in this install: {exc}")
            print("loading face models …", file=sys.stderr)
            faces = FacePipeline(recognizer=args.face_model, device=args.device)
            for path in args.face:
                try:
                    emb, model_id = faces.embed_image_file(path)
                except ValueError as exc:
                    return _fail(str(exc))
                vectors.append(emb)
                added.append(("face", model_id, path))
                print(f"  face {path}", file=sys.stderr)

        for (kind, model_id, _), vec in zip(added, vectors, strict=True):
            gallery.add(args.name, kind, model_id, vec)
        counts = gallery.people().get(args.name, {})
        print(
            f"enrolled {args.name} in {args.gallery}: "
            + ", ".join(f"{n} {k} embedding{'s' if n != 1 else ''}" for k, n in sorted(counts.items()))
        )
    return 0
