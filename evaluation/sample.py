"""The no-argument ``sensorium demo``: the bundled sample session through the whole loop.

First run: synthesize the sample session (two voices, two rooms, people on camera; media from
installed packages) into ``.cache/sample/`` and enrol its people in the demo's gallery. Every
run: replay it in real time into an embedded deployment with every stage, the built-in agent
answering, and a player per room writing the spoken answers as WAV files; then print the events,
the per-stage latency table, the voice-to-voice breakdown and the accuracy against the labels.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from sensorium.deployment import deployment_from_dict
from sensorium.embedded import embedded
from sensorium.evaluation.demo import (
    DEMO_LEFT_AFTER,
    Collector,
    _settle,
    describe_gallery,
    enroll_pairs,
    print_tables,
    recording_if,
    voice_breakdown,
)

CACHE = Path(".cache/sample")


def prepare(out: Path, cache: Path = CACHE, gallery: Path | None = None) -> Path:
    """Build the sample session once and enrol its people in ``gallery`` (default ``out``/gallery.db).

    The sample's people are synthetic voices and photos from installed packages: they go to the demo's
    own gallery, not to the one ``sensorium enroll`` fills for a house, unless ``--gallery`` says so.
    Returns the session path.
    """
    from sensorium.evaluation.session import SAMPLE_GAP_S, build_sample, sample_enrollment
    from sensorium.models.gallery import Gallery

    session = cache / f"sample-gap{SAMPLE_GAP_S:g}.mcap"  # a changed sample gets a new file
    if not session.exists():
        print("demo: building the sample session (first run only: synthesizing speech) …", flush=True)
        build_sample(session, cache)
    gallery = gallery or out / "gallery.db"
    with Gallery(gallery) as g:
        enrolled = set(g.people())
    pairs = []
    for person, kinds in sample_enrollment(cache).items():
        if person in enrolled:
            continue
        pairs += [f"{person}={p}" for p in kinds["voice"] + kinds["face"]]
    if pairs:
        print(f"demo: enrolling {', '.join(sorted({p.split('=')[0] for p in pairs}))} …", flush=True)
        if enroll_pairs(pairs, gallery) != 0:
            raise RuntimeError("enrolling the sample people failed")
    return session


def sample_deployment(rooms: list[str], out: Path, gallery: Path | None = None) -> Any:
    """Every stage on the CPU; one playback-only edge per room (the replay plays the microphones and cameras)."""
    gallery = gallery or out / "gallery.db"
    stages = ["wake", "arbiter", "stt", "speaker", "detect", "face", "presence", "tts"]
    raw = {
        "data_dir": str(out),
        "hub": {"heartbeat": "250ms", "down_after": "3s"},
        "rooms": {r: {} for r in rooms},
        "edges": {f"{r}-speaker": {"room": r, "playback": {"wav_dir": str(out / "tts"), "rate": 22050}} for r in rooms},
        "workers": {"local": {"device": "cpu", "stages": stages}},
        "stages": {
            "presence": {"left_after": f"{DEMO_LEFT_AFTER}s", "present_every": "20s"},
            "speaker": {"gallery": str(gallery)},
            "face": {"gallery": str(gallery)},
        },
    }
    return deployment_from_dict(raw, "<sample demo>")


async def play(args: argparse.Namespace, session_path: Path) -> dict[str, Any]:
    from sensorium.apps.agent import run_builtin_agent
    from sensorium.edge.agent import EdgeAgent
    from sensorium.evaluation.replay import ReplayOptions, load, replay_embedded
    from sensorium.evaluation.report import format_table, make_report

    session = load([session_path])
    gallery = getattr(args, "gallery", None) or args.out / "gallery.db"
    dep = sample_deployment(session.rooms, args.out, gallery)
    print(describe_gallery(gallery), flush=True)
    out = open(args.events_json, "w") if args.events_json else None
    try:
        async with embedded(dep) as env, recording_if(env, args.record):
            c = Collector(env, out=out, quiet=args.quiet)
            tasks = [
                asyncio.create_task(c.run_events()),
                asyncio.create_task(c.run_talk()),
                asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock)),
            ]
            speakers = [EdgeAgent(dep, name, hub_address=env.address, clock=env.clock) for name in dep.edges]
            tasks += [asyncio.create_task(s.run()) for s in speakers]
            await asyncio.sleep(0.5)
            print(f"demo: replaying {session.name} ({session.duration:.0f} s) in real time …", flush=True)
            result = await replay_embedded(session, ReplayOptions(speed=args.speed, settle=4.0), env)
            await _settle(env, c, 3.0, 30.0, DEMO_LEFT_AFTER + 2.5)
            for s in speakers:
                with contextlib.suppress(Exception):
                    await s.stop()
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            print_tables(env, c)
            report = make_report(result, session.labels)
            print("\nReplay report (accuracy against the session's labels)")
            print(format_table(report))
            wavs = sorted((args.out / "tts").glob("*.wav"))
            print(f"\nspoken answers: {len(wavs)} WAV file(s) in {args.out / 'tts'}")
            return {
                "stages": env.summary(),
                "voice_to_voice": voice_breakdown(c),
                "answers": report["answers"],
                "accuracy": report.get("accuracy"),
                "report": report,
            }
    finally:
        if out is not None:
            out.close()


def run_sample(args: argparse.Namespace) -> int:
    """Entry point of ``sensorium demo`` without media."""
    try:
        session = prepare(args.out, gallery=getattr(args, "gallery", None))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"sensorium demo: {exc}", file=sys.stderr)
        return 2
    summary = asyncio.run(play(args, session))
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str))
    return 0
