"""Check this machine against the deployment file: audio devices, cameras, GPU and its memory, model
files of the stages placed here, the hub (reachable, ports, event log), CURVE keys and their
permissions, the clock, and the gallery. Prints PASS / WARN / FAIL per check with what to do about
each problem; exits 1 if anything FAILs. Without --name the machine is checked as the one box of a
Phase-0 deployment (hub, every worker and every edge node)."""

from __future__ import annotations

import argparse
import json
import socket
import sys

HELP = "check this machine against the deployment (devices, GPU, models, hub, keys, clock)"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML")
    p.add_argument("--name", help="node to check: an edge node, a worker, or 'hub' (default: all, one box)")
    p.add_argument("--state", help="the hub's state folder (default: <data_dir>/hub, as 'sensorium hub')")
    p.add_argument("--no-models", action="store_true", help="do not load the stages' models (faster)")
    p.add_argument("--hub-timeout", type=float, default=3.0, help="seconds to wait for the hub (default 3)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON instead of a list")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sensorium.cli.doctor import Doctor, Finding, format_findings, load_any, summary, to_dicts
    from sensorium.pipeline.config import ConfigError

    color = sys.stdout.isatty()

    def show(f: Finding) -> None:
        for line in format_findings([f], color=color):
            print(line, flush=True)

    try:
        dep = load_any(args.config)
        doctor = Doctor(
            dep,
            args.name,
            hub_timeout=args.hub_timeout,
            load_models=not args.no_models,
            state_dir=Path(args.state) if args.state else None,
            on_finding=None if args.json else show,
        )
        doctor.roles()
    except (ConfigError, ValueError) as exc:
        print(f"sensorium doctor: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"sensorium doctor: {args.config}, {args.name or 'every node (one box)'}, on {socket.gethostname()}")
    findings = doctor.run()
    if args.json:
        print(json.dumps(to_dicts(findings), indent=1))
    else:
        print(summary(findings))
    return 1 if any(f.status == "FAIL" for f in findings) else 0
