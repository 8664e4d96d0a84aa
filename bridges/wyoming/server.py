"""``sensorium wyoming``: Home Assistant's voice services and one satellite per room, on their ports.

One process listens on the ``[wyoming]`` ports with the wyoming package's ``AsyncTcpServer``: each
service port answers ``describe`` and the requests of its roles (wake, stt, tts, handle; roles may share
a port, :mod:`bridges.wyoming.handlers`), each satellite port is one room
(:mod:`bridges.wyoming.satellite`). It loads no model: audio and text go over the bus to the stages the
deployment runs, wherever they are placed, and their answers come back to the requests waiting for them
(:mod:`bridges.wyoming.gateway`).

The direction of the imports is the direction of a request: server → handlers / satellite → gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from functools import partial
from typing import Any

from wyoming.server import AsyncTcpServer

from sensorium.bridges.wyoming.gateway import Gateway
from sensorium.bridges.wyoming.handlers import ServiceHandler
from sensorium.bridges.wyoming.satellite import Satellite, SatelliteHandler

log = logging.getLogger("sensorium.wyoming")


class Server(Gateway):
    """The gateway with its ports open: the service handlers and the room satellites, announced over zeroconf."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.servers: list[AsyncTcpServer] = []
        self.zeroconf: list[Any] = []
        """The zeroconf announcements, kept alive as long as the server runs."""
        self.rooms: dict[str, Satellite] = {}

    async def start(self) -> None:
        """Connect to the hub, then open every port (and announce them over zeroconf)."""
        await self.connect()
        by_port: dict[int, list[str]] = {}
        for role, port in self.config.ports().items():
            by_port.setdefault(port, []).append(role)
        for port, roles in by_port.items():
            await self._serve(port, partial(ServiceHandler, self, tuple(roles)))
        for room, port in self.config.satellites.items():
            sat = Satellite(self, room, port)
            sat.start()
            self.satellites[room] = self.rooms[room] = sat
            await self._serve(port, partial(SatelliteHandler, sat))
        if self.config.zeroconf:
            await self._announce({**{p: "-".join(r) for p, r in by_port.items()}, **self._satellite_ports()})
        served = ", ".join(f"{'+'.join(r)} on {p}" for p, r in by_port.items())
        sats = ", ".join(f"{r} on {p}" for r, p in self.config.satellites.items())
        log.info("wyoming gateway %s: %s%s", self.name, served or "no services", f"; satellites {sats}" if sats else "")

    def _satellite_ports(self) -> dict[int, str]:
        return {p: f"satellite-{re.sub(r'[^A-Za-z0-9-]+', '-', r)}" for r, p in self.config.satellites.items()}

    async def _serve(self, port: int, factory: Any) -> None:
        server = AsyncTcpServer(self.config.host, port)
        try:
            await server.start(factory)
        except OSError as exc:
            await self.stop()
            raise OSError(f"[wyoming] cannot listen on {self.config.host}:{port}: {exc.strerror or exc}") from None
        self.servers.append(server)

    async def _announce(self, ports: dict[int, str]) -> None:
        """One ``_wyoming._tcp`` name per port; a failure is logged, the services still run."""
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf

            for port, what in ports.items():
                zc = HomeAssistantZeroconf(port=port, name=f"{self.name}-{what}", host=self.config.advertise or None)
                self.zeroconf.append(zc)
            await asyncio.gather(*(zc.register_server() for zc in self.zeroconf))  # each probes the LAN ~1.5 s
            for zc in self.zeroconf:
                log.info("zeroconf: %s._wyoming._tcp.local. on %s:%d", zc.name, zc.host, zc.port)
        except Exception as exc:  # no multicast route, a name taken on the LAN …: the services still run
            log.warning("zeroconf announcement failed (%s); add the services to Home Assistant by host and port", exc)

    async def stop(self) -> None:
        """Close every port and connection, withdraw the zeroconf names, leave the hub."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
        self.servers.clear()
        for sat in self.rooms.values():
            await sat.stop()
        for zc in self.zeroconf:
            with contextlib.suppress(Exception):
                await zc._aiozc.async_close()
        self.zeroconf.clear()
        await self.disconnect()
