"""Replay a session (MCAP) as its edge nodes published it and report latency and accuracy.

Publishes the recorded microphone audio, camera frames and commands against an embedded
deployment (default: every available stage on CPU, or --config) or a running hub (--hub), then
prints per-stage latency (p50/p95/p99/max), budget violations, degrade steps, the events
produced and, where the session has labels, wake hits/misses/false alarms, word error rate,
speaker accuracy and presence precision/recall per room.

With --baseline it is a regression gate: it says which stage got slower or less accurate and exits
1 past the tolerance. Exit codes: 0 ok, 1 regression, 2 unusable input (not MCAP, unknown room,
bad config).

Examples:
  sensorium replay session.mcap --speed max --report report.json
  sensorium replay rec.mcap --rooms kitchen --hub tcp://10.0.0.2:7700 --keys keys/replay
  sensorium replay session.mcap --speed max --report new.json --baseline old.json --tolerance 0.25

A rotated recording (rec.mcap, rec.1.mcap …) replays whole when its first file is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

HELP = "replay a recorded session and report latency and accuracy"
LOADS_MODELS = True


def _speed(value: str) -> float:
    if value == "max":
        return 0.0
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {value!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("speed must be > 0 (or 'max')")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", type=Path, nargs="+", help="session file(s) (.mcap); rotated parts in order")
    p.add_argument("--speed", type=_speed, default=1.0, help="1 (real time, default), 2 … or max")
    p.add_argument("--rooms", nargs="+", metavar="ROOM", help="replay only these rooms")
    p.add_argument(
        "--hub",
        help="replay against a running deployment at this hub address (default: embedded); its workers take "
        "audio only from their deployment's edge nodes, and faster than real time only with max_future = 0",
    )
    p.add_argument("--keys", help="CURVE key folder of this client (with hub.key) for a remote hub")
    p.add_argument("--name", default="replay", help="client name (its key file name with --keys)")
    p.add_argument("--config", type=Path, help="deployment TOML for the embedded run (default: all stages on CPU)")
    p.add_argument("--stages", help="comma-separated stages for the default embedded deployment")
    p.add_argument("--data-dir", type=Path, default=Path(".sensorium"), help="gallery and state of the default run")
    p.add_argument("--report", type=Path, help="write the report (JSON) here")
    p.add_argument("--plots", type=Path, help="folder for latency PNGs (default: next to --report)")
    p.add_argument("--baseline", type=Path, help="earlier report to compare with (regression gate)")
    p.add_argument("--tolerance", type=float, default=0.2, help="allowed latency growth, relative (default 0.2)")
    p.add_argument(
        "--accuracy-tolerance", type=float, default=0.05, help="allowed accuracy drop, absolute (default 0.05)"
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds of quiet that end the replay (default 3)")
    p.add_argument("--events-json", type=Path, help="write the events produced as JSON lines here")
    p.add_argument("--no-commands", action="store_true", help="do not publish the recording's Say/StopPlayback")


def run(args: argparse.Namespace) -> int:
    from sensorium.evaluation.replay import ReplayError, ReplayOptions, default_deployment, load, replay
    from sensorium.evaluation.report import compare, format_table, make_report, plot
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.recorder import RecordingError

    def fail(text: str) -> int:
        print(f"sensorium replay: {text}", file=sys.stderr)
        return 2

    baseline = None
    if args.baseline:
        try:
            baseline = json.loads(args.baseline.read_text())
        except FileNotFoundError:
            return fail(f"{args.baseline}: baseline report not found")
        except json.JSONDecodeError as exc:
            return fail(f"{args.baseline}: not a JSON report ({exc})")
    try:
        session = load(args.session, args.rooms)
        curve = None
        if args.hub:
            deployment = None
            if args.keys:
                from sensorium.pipeline.security import node_keys

                curve = node_keys(args.keys, args.name)
        elif args.config:
            from sensorium.deployment import load_deployment

            deployment = load_deployment(args.config)
            missing = [r for r in session.rooms if r not in deployment.rooms]
            if missing:
                return fail(f"{args.config}: the session's rooms {', '.join(missing)} are not in the deployment")
        else:
            stages = args.stages.split(",") if args.stages else None
            deployment = default_deployment(session, args.data_dir, stages)
    except (RecordingError, ReplayError, ConfigError, ValueError) as exc:
        return fail(str(exc))
    if session.damage:
        print(f"WARNING: {session.damage}; replaying the {len(session.items)} messages before it", file=sys.stderr)
    speed = "max" if args.speed <= 0 else f"{args.speed:g}x"
    where = args.hub or "an embedded deployment"
    print(
        f"replaying {session.name} ({session.duration:.1f} s, rooms {', '.join(session.rooms)}) at {speed} "
        f"against {where} …",
        file=sys.stderr,
    )
    opts = ReplayOptions(speed=args.speed, settle=args.settle, commands=not args.no_commands)
    try:
        result = asyncio.run(
            replay(session, opts, deployment, args.hub, curve, progress=lambda s: print(s, file=sys.stderr))
        )
    except ReplayError as exc:
        return fail(str(exc))
    report = make_report(result, session.labels)
    print(format_table(report))
    if args.events_json:
        with open(args.events_json, "w") as fp:
            for ev in report["events"]["list"]:
                fp.write(json.dumps(ev) + "\n")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.report}")
    plots_dir = args.plots or (args.report.parent if args.report else None)
    if plots_dir is not None:
        stem = f"{args.report.stem}-latency" if args.report else "latency"
        for path in plot(result, plots_dir, report, stem):
            print(f"plot written to {path}")
    if baseline is not None:
        cmp = compare(report, baseline, args.tolerance, args.accuracy_tolerance)
        print("")
        print(f"compared with {args.baseline}:")
        for line in cmp.lines:
            print(f"  {line}")
        if not cmp.ok:
            print("REGRESSION: past the tolerance", file=sys.stderr)
            return 1
        print("no regression past the tolerance")
    return 0
