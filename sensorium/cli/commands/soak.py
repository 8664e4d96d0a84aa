"""Replay the bundled sample session in a loop through a real deployment and watch it for leaks.

Starts real processes from a generated deployment file (on ipc, or loopback tcp with --tcp): the
hub, a worker with every stage on the CPU, a loudspeaker edge per room, the built-in agent, an
events client (``sensorium events --since 0``) and a publisher that replays the sample session in
real time, loop after loop, for --duration. Every --interval it samples each process's RSS, open
file descriptors and threads and the event log's size; per loop it compares the events the client
received (wake words, final transcripts, speakers, named people entering and leaving) with the
first loop's. Writes a JSON and a PNG plot.

Exit codes: 0 flat and identical; 1 a process kept growing over the last half of the run (slope above
--rss-limit / --fd-limit and three standard errors above zero), a loop's events differ, the client's
stream has a gap or duplicate, or a process died; 2 bad arguments.

Examples:
  sensorium soak --duration 1h
  sensorium soak --duration 15m --interval 10s --out soak-run --tcp

Runs from a source checkout (the run lives in benchmarks/soak.py, like 'sensorium bench').
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "replay the sample session in a loop through real processes; fail on leaks or changed events"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", default="1h", help="how long to loop, e.g. 3m, 1h (default 1h; whole loops only)")
    p.add_argument("--interval", default="30s", help="time between samples of the processes (default 30s)")
    p.add_argument("--out", type=Path, default=Path(".sensorium-soak"), help="folder for logs, data and results")
    p.add_argument("--json", type=Path, help="results file (default: OUT/soak.json)")
    p.add_argument("--plot", type=Path, help="plot file (default: OUT/soak.png)")
    p.add_argument("--tcp", action="store_true", help="loopback tcp instead of ipc sockets")
    p.add_argument(
        "--worker-per-stage", action="store_true", help="each stage in a worker of its own (which one grows?)"
    )
    p.add_argument("--event-log", type=int, default=1000, help="events the hub keeps (default 1000, ~7 loops)")
    p.add_argument("--rss-limit", type=float, default=1.0, help="MiB/h a process may grow (default 1)")
    p.add_argument("--fd-limit", type=float, default=2.0, help="descriptors/h a process may grow (default 2)")


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, parse_duration

    def fail(text: str) -> int:
        print(f"sensorium soak: {text}", file=sys.stderr)
        return 2

    try:
        duration = parse_duration(args.duration, "--duration")
        interval = parse_duration(args.interval, "--interval")
    except ConfigError as exc:
        return fail(str(exc))
    if interval <= 0 or interval > duration / 10:
        return fail(f"--interval {args.interval} leaves fewer than 5 samples in the judged half of {args.duration}")
    if args.event_log < 100:
        return fail(f"--event-log {args.event_log}: keep at least 100 events")
    from sensorium.cli.commands.bench import import_benchmarks

    import_benchmarks()
    try:
        import psutil  # noqa: F401

        from benchmarks.soak import SoakOptions, render, run_soak
    except ImportError as exc:
        return fail(f"{exc}: run it from the source checkout with the dev tools (psutil) installed")
    opts = SoakOptions(
        duration=duration,
        out=args.out,
        interval=interval,
        transport="tcp" if args.tcp else "ipc",
        split=args.worker_per_stage,
        event_log=args.event_log,
        rss_limit=args.rss_limit,
        fd_limit=args.fd_limit,
        json_path=args.json,
        plot_path=args.plot,
    )
    try:
        results = run_soak(opts)
    except ValueError as exc:
        return fail(str(exc))
    print(render(results))
    print(f"results in {opts.json_path or opts.out / 'soak.json'}, plot in {results.get('plot', '-')}")
    return 0 if results["ok"] else 1
