"""Helpers for the Wyoming gateway tests: free ports, a deployment with a ``[wyoming]`` table, a client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from sensorium.deployment import deployment_from_dict
from sensorium.evaluation.homeassistant import wyoming_gateway
from sensorium.evaluation.ports import free_ports
from sensorium.pipeline.config import Deployment

ROOMS = ("kitchen", "office")


def ports() -> dict[str, int]:
    """A free port per service role and per room's satellite, all different."""
    keys = ("wake", "stt", "tts", "handle", *ROOMS)
    return dict(zip(keys, free_ports(len(keys)), strict=True))


def deployment(
    tmp_path: Path,
    address: str,
    p: dict[str, int],
    *,
    stages: list[str] | None = None,
    with_satellites: bool = True,
    edges: dict[str, dict[str, Any]] | None = None,
    stage_opts: dict[str, dict[str, Any]] | None = None,
    wyoming: dict[str, Any] | None = None,
) -> Deployment:
    """Two rooms with a microphone edge each; ``stages`` on one worker (none: only the hub)."""
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "hub": {"address": address, "heartbeat": "250ms"},
        "rooms": {r: {} for r in ROOMS},
        "edges": edges or {f"{r}-pi": {"room": r, "microphone": {}} for r in ROOMS},
        "workers": {"local": {"stages": stages}} if stages else {},
        # Piper without voice noise: what our STT reads back does not depend on a random draw
        "stages": {**({"tts": {"voice_noise": False}} if "tts" in (stages or []) else {}), **(stage_opts or {})},
        "wyoming": {
            "host": "127.0.0.1",
            "zeroconf": False,
            "timeout": "5s",
            **{f"{r}_port": p[r] for r in ("wake", "stt", "tts", "handle")},
            **({"satellites": {r: p[r] for r in ROOMS}} if with_satellites else {}),
            **(wyoming or {}),
        },
    }
    return deployment_from_dict(raw, "<test>")


running = wyoming_gateway
"""A started gateway; stopped on exit (``evaluation.homeassistant.wyoming_gateway``)."""


class Conn:
    """A Wyoming client connection with a read timeout."""

    def __init__(self, port: int) -> None:
        self.client = AsyncTcpClient("127.0.0.1", port)

    async def __aenter__(self) -> Conn:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def send(self, *events: Any) -> None:
        for e in events:
            await self.client.write_event(e if isinstance(e, Event) else e.event())

    async def recv(self, timeout: float = 10.0) -> Event | None:
        return await asyncio.wait_for(self.client.read_event(), timeout)

    async def until(self, *types: str, timeout: float = 20.0) -> list[Event]:
        """Events up to and including the first of ``types`` (the last one is None if the server closed)."""
        out: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.client.read_event()
                if ev is None or ev.type in types:
                    out.append(ev)  # type: ignore[arg-type]
                    return out
                out.append(ev)
