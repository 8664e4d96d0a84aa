"""Record everything on a running deployment's bus (streams, events, commands) into MCAP.

One channel per topic with the original capture times; events and commands are JSON with a
schema per type (Foxglove shows them), audio and frames keep the wire bytes. Rotates by size or
time (OUT.mcap, OUT.1.mcap …). Stops on Ctrl-C or after --duration; the file is complete either
way, and a crash loses at most the last second.

Examples:
  sensorium record house.mcap --config deploy.toml
  sensorium record night.mcap --hub tcp://10.0.0.2:7700 --keys keys/recorder --rotate-time 1h
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

HELP = "record the bus into an MCAP file (replay it with 'sensorium replay')"

_SIZE_UNITS = {"": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def _size(value: str) -> int:
    v = value.strip().lower()
    num = v.rstrip("kmgb")
    unit = v[len(num) :]
    try:
        if unit not in _SIZE_UNITS:
            raise ValueError
        return int(float(num) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 500MB or 2GB, got {value!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", type=Path, help="MCAP file to write")
    p.add_argument("--hub", help="hub base address (default: from --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML to read the hub address from")
    p.add_argument("--keys", help="this client's CURVE key folder (with hub.key) for a remote hub")
    p.add_argument("--name", default="recorder", help="client name, -PID appended (with --keys: its key file name)")
    p.add_argument("--topics", nargs="+", default=[""], metavar="PREFIX", help="topic prefixes (default: all)")
    p.add_argument("--duration", help="stop after this long, e.g. 90s or 10m (default: until Ctrl-C)")
    p.add_argument("--rotate-size", type=_size, default=0, help="start a new file past this size, e.g. 1GB")
    p.add_argument("--rotate-time", help="start a new file after this long, e.g. 1h")
    p.add_argument(
        "--foxglove-images",
        action="store_true",
        help="also store camera frames as foxglove.CompressedImage (Foxglove's Image panel plays them; +33%% size)",
    )


def run(args: argparse.Namespace) -> int:
    from sensorium.cli.commands.events import resolve_hub
    from sensorium.pipeline.config import ConfigError, parse_duration
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        address = resolve_hub(args)
        curve = node_keys(args.keys, args.name) if args.keys else None
        duration = parse_duration(args.duration, "--duration") if args.duration else 0.0
        rotate_s = parse_duration(args.rotate_time, "--rotate-time") if args.rotate_time else 0.0
    except (ConfigError, KeyError_) as exc:
        print(f"sensorium record: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_record(args, address, curve, duration, rotate_s))


async def _record(args: argparse.Namespace, address: str, curve: object, duration: float, rotate_s: float) -> int:
    from sensorium.pipeline.bus import Endpoints, Subscriber
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.node import NodeLink
    from sensorium.pipeline.recorder import Recorder, record

    endpoints = Endpoints.from_address(address)
    clock = Clock()
    link = NodeLink(f"{args.name}-{os.getpid()}", "client", endpoints, clock=clock, curve=curve)  # type: ignore[arg-type]
    await link.start()
    sub = Subscriber(endpoints, args.topics, curve=curve)  # type: ignore[arg-type]
    rec = Recorder(
        args.output, rotate_bytes=args.rotate_size, rotate_seconds=rotate_s, foxglove_images=args.foxglove_images
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if not await link.wait_connected(15.0):
            print(f"sensorium record: hub at {address} is not answering", file=sys.stderr)
            return 1
        print(f"recording {address} into {args.output} (Ctrl-C to stop) …", file=sys.stderr)
        if duration:
            loop.call_later(duration, stop.set)
        task = asyncio.create_task(record(sub, rec, stop, clock))
        while not task.done():
            await asyncio.wait({task}, timeout=10.0)
            if not task.done():
                print(f"  {rec.messages} messages in {len(rec.paths)} file(s)", file=sys.stderr)
        n = task.result()
    finally:
        rec.close()
        sub.close()
        await link.close()
    files = ", ".join(str(p) for p in rec.paths) or "none"
    print(f"recorded {n} messages ({rec.errors} undecodable skipped) into {files}")
    return 0
