"""Live per-stage latency, rate, drops and degrade level of every worker, in the terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

HELP = "live per-stage latency, rate and drops"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hub", help="hub base address (default: from --config, else ipc:///tmp/sensorium)")
    p.add_argument("--config", help="deployment TOML")
    p.add_argument("--keys", help="this client's CURVE key folder (with hub.key) for a remote hub")
    p.add_argument("--name", default="top", help="client name (its key file name with --keys)")
    p.add_argument("--once", action="store_true", help="print one table after --wait seconds and exit")
    p.add_argument("--wait", type=float, default=3.0, help="seconds to collect before printing with --once")


def render(stats: dict[tuple[str, str], object], nodes: dict[str, str], placement: object = None) -> str:
    lines = [
        f"{'worker':<12} {'stage':<10} {'device':<7} {'rate/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'budget':>7} "
        f"{'drops':>6} {'viol':>5} {'queue':>5} {'level':>5} {'cpu %':>6}"
    ]
    workers: dict[str, object] = {}
    for (worker, stage), s in sorted(stats.items()):
        workers[worker] = s
        lines.append(
            f"{worker:<12} {stage:<10} {s.device:<7} {s.rate:>7.1f} {s.p50_ms:>8.1f} {s.p95_ms:>8.1f} "  # type: ignore[attr-defined]
            f"{s.budget_ms:>7.0f} {s.dropped:>6} {s.violations:>5} {s.queue:>5} {s.level:>5} {s.cpu_pct:>6.0f}"  # type: ignore[attr-defined]
        )
    if workers:
        lines.append("")
    for worker, s in workers.items():  # loop lag and thread CPU are the worker's, the same on each stage
        lines.append(
            f"{worker:<12} event loop: lag p99 {s.loop_lag_ms:.1f} ms, cpu {s.loop_cpu_pct:.0f} %; "  # type: ignore[attr-defined]
            f"library threads cpu {s.library_cpu_pct:.0f} %"  # type: ignore[attr-defined]
        )
    if placement is not None and placement.assignments:  # type: ignore[attr-defined]
        by_stage: dict[str, list[str]] = {}
        for a in placement.assignments:  # type: ignore[attr-defined]
            by_stage.setdefault(a.stage, []).append(f"{a.stream}→{a.worker or '(none)'}")
        lines.append("")
        lines.extend(f"placement {stage:<9} {'  '.join(streams)}" for stage, streams in sorted(by_stage.items()))
        if placement.drained:  # type: ignore[attr-defined]
            lines.append(f"drained: {', '.join(placement.drained)}")  # type: ignore[attr-defined]
    if nodes:
        lines.append("")
        lines.append("nodes: " + ", ".join(f"{n} {st}" for n, st in sorted(nodes.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from sensorium.cli.commands.events import resolve_hub
    from sensorium.pipeline.bus import Endpoints, Subscriber
    from sensorium.pipeline.messages import NodeStatus, PlacementTable, StageStats
    from sensorium.pipeline.security import KeyError_, node_keys

    endpoints = Endpoints.from_address(resolve_hub(args))
    try:
        curve = node_keys(args.keys, args.name) if args.keys else None
    except KeyError_ as exc:
        print(f"sensorium top: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        sub = Subscriber(endpoints, ["stats/", "node_status/", "placement_table/"], curve=curve)
        placement: PlacementTable | None = None
        stats: dict[tuple[str, str], StageStats] = {}
        nodes: dict[str, str] = {}
        t0 = time.monotonic()
        last_draw = 0.0
        try:
            while True:
                msg = await sub.recv_timeout(0.5)
                if isinstance(msg, StageStats):
                    stats[(msg.source, msg.stage)] = msg
                elif isinstance(msg, NodeStatus):
                    nodes[msg.node] = msg.state
                elif isinstance(msg, PlacementTable):
                    placement = msg
                now = time.monotonic()
                if args.once:
                    if now - t0 >= args.wait:
                        print(render(stats, nodes, placement) if stats else "no worker is publishing stats")
                        return 0 if stats else 1
                elif now - last_draw > 1.0:
                    sys.stdout.write("\x1b[2J\x1b[H" + render(stats, nodes, placement) + "\n")
                    sys.stdout.flush()
                    last_draw = now
        finally:
            sub.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0
