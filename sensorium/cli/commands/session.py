"""Build labelled sessions (MCAP) from media files, or the bundled sample session, and inspect them.

  sensorium session build SPEC.toml -o SESSION.mcap    compose a session from a TOML spec
  sensorium session sample -o SAMPLE.mcap              the sample session the demo plays
  sensorium session info SESSION.mcap                  rooms, streams, labels, damage

A spec places WAV clips on room microphones and images or videos on cameras at given times, with
their labels (wake word, words said, speaker, people on camera); see
evaluation/session.py for the format (its module docstring is the reference).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "build labelled sessions from media files and inspect them"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    b = sub.add_parser("build", help="compose a session from a TOML spec")
    b.add_argument("spec", type=Path, help="session spec (TOML)")
    b.add_argument("-o", "--output", type=Path, required=True, help="session file to write (.mcap)")
    s = sub.add_parser("sample", help="build the bundled sample session (synthesized speech, package images)")
    s.add_argument("-o", "--output", type=Path, default=Path(".cache/sample/sample.mcap"), help="session file")
    s.add_argument("--cache", type=Path, default=Path(".cache/sample"), help="where synthesized speech is kept")
    i = sub.add_parser("info", help="describe a session or recording")
    i.add_argument("session", type=Path, nargs="+", help="session file(s); rotated parts in order")


def run(args: argparse.Namespace) -> int:
    from sensorium.evaluation.session import SessionError
    from sensorium.pipeline.recorder import RecordingError

    try:
        if args.action == "build":
            return _build(args)
        if args.action == "sample":
            return _sample(args)
        if args.action == "info":
            return _info(args)
    except (SessionError, RecordingError) as exc:
        print(f"sensorium session: {exc}", file=sys.stderr)
        return 2
    print("sensorium session: give an action: build, sample or info (see --help)", file=sys.stderr)
    return 2


def _describe(res: object) -> str:
    from sensorium.evaluation.session import PeopleLabel, SpeechLabel

    labels = getattr(res, "labels", [])
    speech = [lb for lb in labels if isinstance(lb, SpeechLabel)]
    people = [lb for lb in labels if isinstance(lb, PeopleLabel)]
    speakers = sorted({lb.speaker for lb in speech if lb.speaker})
    return (
        f"{len(speech)} utterances ({sum(1 for lb in speech if lb.wake)} with a wake word) from "
        f"{len(speakers)} speakers ({', '.join(speakers) or '-'}); {len(people)} camera clips, "
        f"up to {max((lb.persons for lb in people), default=0)} people in view"
    )


def _build(args: argparse.Namespace) -> int:
    from sensorium.evaluation.session import build

    print(f"building {args.output} from {args.spec} …", file=sys.stderr)
    res = build(args.spec, args.output, progress=lambda s: print(s, file=sys.stderr))
    print(
        f"{res.path}: {res.duration:.1f} s, {res.audio_chunks} audio chunks, {res.video_frames} frames; "
        + _describe(res)
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    from sensorium.evaluation.session import build_sample
    from sensorium.pipeline.media import MediaError

    print(f"building the sample session (speech cached in {args.cache}) …", file=sys.stderr)
    try:
        res = build_sample(args.output, args.cache)
    except MediaError as exc:
        print(f"sensorium session: {exc}", file=sys.stderr)
        return 2
    print(f"{res.path}: {res.duration:.1f} s; " + _describe(res))
    return 0


def _info(args: argparse.Namespace) -> int:
    from collections import Counter

    from sensorium.evaluation.replay import ReplayError, load

    try:
        s = load(args.session)
    except ReplayError as exc:
        print(f"sensorium session: {exc}", file=sys.stderr)
        return 2
    topics = Counter(r.topic for r in s.items)
    print(f"{s.name}: {s.duration:.1f} s, rooms {', '.join(s.rooms)}")
    for topic, n in sorted(topics.items()):
        print(f"  {topic}: {n}")
    if s.recorded_events:
        kinds = Counter(type(e).__name__ for e in s.recorded_events)
        print("  recorded events: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if s.labels:
        print("  labels: " + _describe(s))
    if s.damage:
        print(f"WARNING: {s.damage}")
    return 0
