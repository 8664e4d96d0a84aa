"""``sensorium`` command line: one module per subcommand in ``sensorium/cli/commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
and imports anything heavy inside ``run``, so ``sensorium --help`` and ``sensorium edge`` start fast
on a Raspberry Pi without torch. A command that loads models in its own process sets
``LOADS_MODELS = True``: what C/C++ libraries print then goes to debug logging (``sensorium.cli.terminal``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "demo",
    "hub",
    "worker",
    "edge",
    "events",
    "top",
    "placement",
    "say",
    "enroll",
    "keys",
    "agent",
    "mqtt",
    "wyoming",
    "esphome",
    "console",
    "mcp",
    "record",
    "replay",
    "session",
    "doctor",
    "graph",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensorium",
        description="The senses of a home assistant: hub, workers, edge agents and tools.",
        epilog="Run 'sensorium COMMAND --help' for a command's options. Docs: README.md and docs/.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"sensorium.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sensorium.cli.commands.{name}":
                continue  # command not built in this install
            raise
        p = sub.add_parser(
            name, help=mod.HELP, description=mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _loads_models=getattr(mod, "LOADS_MODELS", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sensorium.cli import terminal

    terminal.setup(args.verbose, capture_native=getattr(args, "_loads_models", False))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
