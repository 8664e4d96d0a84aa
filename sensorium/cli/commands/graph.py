"""Print the stage graph of a deployment: who produces each message type, who consumes it, where it runs.

Checks it too: a type a placed stage consumes that nothing produces, or a stream it emits that nothing
consumes, is printed as a WARNING naming the stage and the type (an ERROR when a stage can never get any
input); the exit status is 1 on an error. --format mermaid or dot writes the graph for a diagram.

Examples:
  sensorium graph --config deploy.toml
  sensorium graph --config deploy.toml --format mermaid --out graph.mmd
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "print (or draw) the stage graph of a deployment and check it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML")
    p.add_argument("--format", choices=["text", "mermaid", "dot"], default="text", help="output (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write the graph to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from sensorium import graph
    from sensorium.deployment import load_deployment
    from sensorium.pipeline.config import ConfigError

    try:
        dep = load_deployment(args.config, check_graph=False)
    except ConfigError as exc:
        print(f"sensorium graph: {exc}", file=sys.stderr)
        return 2
    g = graph.build(dep)
    issues = graph.check(dep, g)
    if args.format == "mermaid":
        out = graph.mermaid(g)
    elif args.format == "dot":
        out = graph.dot(g)
    else:
        out = graph.text(g, issues) + "\n"
    if args.out:
        args.out.write_text(out)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(out)
    if args.format != "text":
        for i in issues:
            print(f"{i.level.upper()}: {i.text}", file=sys.stderr)
    return 1 if any(i.level == "error" for i in issues) else 0
