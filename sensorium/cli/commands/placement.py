"""Where each stream of a replicated stage runs now; drain a worker (its GPU can be lent) and undrain it.

  sensorium placement --config deploy.toml                      the table
  sensorium placement --config deploy.toml drain big            move every stream off "big" at its next boundary
  sensorium placement --config deploy.toml drain big --until-idle   … and wait until "big" serves nothing
  sensorium placement --config deploy.toml undrain big          "big" takes its streams back (after handback_after)

Only stages listed on more than one worker ([workers.NAME] stages or standby) have a table; a stage on
one worker serves every stream there. A drain survives a hub restart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

HELP = "where each stage and stream runs; drain or undrain a worker"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="show", choices=("show", "drain", "undrain"), help="default: show")
    p.add_argument("worker", nargs="?", default="", help="the worker to drain or undrain")
    p.add_argument("--until-idle", action="store_true", help="with drain: wait until the worker serves no stream")
    p.add_argument("--timeout", type=float, default=120.0, help="longest wait with --until-idle, seconds")
    p.add_argument("--hub", help="hub base address (default: [hub] address of --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML to read the hub address from")
    p.add_argument("--keys", help="this client's CURVE key folder (with hub.key) for a remote hub")
    p.add_argument(
        "--name", default="placement-cli", help="client name, -PID appended (with --keys: its key file name)"
    )


def render(table: object) -> str:
    """The table as text: one line per stage and stream, then the workers' state."""
    t = table
    busy = set(t.busy)  # type: ignore[attr-defined]
    rows = [f"{'stage':<10} {'stream':<20} {'worker':<16} note"]
    for a in t.assignments:  # type: ignore[attr-defined]
        note = "utterance in flight" if f"{a.stage}/{a.stream}" in busy else ""
        if a.worker and a.worker not in t.live:  # type: ignore[attr-defined]
            note = "worker down and no other can serve it"
        rows.append(f"{a.stage:<10} {a.stream:<20} {a.worker or '(none)':<16} {note}".rstrip())
    if len(rows) == 1:
        rows = ["no stage runs on more than one worker: each stage serves every stream where it runs"]
    rows.append("")
    rows.append(f"live: {', '.join(t.live) or 'none'}")  # type: ignore[attr-defined]
    if t.drained:  # type: ignore[attr-defined]
        rows.append(f"drained: {', '.join(t.drained)}")  # type: ignore[attr-defined]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    from sensorium.cli.commands.events import resolve_hub
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.node import HubUnavailable
    from sensorium.pipeline.security import KeyError_, node_keys

    if args.action != "show" and not args.worker:
        print(f"sensorium placement: {args.action} needs a worker name", file=sys.stderr)
        return 2
    try:
        address = resolve_hub(args)
        curve = node_keys(args.keys, args.name) if args.keys else None
    except (ConfigError, KeyError_) as exc:
        print(f"sensorium placement: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        async with Client(address, name=f"{args.name}-{os.getpid()}", curve=curve) as client:
            action = "get" if args.action == "show" else args.action
            table = await client.placement(action, args.worker)
            if args.action == "drain":
                mine = [a for a in table.assignments if a.worker == args.worker]
                print(f"drained {args.worker}: {len(mine)} stream(s) move at their next boundary")
                if args.until_idle:
                    t0 = time.monotonic()
                    while any(a.worker == args.worker for a in table.assignments):
                        if time.monotonic() - t0 > args.timeout:
                            print(f"sensorium placement: {args.worker} still serves streams after {args.timeout:g} s")
                            print(render(table))
                            return 1
                        await asyncio.sleep(0.2)
                        table = await client.placement()
                    print(f"{args.worker} is idle after {time.monotonic() - t0:.1f} s")
                    orphans = [f"{a.stage}/{a.stream}" for a in table.assignments if not a.worker]
                    if orphans:
                        print(f"warning: no other worker can serve {', '.join(orphans)}")
            elif args.action == "undrain":
                print(f"undrained {args.worker}: it gets its streams back once it has been up [hub] handback_after")
            print(render(table))
        return 0

    try:
        return asyncio.run(main())
    except ValueError as exc:
        print(f"sensorium placement: {exc}", file=sys.stderr)
        return 2
    except HubUnavailable as exc:
        print(f"sensorium placement: {exc}", file=sys.stderr)
        return 1
