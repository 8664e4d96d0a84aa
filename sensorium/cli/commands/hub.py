"""Run the hub: the data bus (XSUB/XPUB proxy), control socket, node health and event log."""

from __future__ import annotations

import argparse
import asyncio
import sys

HELP = "run the hub (bus proxy, control, event log)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML (its [hub] table is used)")
    p.add_argument("--bind", help="bind this base address instead of [hub] address (e.g. tcp://0.0.0.0:7700)")
    p.add_argument("--state", help="folder for the persistent event log (default: <data_dir>/hub)")


def run(args: argparse.Namespace) -> int:
    from sensorium.deployment import load_deployment, placement_specs, publish_policy
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.eventlog import EventLogError
    from sensorium.pipeline.hub import Hub, SecurityError

    try:
        dep = load_deployment(args.config)
        hub = Hub(
            dep.hub,
            state_dir=args.state or dep.data_dir / "hub",
            bind=args.bind,
            placement=placement_specs(dep),
            nodes=[*dep.edges, *dep.workers],
            policy=publish_policy(dep),
        )
    except (ConfigError, ValueError) as exc:
        print(f"sensorium hub: {exc}", file=sys.stderr)
        return 2
    print(f"hub: {', '.join(hub.endpoints.all())}; event log at seq {hub.log.last_seq}", flush=True)
    try:
        if dep.hub.metrics_port:
            hub.metrics.serve(dep.hub.metrics_port, dep.hub.metrics_host)
        asyncio.run(hub.run_forever())
    except SecurityError as exc:
        print(f"sensorium hub: {exc}", file=sys.stderr)
        return 2
    except EventLogError as exc:  # non-zero: systemd restarts the hub, and the journal says why
        print(f"sensorium hub: {exc}; stopped rather than run without its event log", file=sys.stderr)
        return 1
    return 0
