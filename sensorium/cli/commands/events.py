"""Print events from the hub as JSON lines (the public form in docs/events.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

HELP = "print events as JSON lines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub", help="hub base address (default: [hub] address of --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML to read the hub address and keys from")
    p.add_argument("--topic", "--type", dest="types", action="append", help="event type to show (repeatable)")
    p.add_argument("--room", action="append", help="only this room (repeatable)")
    p.add_argument("--since", type=int, help="replay the hub's log after this sequence number first")
    p.add_argument("--count", type=int, default=0, help="exit after this many events (0 = run forever)")
    p.add_argument("--keys", help="this client's CURVE key folder (with hub.key) for a remote hub")
    p.add_argument("--name", default="events-cli", help="client name, -PID appended (with --keys: its key file name)")


def resolve_hub(args: argparse.Namespace) -> str:
    if args.hub:
        return args.hub
    if args.config:
        from sensorium.deployment import load_deployment

        return load_deployment(args.config).hub.address
    return "ipc:///tmp/sensorium"


def run(args: argparse.Namespace) -> int:
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.codec import to_json
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        address = resolve_hub(args)
        curve = node_keys(args.keys, args.name) if args.keys else None
    except (ConfigError, KeyError_) as exc:
        print(f"sensorium events: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        n = 0
        async with Client(address, name=f"{args.name}-{os.getpid()}", curve=curve) as client:
            if not await client.wait_connected(30, raise_refused=True):
                print(f"sensorium events: hub at {address} is not answering", file=sys.stderr)
                return 1
            async for ev in client.events(args.types, rooms=args.room, since=args.since):
                sys.stdout.write(to_json(ev).decode() + "\n")
                sys.stdout.flush()
                n += 1
                if args.count and n >= args.count:
                    return 0
        return 0

    from sensorium.pipeline.node import NameInUse

    try:
        return asyncio.run(main())
    except NameInUse as exc:
        print(f"sensorium events: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sensorium events: {exc}", file=sys.stderr)
        return 2
