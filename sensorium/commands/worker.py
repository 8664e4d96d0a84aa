"""Run one worker of a deployment: the stages placed on it, on its device (GPU or CPU)."""

from __future__ import annotations

import argparse
import asyncio
import sys

HELP = "run the stages placed on one worker"
LOADS_MODELS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML")
    p.add_argument("--name", required=True, help="worker name, a [workers.NAME] table of the config")


def run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError
    from pipeline.security import KeyError_, node_keys
    from pipeline.worker import DeviceUnavailable, Worker
    from sensorium.deployment import load_deployment
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

    async def serve() -> None:
        running = asyncio.create_task(worker.run_forever())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            print(f"worker {args.name}: serving {', '.join(wcfg.runs())} on {worker.device}", flush=True)
        else:
            ready.cancel()
        await running

    try:
        asyncio.run(serve())
    except DeviceUnavailable as exc:
        print(f"sensorium worker: {exc}", file=sys.stderr)
        return 3
    return 0
