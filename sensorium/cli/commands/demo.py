"""Run hub, workers, the built-in agent and edge agents in one process on the bundled CPU models.

Without media it plays the bundled sample session (built once from speech synthesized with the
bundled Piper and flite voices and images that ship inside installed packages). With media, each
--audio/--video room gets an edge node playing the file in real time; the demo exits when the
media are done and the pipeline has settled, printing a latency table.

Examples:
  sensorium demo
  sensorium demo --audio kitchen=hey_jarvis_lights.wav --events-json events.jsonl
  sensorium demo --video living_room=frames/ --enroll alice=alice.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

HELP = "run everything in one process on bundled models and media"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", action="append", metavar="ROOM=FILE.wav", help="a room's microphone audio (repeatable)")
    p.add_argument(
        "--video", action="append", metavar="ROOM=DIR_OR_VIDEO", help="a room's camera: video file or image folder"
    )
    p.add_argument("--events-json", type=Path, help="write every event as a JSON line to this file")
    p.add_argument("--out", type=Path, default=Path(".sensorium-demo"), help="folder for TTS WAVs and state")
    p.add_argument(
        "--gallery",
        type=Path,
        help="enrolled people to recognise (default with --audio/--video: .sensorium/gallery.db, where "
        "'sensorium enroll' writes; without media: the sample's people in OUT/gallery.db)",
    )
    p.add_argument("--enroll", action="append", metavar="NAME=FILE", help="enrol a voice (.wav) or face (image) first")
    p.add_argument("--no-agent", action="store_true", help="do not answer (no built-in agent, no TTS)")
    p.add_argument("--speed", type=float, default=1.0, help="play media this many times faster than real time")
    p.add_argument("--quiet", action="store_true", help="print only the final tables")
    p.add_argument("--record", type=Path, help="record everything on the bus to this MCAP file (replay it later)")
    p.add_argument("--summary-json", type=Path, help="write the latency table and breakdown as JSON here")


def run(args: argparse.Namespace) -> int:
    from sensorium.evaluation import demo
    from sensorium.pipeline.config import ConfigError

    try:
        audio = demo.parse_media(args.audio, "--audio")
        video = demo.parse_media(args.video, "--video")
    except ValueError as exc:
        print(f"sensorium demo: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not audio and not video:
        from sensorium.evaluation.sample import run_sample

        return run_sample(args)
    from sensorium.enrollment import DEFAULT_GALLERY

    gallery = args.gallery or DEFAULT_GALLERY
    try:
        if args.enroll and demo.enroll_pairs(args.enroll, gallery) != 0:
            return 2
        dep = demo.demo_deployment(audio, video, args.out, talk=not args.no_agent, gallery=gallery)
    except (ConfigError, ValueError) as exc:
        print(f"sensorium demo: {exc}", file=sys.stderr)
        return 2
    print(demo.describe_gallery(gallery))
    print(f"demo: rooms {', '.join(sorted(dep.rooms))}; stages {', '.join(dep.worker('local').stages)} on cpu")
    _, summary, breakdown = asyncio.run(
        demo.run_media(
            dep,
            events_json=args.events_json,
            agent=not args.no_agent,
            speed=args.speed,
            quiet=args.quiet,
            record=args.record,
        )
    )
    if args.summary_json:
        args.summary_json.write_text(demo.summary_json(summary, breakdown))
    if args.events_json:
        print(f"events written to {args.events_json}")
    return 0
