"""Enroll a person in the identity gallery from voice recordings and/or face photos.

Each --voice file (WAV, 16-bit; any rate, converted to 16 kHz mono) becomes one voice embedding
from the speaker model; each --face image becomes one embedding of its largest face. The gallery
(SQLite, mode 0600) keeps them per model, so enroll again after changing the speaker or face model.
Use --remove to forget a person, --list to show who is enrolled.
"""

from __future__ import annotations

import argparse

HELP = "enroll a person's voice and/or face in the gallery"
LOADS_MODELS = True


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


def run(args: argparse.Namespace) -> int:
    from sensorium.enrollment import enroll

    return enroll(
        args.name,
        gallery_path=args.gallery,
        voice=args.voice,
        face=args.face,
        speaker_model=args.speaker_model,
        face_model=args.face_model,
        device=args.device,
        remove=args.remove,
        list_only=args.list,
    )
