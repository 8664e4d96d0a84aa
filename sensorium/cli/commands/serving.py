"""What the commands that serve a bridge share: the deployment with its table, and serving until stopped."""

from __future__ import annotations

import asyncio
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
    """Start ``server``, serve until the process is stopped, then stop it; a port it cannot bind exits with 2."""

    async def main() -> int:
        try:
            await server.start()
        except OSError as exc:
            return fail(command, exc)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()
        return 0

    return asyncio.run(main())
