"""Serve the house to LLM agents over the Model Context Protocol: presence, transcripts, say, ask, stop.

Reads the deployment's [mcp] table and its [rooms] and [edges] (the microphones ``ask`` listens
with); the enrolled people come from the gallery. Serves streamable HTTP on http://HOST:PORT/mcp and
the older SSE transport on http://HOST:PORT/sse (Home Assistant's MCP integration) from one port,
or, with --stdio, one client on stdin/stdout (desktop assistants start it themselves). Off
loopback it needs [mcp] token_file. Exit status 2 for a bad deployment file or access setting,
1 when the port cannot be opened. docs/home-assistant.md and docs/mcp.md show agents pointed at it.
"""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "serve presence, transcripts and voice to LLM agents over the Model Context Protocol"
log = logging.getLogger("sensorium.mcp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="deployment TOML (its [mcp] table; defaults without one)")
    p.add_argument("--hub", help="hub base address (default: [hub] address of --config)")
    p.add_argument("--stdio", action="store_true", help="serve one client on stdin/stdout instead of HTTP")
    p.add_argument("--host", help="listen address (default: [mcp] host)")
    p.add_argument("--port", type=int, help="listen port (default: [mcp] port)")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from sensorium.bridges.mcp.access import AccessError, check_bind, read_token
    from sensorium.bridges.mcp.server import SensoriumMcp
    from sensorium.bridging import gallery_people
    from sensorium.deployment import load_deployment
    from sensorium.pipeline.config import ConfigError, McpConfig
    from sensorium.pipeline.security import KeyError_, node_keys

    try:
        dep = load_deployment(args.config)
        cfg = dep.mcp or McpConfig()
        if args.host:
            cfg.host = args.host
        if args.port:
            cfg.port = args.port
        token = read_token(cfg.token_file) if cfg.token_file else None
        if not args.stdio:
            check_bind(cfg.host, token)
        curve = node_keys(cfg.keys, cfg.name) if cfg.keys else None
        server = SensoriumMcp(
            cfg,
            list(dep.rooms),
            args.hub or dep.hub.address,
            microphones={room: dep.microphones(room) for room in dep.rooms},
            people=gallery_people(dep.data_dir / "gallery.db"),
            token=token,
            curve=curve,
            heartbeat=float(dep.hub.heartbeat),
        )
    except (ConfigError, KeyError_, AccessError, ValueError) as exc:
        print(f"sensorium mcp: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server.connected():
            if args.stdio:
                serving = asyncio.create_task(server.serve_stdio())
                print(f"mcp: serving stdio for hub {args.hub or dep.hub.address}", file=sys.stderr, flush=True)
            else:
                started = asyncio.Event()
                serving = asyncio.create_task(server.serve_http(cfg.host, cfg.port, started))
                waiter = asyncio.create_task(started.wait())
                await asyncio.wait([serving, waiter], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if serving.done():
                    exc = serving.exception()
                    print(f"sensorium mcp: {exc}", file=sys.stderr)
                    return 1
                base = f"http://{cfg.host}:{cfg.port}"
                print(
                    f"mcp: serving {base}/mcp (streamable HTTP) and {base}/sse (SSE) for hub "
                    f"{args.hub or dep.hub.address}{'' if token is None else ', bearer token required'}"
                    f"{'' if cfg.speak else ', read-only (speak = false)'}",
                    flush=True,
                )
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([serving, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in (serving, stopper):
                t.cancel()
            await asyncio.gather(serving, stopper, return_exceptions=True)
        return 0

    return asyncio.run(main())
