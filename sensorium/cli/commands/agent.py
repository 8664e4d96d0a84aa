"""Run the built-in offline agent: answers final transcripts (time, date, who is home and where,
"say …") in the room they were spoken in, through the TTS stage. Prints each question and answer."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

HELP = "run the built-in offline agent (time, who is home, echo)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub", help="hub base address (default: from --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML (for the hub address)")
    p.add_argument("--room", action="append", default=None, help="only answer in this room (repeatable)")
    p.add_argument("--since", type=int, default=None, help="also answer logged transcripts after this hub seq")
    p.add_argument("--name", default="agent", help="client name, -PID appended")


def run(args: argparse.Namespace) -> int:
    from sensorium.apps.agent import AgentLoop, Turn
    from sensorium.cli.commands.events import resolve_hub
    from sensorium.pipeline.client import Client

    try:
        address = resolve_hub(args)
    except Exception as exc:  # a bad --config: say what is wrong, no traceback
        print(f"sensorium agent: {exc}", file=sys.stderr)
        return 2

    def show(turn: Turn) -> None:
        who = turn.speaker or "someone"
        print(f"[{turn.room}] {who}: {turn.question}\n[{turn.room}] agent: {turn.answer}", flush=True)

    async def main() -> int:
        async with Client(address, name=f"{args.name}-{os.getpid()}") as client:
            if not await client.wait_connected(10):
                print(f"sensorium agent: hub at {address} is not answering", file=sys.stderr)
                return 1
            print(f"agent listening on {address} (Ctrl-C to stop)", flush=True)
            await AgentLoop(client, rooms=args.room, on_turn=show).run(since=args.since)
        return 0

    return asyncio.run(main())
