"""Speak a sentence in a room (or wherever a person is) through the TTS stage."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

HELP = "speak text in a room"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="what to say")
    p.add_argument("--room", default="", help="room to speak in")
    p.add_argument("--person", default="", help="speak wherever this person is (when --room is not given)")
    p.add_argument("--hub", help="hub base address (default: from --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML")


def run(args: argparse.Namespace) -> int:
    from sensorium.cli.commands.events import resolve_hub
    from sensorium.pipeline.client import Client

    if not args.room and not args.person:
        print("sensorium say: give --room or --person", file=sys.stderr)
        return 2
    address = resolve_hub(args)

    async def main() -> int:
        async with Client(address, name=f"say-cli-{os.getpid()}") as client:
            if not await client.wait_connected(10):
                print(f"sensorium say: hub at {address} is not answering", file=sys.stderr)
                return 1
            answer = await client.say(args.room, args.text, person=args.person)
            await asyncio.sleep(0.2)  # let the message leave before the socket closes
            print(answer)
        return 0

    return asyncio.run(main())
