"""Run one worker of a deployment: the stages placed on it, on its device (GPU or CPU)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

HELP = "run the stages placed on one worker"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML")
    p.add_argument("--name", required=True, help="worker name, a [workers.NAME] table of the config")


def run(args: argparse.Namespace) -> int:
    from sensorium.deployment import load_deployment
    from sensorium.pipeline.config import ConfigError
    from sensorium.pipeline.security import KeyError_, node_keys
    from sensorium.pipeline.worker import DeviceUnavailable, Worker
    from sensorium.registry import stage_class

    try:
        dep = load_deployment(args.config)
        wcfg = dep.worker(args.name)
        curve = node_keys(wcfg.keys, args.name) if wcfg.keys else None
        classes = {s: stage_class(s) for s in wcfg.runs()}
    except (ConfigError, KeyError_, KeyError) as exc:
        print(f"sensorium worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(dep, args.name, classes, curve=curve)
    if wcfg.metrics_port:
        worker.metrics.serve(wcfg.metrics_port, wcfg.metrics_host)
    print(f"worker {args.name}: loading {', '.join(wcfg.runs())} (devices: {', '.join(wcfg.devices())})", flush=True)

    async def main() -> None:
        t0 = time.monotonic()
        await worker.start()
        try:
            slowest = max(worker.load_s, key=worker.load_s.__getitem__, default="")
            print(
                f"worker {args.name}: ready: {', '.join(wcfg.runs())} loaded, warm and serving on {worker.device} "
                f"in {time.monotonic() - t0:.1f} s"
                + (f" (slowest: {slowest} {worker.load_s[slowest]:.1f} s)" if slowest else ""),
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            await worker.stop()

    try:
        asyncio.run(main())
    except DeviceUnavailable as exc:
        print(f"sensorium worker: {exc}", file=sys.stderr)
        return 3
    return 0
