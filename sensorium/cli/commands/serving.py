"""What the commands that serve a bridge share: the deployment with its table, and serving until stopped."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Protocol

from sensorium.pipeline.config import ConfigError, Deployment


class Served(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def deployment_with(config: str, table: str) -> Deployment:
    """The deployment file ``config``, which must have a ``[table]`` table (``ConfigError`` naming it if not)."""
    from sensorium.deployment import load_deployment

    dep = load_deployment(config)
    if getattr(dep, table) is None:
        raise ConfigError(f"{config}: no [{table}] table (see docs/home-assistant.md)")
    return dep


def fail(command: str, exc: BaseException | str) -> int:
    """Say why ``sensorium <command>`` cannot run, on stderr; exit status 2."""
    print(f"sensorium {command}: {exc}", file=sys.stderr)
    return 2


def missing_extra(command: str, exc: ImportError) -> int:
    return fail(command, f"{exc.name} is not installed: install the 'bridges' extra")


def serve_forever(command: str, server: Served) -> int:
    """Start ``server``, serve until SIGINT (exit 130; the systemd units' stop) or SIGTERM (``kill``, ``docker
    stop``; exit 0), then stop it: ports closed, zeroconf names withdrawn, the hub left. A port it cannot bind
    exits with 2.

    Both signals are handled here rather than left to Python's KeyboardInterrupt: a command started in the
    background by a script inherits SIGINT *ignored* and would never stop on it, and SIGTERM would end the process
    without withdrawing its zeroconf names (Home Assistant would keep a stale device)."""

    async def main() -> int:
        stopped = asyncio.get_running_loop().create_future()
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 0)):
            asyncio.get_running_loop().add_signal_handler(
                sig, lambda code=code: stopped.done() or stopped.set_result(code)
            )
        try:
            await server.start()
        except OSError as exc:
            return fail(command, exc)
        try:
            return await stopped
        finally:
            await server.stop()

    return asyncio.run(main())
