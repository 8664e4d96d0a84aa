"""Run the benchmarks (bus, voice, Wyoming, vision, talk-back, end-to-end replay, chaos) and write results.

Same as ``python -m benchmarks``: each benchmark writes ``benchmarks/results/<name>.json`` and
``benchmarks/results/SUMMARY.md`` gathers them with the machine they ran on. Run it on a quiet
machine: the numbers are only as good as the box is idle.
"""

from __future__ import annotations

import argparse

HELP = "run the benchmarks and write benchmarks/results/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="CI-sized runs")
    p.add_argument(
        "--only",
        help="comma-separated subset: bus,voice,wyoming,vision,mixed,talk,replay,chaos; setup (a cold set-up) and soak "
        "(an hour) only when named",
    )
    p.add_argument("--results-dir", help="results folder (default: benchmarks/results)")


def import_benchmarks() -> None:
    """Make the checkout's ``benchmarks/`` importable: an installed ``sensorium`` script does not start in it."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]  # sensorium/cli/commands/bench.py → the checkout
    if (root / "benchmarks" / "__main__.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


def run(args: argparse.Namespace) -> int:
    import sys

    import_benchmarks()
    try:
        from benchmarks.__main__ import main
    except ImportError:
        print(
            "sensorium bench: the benchmarks/ folder is not importable; run from the source checkout", file=sys.stderr
        )
        return 2
    argv = []
    if args.quick:
        argv.append("--quick")
    if args.only:
        argv += ["--only", args.only]
    if args.results_dir:
        argv += ["--results-dir", args.results_dir]
    return main(argv)
