"""Enroll a person in the identity gallery from voice recordings and/or face photos.

Each --voice file (WAV, 16-bit; any rate, converted to 16 kHz mono) becomes one voice embedding
from the speaker model; each --face image becomes one embedding of its largest face. The gallery
(SQLite, mode 0600) keeps them per model, so enroll again after changing the speaker or face model.
Use --remove to forget a person, --list to show who is enrolled.

Where: --config deploy.toml enrols into that deployment's gallery (the one its speaker and face
stages read: [stages.speaker] / [stages.face] gallery, else <data_dir>/gallery.db) with its models;
--gallery FILE into that file; without either into .sensorium/gallery.db, the gallery of a
deployment with the default data_dir and of `sensorium demo --audio/--video`.

Examples:
  sensorium enroll alice --voice alice1.wav alice2.wav --face alice.jpg --config deploy.toml
  sensorium enroll --list --config deploy.toml
"""

from __future__ import annotations

import argparse
import sys

HELP = "enroll a person's voice and/or face in the gallery"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the person's name (as the reasoning loop will see it)")
    p.add_argument("--voice", nargs="+", default=[], metavar="WAV", help="recordings of the person speaking (>= 1 s)")
    p.add_argument("--face", nargs="+", default=[], metavar="IMAGE", help="photos with the person's face")
    p.add_argument("--config", help="deployment TOML: enrol into its gallery, with its speaker and face models")
    p.add_argument(
        "--gallery", help="gallery file (default: the deployment's with --config, else .sensorium/gallery.db)"
    )
    p.add_argument(
        "--speaker-model",
        help="speaker embedding model: resemblyzer, ecapa or ecapa:<dir or hub id> (default: the deployment's, "
        "else resemblyzer)",
    )
    p.add_argument("--face-model", help="face recognizer for --face (default: the deployment's, else auto)")
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default: %(default)s)")
    p.add_argument("--remove", action="store_true", help="forget NAME and all their embeddings")
    p.add_argument("--list", action="store_true", help="list enrolled people and exit")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sensorium.enrollment import DEFAULT_GALLERY, Enroller, Galleries, deployment_galleries, enroll
    from sensorium.pipeline.config import ConfigError

    where = Galleries(voice=DEFAULT_GALLERY, face=DEFAULT_GALLERY)
    if args.config:
        from sensorium.deployment import load_deployment

        try:
            where = deployment_galleries(load_deployment(args.config, check_graph=False))
        except (ConfigError, OSError) as exc:
            print(f"sensorium enroll: {exc}", file=sys.stderr)
            return 2
    if args.gallery:
        where.voice = where.face = Path(args.gallery)
    models = Enroller(
        args.speaker_model or where.speaker_model,
        args.face_model or where.face_model,
        args.device,
        where.speaker_cache,
    )
    common = {"device": args.device, "remove": args.remove, "list_only": args.list, "enroller": models}
    if where.voice == where.face:
        return enroll(args.name, gallery_path=where.voice, voice=args.voice, face=args.face, **common)
    # the deployment's speaker and face stages read different files: each kind goes where it is read
    rc = 0
    for path, voice, face in ((where.voice, args.voice, []), (where.face, [], args.face)):
        if args.list or args.remove or voice or face or (not args.voice and not args.face and path == where.voice):
            rc = max(rc, enroll(args.name, gallery_path=path, voice=voice, face=face, **common))
    return rc
